"""scripts/run_notebooks.py: a hung or dead kernel is a failure in the table, and with a retry the
notebook runs again in a fresh kernel."""

from __future__ import annotations

import sys
import time
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


def _hangs_once(tmp_path: Path, marker: Path, seconds: int) -> Path:
    """A notebook whose first run leaves `marker` and sleeps (no CPU, as a hung kernel); later runs finish."""
    return _notebook(
        tmp_path,
        "import pathlib, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch()\n"
        f"    time.sleep({seconds})\n"
        "print('headline: done')",
    )


def test_a_cell_past_its_timeout_fails_then_passes_on_a_retry(tmp_path):
    # The first run finds no marker, leaves one and hangs; the second finds it and finishes.
    marker = tmp_path / "ran-once"
    path = _hangs_once(tmp_path, marker, seconds=60)
    out = tmp_path / "out"
    out.mkdir()
    failed = run_notebooks.run_one(path, out, timeout=3)
    assert failed["headline"].startswith("FAILED: CellTimeoutError"), failed
    marker.unlink()
    row = run_notebooks.run_one(path, out, timeout=3, retries=1)
    assert row["headline"] == "(second try, the first: CellTimeoutError) done", row
    assert (out / "hangs.ipynb").exists()


def test_a_kernel_that_uses_no_cpu_is_stopped_long_before_the_timeout_and_run_again(tmp_path):
    # A sleeping cell looks like the hang seen in CI (kernel and client idle): stopped after
    # idle_s, not at the cell's timeout, then the notebook runs again in a fresh kernel.
    marker = tmp_path / "ran-once"
    path = _hangs_once(tmp_path, marker, seconds=600)
    out = tmp_path / "out"
    out.mkdir()
    start = time.perf_counter()
    row = run_notebooks.run_one(path, out, timeout=600, retries=1, idle_s=8)
    assert row["headline"] == "(second try, the first: DeadKernelError) done", row
    assert time.perf_counter() - start < 120
