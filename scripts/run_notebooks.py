"""Execute every notebook headless and print a table: notebook, seconds, peak memory, headline.

    python scripts/run_notebooks.py notebooks build      # what `make run` does
    python scripts/run_notebooks.py notebooks/05_distillation.ipynb build   # one notebook
    python scripts/run_notebooks.py notebooks build --keep-going   # run every cell, even after an error

Executed copies (with outputs) go to the output folder (gitignored `build/`); the notebooks in
notebooks/ stay without outputs. A notebook reports its headline by printing a line that starts
with "headline:". The figures also go to build/timings.json, from which
scripts/instructor_guide.py writes docs/instructor_guide.md. Exit status 1 when any notebook fails.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from stall_watch import IDLE_S, StallWatch

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in tracebacks


def headline(nb: nbformat.NotebookNode) -> str:
    found = ""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith("headline:"):
                    found = line.removeprefix("headline:").strip()
    return found


class PeakMemory:
    """Peak memory of this process's children (the kernel and what it launches), as PSS: pages
    shared between processes (DataLoader workers, memory-mapped datasets) count once. Sampled
    once a second: reading PSS of a large process costs CPU the notebook would otherwise use."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    def _run(self):
        me = psutil.Process()
        while not self._stop.wait(1.0):
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self):
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def first_error(nb: nbformat.NotebookNode) -> str | None:
    """The first error a notebook executed with allow_errors shows, as one line."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue', '')}".strip()
    return None


def run_one(
    path: Path,
    out_dir: Path,
    keep_going: bool = False,
    timeout: int = 1800,
    retries: int = 0,
    idle_s: float = IDLE_S,
) -> dict:
    """Execute one notebook into `out_dir`; its row of the table (status "FAILED: ..." on error).

    A cell that runs past `timeout` seconds, or a kernel that dies, is a failure; with `retries`
    the notebook then runs again in a fresh kernel, and the row says so. Now and then the kernel
    goes idle and its reply never reaches the client: a kernel whose process tree has used no CPU
    for `idle_s` seconds is hung (scripts/stall_watch.py), and is stopped then rather than at `timeout`.
    """
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    note = ""
    me = psutil.Process()

    def stop_kernels() -> None:  # nbclient then raises DeadKernelError: a retry, below
        print(f"{path.name}: the kernel used no CPU for {idle_s:.0f} s (hung); stopping it", flush=True)
        for child in me.children(recursive=True):
            child.kill()

    with PeakMemory() as memory:
        for attempt in range(retries + 1):
            try:
                with StallWatch(lambda: me.children(recursive=True), stop_kernels, idle_s=idle_s):
                    NotebookClient(
                        nb,
                        timeout=timeout,
                        allow_errors=keep_going,
                        resources={"metadata": {"path": str(path.parent)}},
                    ).execute()
                status = note + (headline(nb) or "(no headline printed)")
                if keep_going and (error := first_error(nb)):
                    status = "FAILED: " + ANSI.sub("", error.splitlines()[0])[:80]
            except CellExecutionError as err:
                status = "FAILED: " + ANSI.sub("", str(err).strip().splitlines()[-1])[:80]
            except (CellTimeoutError, DeadKernelError) as err:  # a row in the table, not a crash of the run
                status = f"FAILED: {type(err).__name__}: {str(err).strip()[:70]}"
                if attempt < retries:
                    print(f"{path.name}: {status}; running it again in a fresh kernel", flush=True)
                    note = f"(second try, the first: {type(err).__name__}) "
                    nb = nbformat.read(path, as_version=4)
                    continue
            break
    seconds = time.perf_counter() - start
    nbformat.write(nb, out_dir / path.name)
    print(f"{path.name:<32} {seconds:7.1f} s {memory.peak / 1e6:7.0f} MB  {status}", flush=True)
    return {
        "notebook": path.name,
        "seconds": round(seconds, 1),
        "peak_mb": round(memory.peak / 1e6),
        "headline": status,
    }


def main(src: str = "notebooks", dst: str = "build", *flags: str) -> int:
    keep_going = "--keep-going" in flags  # make robustness: later cells' checks still report
    out_dir = Path(dst)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(src)] if Path(src).is_file() else sorted(Path(src).glob("[0-9][0-9]_*.ipynb"))
    rows = [run_one(path, out_dir, keep_going) for path in paths]
    failed = any(r["headline"].startswith("FAILED") for r in rows)
    print("\n| notebook | seconds | peak MB | headline |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['notebook']} | {r['seconds']:.0f} | {r['peak_mb']} | {r['headline']} |")
    print(f"\ntotal: {sum(r['seconds'] for r in rows):.0f} s for {len(rows)} notebooks")
    timings = out_dir / "timings.json"
    previous = json.loads(timings.read_text())["notebooks"] if timings.exists() else {}
    previous.update({r["notebook"]: r for r in rows})  # a single-notebook run updates its own row
    machine = (
        f"{platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    )
    timings.write_text(
        json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"), "notebooks": previous}, indent=1)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
