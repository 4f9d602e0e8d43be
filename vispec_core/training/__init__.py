"""Training: the drafts' trainer (trainer.py), the paper's training plan (plan.py) and the default
VLM's projector build (projector.py)."""
from .plan import DraftRun, ablation_rows, draft_dir, init_from, ship_draft, training_plan
from .trainer import TrainConfig, train

__all__ = ["DraftRun", "TrainConfig", "ablation_rows", "draft_dir", "init_from", "ship_draft", "train",
           "training_plan"]
