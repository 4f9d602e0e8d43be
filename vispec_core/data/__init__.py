"""Data: every prompt string (prompts.py), procedural scenes with known facts (scenes.py), the
benchmark's held-out tasks (tasks.py) and the drafts' training data answered by the target (synthesis.py)."""
from .prompts import CALIBRATION_OFFSET, CAPTION, EXPLAIN, HELD_OUT_SCENE_SEED, LONG_ANSWER
from .synthesis import load_synthesized, prompt_rewrites, synthesize, write_plain
from .tasks import TASKS, parse_tasks, task_prompts

__all__ = ["CALIBRATION_OFFSET", "CAPTION", "EXPLAIN", "HELD_OUT_SCENE_SEED", "LONG_ANSWER", "TASKS",
           "load_synthesized", "parse_tasks", "prompt_rewrites", "synthesize", "task_prompts", "write_plain"]
