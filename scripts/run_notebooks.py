"""Execute every notebook headless and print a table: notebook, seconds, headline result.

    python scripts/run_notebooks.py notebooks build      # what `make run` does

Executed copies (with outputs) go to the output folder (gitignored `build/`); the notebooks in
notebooks/ stay without outputs. A notebook reports its headline by printing a line that starts
with "headline:". Exit status 1 when any notebook fails.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def headline(nb: nbformat.NotebookNode) -> str:
    found = ""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith("headline:"):
                    found = line.removeprefix("headline:").strip()
    return found


def main(src: str = "notebooks", dst: str = "build") -> int:
    out_dir = Path(dst)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = [], False
    paths = [Path(src)] if Path(src).is_file() else sorted(Path(src).glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        try:
            NotebookClient(nb, timeout=1800, resources={"metadata": {"path": str(path.parent)}}).execute()
            status = headline(nb) or "(no headline printed)"
        except CellExecutionError as err:
            failed = True
            status = "FAILED: " + str(err).strip().splitlines()[-1][:80]
        seconds = time.perf_counter() - start
        nbformat.write(nb, out_dir / path.name)
        rows.append((path.name, seconds, status))
        print(f"{path.name:<32} {seconds:7.1f} s  {status}", flush=True)
    print("\n| notebook | seconds | headline |\n|---|---|---|")
    for name, seconds, status in rows:
        print(f"| {name} | {seconds:.0f} | {status} |")
    print(f"\ntotal: {sum(r[1] for r in rows):.0f} s for {len(rows)} notebooks")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
