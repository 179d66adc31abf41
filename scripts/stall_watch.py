"""A hung Jupyter kernel found in minutes, not at a cell's 15-minute timeout.

Now and then a kernel and its client both wait for a message that neither will get: both sit idle
in epoll, and the cell never ends (seen with ipykernel 6.31, jupyter_client 8.10 and pyzmq 27, in
about one CI run of three). Every cell of the course trains, scores, builds or launches something,
so some process of the run's tree uses CPU; a tree that has used none for `idle_s` seconds is hung.

    with StallWatch(lambda: psutil.Process(pid).children(recursive=True), on_stall=kill):
        ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Self

import psutil

# No cell of the course waits this long without any process of its tree computing; a hang costs
# this much before the rerun, and CI saw one or two a run, most in notebook 00.
IDLE_S = 90.0


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:  # gone between listing and reading
            pass
    return total


class StallWatch:
    """Calls `on_stall` once when the processes `tree()` lists have used under `eps` seconds of CPU
    for `idle_s` seconds. A change either way counts as activity: a child that exits takes its
    CPU time out of the sum."""

    def __init__(
        self,
        tree: Callable[[], Iterable[psutil.Process]],
        on_stall: Callable[[], None],
        idle_s: float = IDLE_S,
        poll_s: float = 5.0,
        eps: float = 0.5,
    ):
        self.tree, self.on_stall, self.idle_s, self.poll_s, self.eps = tree, on_stall, idle_s, poll_s, eps
        self.stalled = False
        self._stop = threading.Event()

    def _run(self) -> None:
        ref, since = cpu_seconds(self.tree()), time.monotonic()
        while not self._stop.wait(self.poll_s):
            now = cpu_seconds(self.tree())
            if abs(now - ref) > self.eps:
                ref, since = now, time.monotonic()
            elif time.monotonic() - since > self.idle_s:
                self.stalled = True
                self.on_stall()
                return

    def __enter__(self) -> Self:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
