"""`make reproduce`: run the numbered notebooks in order through papermill, writing results/.

Parameters passed to a notebook must be ones its `parameters` cell declares: a misspelt name is an
error here, not a silent default (papermill itself only warns). While it runs, papermill's bar shows
the cells of the notebook at hand and the time spent, what the cells print streams live (the benchmark
prints a line per prompt), and a line per notebook gives the elapsed total.
The executed notebooks are committed, so no path of the machine that ran them stays in their outputs.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .evaluation.records import portable

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(path: Path) -> dict:
    import papermill as pm

    return pm.inspect_notebook(str(path))


def check_parameters(namespace: dict) -> None:
    """Inside a notebook, refuse parameters papermill injected that its `parameters` cell does not
    declare (papermill only warns, and the notebook would run with the default). Called as
    `check_parameters(globals())` in the cell after the parameters; outside a kernel it does nothing."""
    import ast

    cells = list(namespace.get("In") or [])          # IPython: the sources of the cells run so far
    injected = [i for i, source in enumerate(cells) if source.lstrip().startswith("# Parameters")]
    if not injected:
        return

    def assigned(source: str) -> set[str]:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return set()
        return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}

    last = injected[-1]
    declared = set().union(*(assigned(cells[i]) for i in range(last) if i not in injected))
    unknown = sorted(assigned(cells[last]) - declared)
    if unknown:
        raise ValueError(f"This notebook has no parameter(s) {unknown}; its parameters cell declares "
                         f"{sorted(declared)}. Check the spelling of the names passed to papermill (-p).")


def make_portable(path: Path) -> None:
    """Rewrite an executed notebook so that it reads the same on any machine: papermill's input and
    output paths and every output text lose the repository's and the home folder's absolute paths."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    meta = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = portable(meta[key])
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = portable(out["text"])
            for kind, value in out.get("data", {}).items():
                if kind.startswith("text/"):
                    out["data"][kind] = portable(value)
            if "traceback" in out:
                out["traceback"] = portable(out["traceback"])
    nbformat.write(nb, str(path))


def run_notebook(path: Path, output: Path, parameters: dict, cwd: Path = ROOT, progress: bool = False) -> float:
    """Execute one notebook with papermill; return the seconds it took."""
    import papermill as pm

    declared = declared_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"{path.name} has no parameter(s) {unknown}; it declares {sorted(declared)}.")
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(path), str(output), parameters=parameters, cwd=str(cwd), progress_bar=progress,
                            log_output=progress, kernel_name="python3")
    finally:
        if Path(output).is_file():
            make_portable(Path(output))
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true",
                        help="also rebuild the default target, synthesize the data and retrain the drafts (hours)")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")     # the cells' output, live
    logging.getLogger("papermill").setLevel(logging.INFO)
    found = notebooks()
    if args.only:
        found = [p for p in found if any(p.name.startswith(o) for o in args.only)]
    if not found:
        print(f"No notebooks found under {NOTEBOOKS}.", file=sys.stderr)
        return 1
    began = time.perf_counter()
    for i, path in enumerate(found, 1):
        params = {"FULL": True} if args.full and "FULL" in declared_parameters(path) else {}
        print(f"[{i}/{len(found)}] {path.name}", flush=True)
        seconds = run_notebook(path, path, params, progress=True)
        print(f"[{i}/{len(found)}] {path.name} done in {seconds / 60:.1f} min "
              f"(elapsed {(time.perf_counter() - began) / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
