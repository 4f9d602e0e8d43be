"""Evaluation: the side-by-side benchmark and its tree search, raw records, tables and figures
(report.py, also `python -m vispec_core.evaluation.report`), the paper's claims as rules, the
redundancy analysis and answer-text statistics."""
from .bench import BenchConfig, run_bench
from .experiments import bench_args
from .records import read_jsonl, results_dir, write_jsonl

__all__ = ["BenchConfig", "bench_args", "read_jsonl", "results_dir", "run_bench", "write_jsonl"]
