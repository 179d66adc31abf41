"""scripts/run_notebooks.py: a hung or dead kernel is a failure in the table, and with a retry the
notebook runs again in a fresh kernel."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import run_notebooks


def _notebook(tmp_path: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb" / "hangs.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_a_cell_past_its_timeout_fails_then_passes_on_a_retry(tmp_path):
    # The first run finds no marker, leaves one and hangs; the second finds it and finishes.
    marker = tmp_path / "ran-once"
    path = _notebook(
        tmp_path,
        "import pathlib, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch()\n"
        "    time.sleep(60)\n"
        "print('headline: done')",
    )
    out = tmp_path / "out"
    out.mkdir()
    failed = run_notebooks.run_one(path, out, timeout=3)
    assert failed["headline"].startswith("FAILED: CellTimeoutError"), failed
    marker.unlink()
    row = run_notebooks.run_one(path, out, timeout=3, retries=1)
    assert row["headline"] == "(second try, the first: CellTimeoutError) done", row
    assert (out / "hangs.ipynb").exists()
