"""`make reproduce`: run the numbered notebooks in order through papermill, writing results/.

Parameters passed to a notebook must be ones its `parameters` cell declares: a misspelt name is an
error here, not a silent default (papermill itself only warns).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(path: Path) -> dict:
    import papermill as pm

    return pm.inspect_notebook(str(path))


def run_notebook(path: Path, output: Path, parameters: dict, cwd: Path = ROOT) -> float:
    """Execute one notebook with papermill; return the seconds it took."""
    import papermill as pm

    declared = declared_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"{path.name} has no parameter(s) {unknown}; it declares {sorted(declared)}.")
    start = time.perf_counter()
    pm.execute_notebook(str(path), str(output), parameters=parameters, cwd=str(cwd), progress_bar=False,
                        kernel_name="python3")
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="also synthesize data and retrain the drafts")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    args = parser.parse_args(argv)
    found = notebooks()
    if args.only:
        found = [p for p in found if any(p.name.startswith(o) for o in args.only)]
    if not found:
        print(f"No notebooks found under {NOTEBOOKS}.", file=sys.stderr)
        return 1
    for path in found:
        params = {"FULL": True} if args.full and "FULL" in declared_parameters(path) else {}
        print(f"running {path.name} ...", flush=True)
        seconds = run_notebook(path, path, params)
        print(f"  done in {seconds / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
