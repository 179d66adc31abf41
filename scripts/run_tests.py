"""`make test`: the unit tests and every notebook on the tiny profile, in parallel lanes.

    python scripts/run_tests.py                    # what `make test` runs: one lane per core, at most 2
    python scripts/run_tests.py --lanes 1          # one group after another
    python scripts/run_tests.py tests notebooks/solutions        # only these (make test-min)
    python scripts/run_tests.py --python .venv-min/bin/python    # another environment's pytest
    python scripts/run_tests.py notebooks/02_lora_sft.ipynb -- -x   # flags after -- go to pytest
    python scripts/run_tests.py --ci               # CI (.ci/run): CI's other checks in the same lanes

A tiny model's training step is mostly Python, which runs on one core, so on a 2-core machine two
pytest processes with one torch thread each finish sooner than one process with two threads. Each
group below is one pytest run; a free lane takes the ready group with the longest chain of work
behind it. Lessons that read what another wrote wait for it: notebook 01's data card (read by 02, 05
and 07), 02's merged model (04), 09's runs (its solutions). A group's output is printed whole when it
ends (a failure in full, a pass as pytest's last line), so two lanes never interleave, and a table
of every group's lane and seconds closes the run. Exit status 1 when any group fails.

With --ci, CI's other checks join the same queue as groups of their own (`ci_groups`): the browser
check, Colab readiness, the lowest library versions, and the GPU profiles' rehearsal, one group per
lesson and profile. One queue keeps both cores busy to the end; checks run one after another
beside `make test` left a core idle for half of CI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from stall_watch import IDLE_S, StallWatch

ROOT = Path(__file__).resolve().parent.parent
NB = "notebooks"
SOL = "notebooks/solutions"


@dataclass(frozen=True)
class Group:
    paths: tuple[str, ...]  # what one pytest run collects; for a command, a name other groups wait on
    minutes: float  # its minutes in a lane of `make test` (its closing table): only orders the queue
    after: tuple[str, ...] = ()  # paths whose groups must finish first
    command: tuple[str, ...] = ()  # run this instead of pytest (CI's other checks)

    @property
    def name(self) -> str:
        if self.command:
            return self.paths[0]
        if len(self.paths) == 1:
            return Path(self.paths[0]).stem
        first, last = Path(self.paths[0]), Path(self.paths[-1])  # e.g. "solutions 00-04"
        return f"{first.parent.name} {first.name[:2]}-{last.name[:2]}"


GROUPS = [
    Group(("tests",), 2.7),
    Group((f"{NB}/00_setup.ipynb",), 0.3),
    Group((f"{NB}/01_token_lengths.ipynb",), 0.2),
    Group((f"{NB}/02_lora_sft.ipynb",), 3.4, after=(f"{NB}/01_token_lengths.ipynb",)),
    Group((f"{NB}/03_vlm_chartqa.ipynb",), 1.8),
    Group((f"{NB}/04_dpo.ipynb",), 3.0, after=(f"{NB}/02_lora_sft.ipynb",)),
    Group((f"{NB}/05_distillation.ipynb",), 4.9, after=(f"{NB}/01_token_lengths.ipynb",)),
    Group((f"{NB}/06_multi_gpu.ipynb",), 2.2),
    Group((f"{NB}/07_gpu_tuning.ipynb",), 3.3, after=(f"{NB}/01_token_lengths.ipynb",)),
    Group((f"{NB}/08_efficient_architectures.ipynb",), 0.3),
    Group((f"{NB}/09_rl_grpo.ipynb",), 6.4),
    Group((f"{SOL}/09_rl_grpo_solutions.ipynb",), 0.2, after=(f"{NB}/09_rl_grpo.ipynb",)),
    Group((f"{NB}/10_evaluate_and_ship.ipynb",), 1.3, after=(f"{NB}/09_rl_grpo.ipynb",)),
    # Each lesson's last exercise trains or measures a changed run: two groups, to share the lanes.
    Group(
        tuple(f"{SOL}/{name}_solutions.ipynb" for name in (
            "00_setup", "01_token_lengths", "02_lora_sft", "03_vlm_chartqa", "04_dpo",
        )),
        1.5,
    ),
    Group(
        tuple(f"{SOL}/{name}_solutions.ipynb" for name in (
            "05_distillation", "06_multi_gpu", "07_gpu_tuning", "08_efficient_architectures", "10_evaluate_and_ship"
        )),
        1.9,
    ),
]  # fmt: skip


# CI's other checks, minutes measured in a local CI run at one torch thread (they only order the queue).
CI_MINUTES = {"e2e": 0.9, "colab-check": 4.2, "test-min": 7.7, "stand-ins": 0.5, "colab 07_gpu_tuning": 4.3,
              "colab 06_multi_gpu": 4.0, "colab 04_dpo": 3.9, "colab 05_distillation": 2.4, "colab 08_efficient_architectures": 1.0,
              "colab 09_rl_grpo": 4.4, "colab 10_evaluate_and_ship": 2.3, "colab solutions": 6.0, "full solutions": 1.1,
              "colab 02_lora_sft": 2.9, "colab 03_vlm_chartqa": 1.8, "cluster-check": 4.1, "colab 00_setup": 0.5}  # fmt: skip


# The rehearsal runs 10 before 09 and 04 before 02, so that 10 trains its own short chain there and
# 04 its own short SFT stage (the paths of a learner who opens them first), while `make test` runs
# them on 09's saved chain and 02's merged model: CI executes both paths.
REHEARSAL_ORDER = {
    f"{NB}/10_evaluate_and_ship.ipynb": (),
    f"{NB}/09_rl_grpo.ipynb": (f"{NB}/10_evaluate_and_ship.ipynb",),
    f"{NB}/04_dpo.ipynb": (),
    f"{NB}/02_lora_sft.ipynb": (f"{NB}/01_token_lengths.ipynb", f"{NB}/04_dpo.ipynb"),
}


def ci_groups(python: str) -> list[Group]:
    """CI's checks beyond `make test`: the browser, Colab readiness, the lowest versions, and the
    rehearsal of each lesson on each GPU profile that CI rehearses (scripts/rehearse.py), after the
    stand-ins are built and after what a lesson reads from another on the same profile."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import rehearse

    def check(name: str, *command: str, after: tuple[str, ...] = ()) -> Group:
        return Group((name,), CI_MINUTES.get(name, 1.0), after, command)

    groups = [
        check("e2e", python, "scripts/e2e_browser.py"),
        check("colab-check", python, "scripts/check_colab_ready.py"),
        check("test-min", "make", "test-min", "LANES=1"),
        check("stand-ins", python, "-c", "from helpers import stand_ins; stand_ins.build()"),
        # after 02: LLaMA-Factory's model is scored beside 02's merged model
        check("cluster-check", "make", "cluster-check", after=(f"{NB}/02_lora_sft.ipynb",)),
    ]
    reads = {p: g.after for g in GROUPS for p in g.paths}  # what a lesson reads, from make test's groups
    reads |= REHEARSAL_ORDER
    runs = rehearse.ci_runs()
    for profile in rehearse.BOTH:
        lessons = [nb for nb, p in runs if p == profile and not nb.startswith(SOL)]
        solutions = [nb for nb, p in runs if p == profile and nb.startswith(SOL)]
        for nb in lessons:
            waits = tuple(f"{profile} {Path(d).stem}" for d in reads.get(nb, ()) if d in lessons)
            groups.append(check(f"{profile} {Path(nb).stem}", python, "scripts/rehearse.py", nb,
                                "--profiles", profile, after=("stand-ins", *waits)))  # fmt: skip
        if solutions:
            groups.append(check(f"{profile} solutions", python, "scripts/rehearse.py", *solutions,
                                "--profiles", profile, after=("stand-ins",)))  # fmt: skip
    return groups


def selected(groups: list[Group], wanted: list[str]) -> list[Group]:
    """The groups under any of `wanted` (paths or folders), each cut to the paths asked for."""
    if not wanted:
        return groups
    norm = [str(Path(w)).rstrip("/") for w in wanted]
    out = []
    for g in groups:
        paths = tuple(p for p in g.paths if any(p == w or p.startswith(w + "/") for w in norm))
        paths += tuple(w for w in norm for p in g.paths if w.startswith(p + "/"))  # a file inside a group
        if paths:
            out.append(Group(paths, g.minutes, g.after))
    return out


def priorities(groups: list[Group]) -> dict[str, float]:
    """Each group's minutes plus the longest chain of groups waiting on it: who goes first."""
    owner = {p: g.name for g in groups for p in g.paths}
    children: dict[str, list[Group]] = {g.name: [] for g in groups}
    for g in groups:
        for dep in g.after:
            if dep in owner:
                children[owner[dep]].append(g)
    memo: dict[str, float] = {}

    def chain(g: Group) -> float:
        if g.name not in memo:
            memo[g.name] = g.minutes + max((chain(c) for c in children[g.name]), default=0.0)
        return memo[g.name]

    return {g.name: chain(g) for g in groups}


class Scheduler:
    """Hands the ready group with the longest chain to whichever lane asks."""

    def __init__(self, groups: list[Group]):
        self.todo = sorted(groups, key=lambda g: -priorities(groups)[g.name])
        known = {p for g in groups for p in g.paths}
        self.pending = {p for g in groups for p in g.paths}
        self.waits = {g.name: [d for d in g.after if d in known] for g in groups}
        self.cond = threading.Condition()

    def take(self) -> Group | None:
        with self.cond:
            while self.todo:
                ready = [g for g in self.todo if not any(d in self.pending for d in self.waits[g.name])]
                if ready:
                    self.todo.remove(ready[0])
                    return ready[0]
                self.cond.wait()
            return None

    def done(self, group: Group) -> None:
        with self.cond:
            self.pending -= set(group.paths)
            self.cond.notify_all()


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (none once it has exited)."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def lane_threads(lanes: int) -> int:
    cap = os.environ.get("OMP_NUM_THREADS", "")
    per_lane = max(1, (os.cpu_count() or 1) // lanes)
    return min(per_lane, int(cap)) if cap.isdigit() and int(cap) > 0 else per_lane


def run_lanes(groups: list[Group], lanes: int, python: str, extra: list[str]) -> list[dict]:
    env = dict(os.environ)
    # One torch thread per core: two lanes of two threads each would fight over two cores. A cap
    # set from outside holds (make test-min, run in one of CI's lanes, must not take both cores).
    threads = str(lane_threads(lanes))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    scheduler, rows, lock, procs = Scheduler(groups), [], threading.Lock(), set()
    start = time.perf_counter()

    def lane(number: int) -> None:
        while (group := scheduler.take()) is not None:
            cmd = [python, "-m", "pytest", *group.paths, "-p", "no:cacheprovider", *extra]
            if group.command:
                cmd = list(group.command)
            elif any(p.endswith(".ipynb") for p in group.paths):  # a hung cell fails in 15 min, not CI's 90
                cmd += ["--nbmake", "--nbmake-timeout=900"]
            else:
                cmd += ["--durations=15"]
            at = time.perf_counter() - start
            with lock:
                print(f"[lane {number}] {at:6.0f} s  start  {group.name}", flush=True)
            for attempt in (1, 2):
                proc = subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    start_new_session=True,
                )  # fmt: skip
                procs.add(proc)
                # A pytest run whose whole process tree (a notebook's kernel included) used no CPU
                # for IDLE_S is hung (scripts/stall_watch.py): stopped, then run once more. CI's
                # other checks watch their own notebooks (run_notebooks, a nested run_tests).
                watch = StallWatch(
                    lambda p=proc: tree(p.pid), lambda p=proc: os.killpg(p.pid, signal.SIGKILL), idle_s=IDLE_S
                )
                with watch if not group.command else contextlib.nullcontext():
                    output, _ = proc.communicate()
                procs.discard(proc)
                if not (watch.stalled and attempt == 1):
                    break
                with lock:
                    print(f"[lane {number}] {group.name}: no CPU used for {IDLE_S:.0f} s (a hung kernel); "
                          "running it again", flush=True)  # fmt: skip
            seconds = time.perf_counter() - start - at
            ok = proc.returncode == 0
            lines = output.rstrip().splitlines()
            with lock:
                print(f"[lane {number}] {at + seconds:6.0f} s  {'passed' if ok else 'FAILED'} {group.name} "
                      f"in {seconds:.0f} s: {lines[-1] if lines else ''}", flush=True)  # fmt: skip
                if not ok or "--durations=15" in cmd or group.command:
                    print(output, flush=True)
                rows.append({"group": group.name, "lane": number, "seconds": seconds, "ok": ok})
            scheduler.done(group)

    workers = [threading.Thread(target=lane, args=(n + 1,), daemon=True) for n in range(lanes)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            while w.is_alive():
                w.join(0.5)
    except KeyboardInterrupt:
        for proc in list(procs):
            os.killpg(proc.pid, signal.SIGTERM)
        raise
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="run only the groups under these (default: all)")
    parser.add_argument("--lanes", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--python", default=sys.executable, help="whose pytest and kernel run the tests")
    parser.add_argument("--ci", action="store_true", help="CI's other checks in the same lanes (.ci/run)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]  # after --: flags for pytest
    groups = selected(GROUPS, args.paths) + (ci_groups(args.python) if args.ci else [])
    if args.ci:
        import rehearse  # on sys.path since ci_groups

        left_out = ", ".join(
            f"{Path(nb).stem} on {p} ({cost})" for (nb, p), cost in rehearse.NOT_IN_CI.items()
        )
        print(f"rehearsal left out of CI: {left_out}", flush=True)
    if not groups:
        print(f"nothing to run under {args.paths}")
        return 1
    start = time.perf_counter()
    threads = lane_threads(args.lanes)
    print(f"{len(groups)} groups in {args.lanes} lane(s), {threads} torch thread(s) each", flush=True)
    rows = run_lanes(groups, args.lanes, args.python, extra)
    wall = time.perf_counter() - start
    print("\n| group | lane | seconds | result |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['group']} | {r['lane']} | {r['seconds']:.0f} | {'passed' if r['ok'] else 'FAILED'} |")
    busy = sum(r["seconds"] for r in rows)
    failed = [r["group"] for r in rows if not r["ok"]]
    print(
        f"\n{'make test and CI checks' if args.ci else 'make test'}: {wall:.0f} s wall, {busy:.0f} s of group time in {args.lanes} lane(s); "
        + (f"FAILED: {', '.join(failed)}" if failed else "all passed")
    )
    return 1 if failed or len(rows) < len(groups) else 0


if __name__ == "__main__":
    sys.exit(main())
