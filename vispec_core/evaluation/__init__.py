"""Evaluation: the side-by-side benchmark and its tree search, raw records, tables and figures, the
paper's claims as rules, the redundancy analysis and answer-text statistics."""
from .bench import run_bench
from .experiments import bench_args
from .records import read_jsonl, results_dir, write_jsonl
from .report import summarise, write_report

__all__ = ["bench_args", "read_jsonl", "results_dir", "run_bench", "summarise", "write_jsonl", "write_report"]
