"""Strip outputs and execution counts from notebooks before committing them.

Usage: ``.venv/bin/python notebooks/strip_outputs.py [--check] [NOTEBOOK ...]`` (default: every
``*.ipynb`` beside this file). ``--check`` changes nothing and exits 1 if a notebook would change.
Papermill-style ``injected-parameters`` cells are removed too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

INJECTED_TAG = "injected-parameters"
#: Cell metadata that only records how a notebook was last run or shown.
VOLATILE_METADATA = ("execution", "collapsed", "scrolled")


def strip_notebook(nb: nbformat.NotebookNode) -> bool:
    """Remove outputs, execution counts, injected parameter cells and run metadata in place.

    Returns
    -------
    True if anything was removed.
    """
    changed = False
    kept = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    if len(kept) != len(nb.cells):
        nb.cells = kept
        changed = True
    for cell in nb.cells:
        for key in VOLATILE_METADATA:
            if key in cell.get("metadata", {}):
                del cell["metadata"][key]
                changed = True
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            cell["outputs"] = []
            changed = True
        if cell.get("execution_count") is not None:
            cell["execution_count"] = None
            changed = True
    if "widgets" in nb.metadata:
        del nb.metadata["widgets"]
        changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    """Strip (or with ``--check`` only inspect) the notebooks; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to strip (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook has outputs")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(Path(__file__).resolve().parent.glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip_notebook(nb):
            dirty.append(path)
            if not args.check:
                nbformat.write(nb, path)
    verb = "has outputs" if args.check else "stripped"
    for path in dirty:
        print(f"{path}: {verb}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
