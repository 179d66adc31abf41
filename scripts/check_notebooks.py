"""Fail when a committed notebook carries outputs or execution counts (CI runs them itself).

python scripts/check_notebooks.py            # checks notebooks/
python scripts/check_notebooks.py --strip    # removes them in place
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def problems(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.outputs:
            found.append(f"{path}: cell {i} has outputs")
        if cell.execution_count is not None:
            found.append(f"{path}: cell {i} has an execution count")
    return found


def strip(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    # Jupyter's autosaves (.ipynb_checkpoints/, gitignored) are not committed: skip them.
    paths = sorted(p for p in Path("notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if "--strip" in argv:
        for p in paths:
            strip(p)
    found = [msg for p in paths for msg in problems(p)]
    for msg in found:
        print(msg)
    if found:
        print("Strip them with: python scripts/check_notebooks.py --strip")
    else:
        print(f"{len(paths)} notebooks, no outputs")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
