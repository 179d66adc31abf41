"""Launch notebook 06's training script many times per strategy and count the launches that fail.

    python scripts/launch_loop.py                          # make launches: 20 of each strategy
    python scripts/launch_loop.py --times 3 --strategies ddp zero3

A flaky launch takes a live demo down, and one failure in three runs of a notebook looks like
luck. This runs the same `torchrun --standalone` command notebook 06 runs, on the tiny world with
two CPU processes over gloo, N times for each strategy. For every failed launch it prints the exit
status and each rank's last stderr lines (torchrun's own summary names only the failing rank), and
it ends with one line per strategy: launches, failures, median and slowest wall seconds. The exit
status is 1 when any launch failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers.parallel import rank_logs

STRATEGIES = ["single", "ddp", "fsdp", "zero2", "zero3"]


def launch(strategy: str, out: Path, steps: int, env: dict[str, str]) -> tuple[int, float, str]:
    """One launch as notebook 06 makes it: exit status, wall seconds, and what to show if it failed."""
    shutil.rmtree(out, ignore_errors=True)
    nproc = 1 if strategy == "single" else 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += ["--log-dir", str(out / "logs"), "--redirects", "3"]
    cmd += [str(ROOT / "scripts" / "train_distributed.py"), "--strategy", strategy, "--steps", str(steps)]
    cmd += ["--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - start
    report = ""
    if proc.returncode != 0 or len(list(out.glob("rank*.json"))) != nproc:
        for rank, text in rank_logs(out / "logs", "stderr").items():
            report += (
                f"--- rank {rank} stderr (last 30 lines) ---\n" + "\n".join(text.splitlines()[-30:]) + "\n"
            )
        report += "--- torchrun (last 10 lines) ---\n" + "\n".join(proc.stderr.splitlines()[-10:])
    return (proc.returncode or (1 if report else 0)), wall, report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--times", type=int, default=20, help="launches per strategy")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=STRATEGIES)
    p.add_argument("--steps", type=int, default=20, help="training steps per launch (notebook 06: 20)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "launches")
    args = p.parse_args()
    if any(s.startswith("zero") for s in args.strategies):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise SystemExit(
                "the ZeRO strategies need DeepSpeed: pip install deepspeed (Linux), or leave them out"
            )
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="true", CUDA_VISIBLE_DEVICES="")
    env.update(COURSE_PROFILE="tiny", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    from helpers.tiny.build import ensure_built

    ensure_built()  # once here, so that no rank builds it
    results: dict[str, list[tuple[int, float]]] = {s: [] for s in args.strategies}
    for i in range(args.times):  # interleaved, so a slow spell of the machine hits every strategy
        for strategy in args.strategies:
            code, wall, report = launch(strategy, args.out / strategy, args.steps, env)
            results[strategy].append((code, wall))
            status = "ok" if code == 0 else f"FAILED (exit {code})"
            print(f"launch {i + 1}/{args.times} {strategy}: {status} in {wall:.1f} s", flush=True)
            if code:
                print(report, flush=True)
    print(f"\n{'strategy':<8} {'launches':>8} {'failed':>6} {'median s':>8} {'slowest s':>9}")
    for strategy, runs in results.items():
        walls = [w for _, w in runs]
        failed = sum(code != 0 for code, _ in runs)
        print(f"{strategy:<8} {len(runs):>8} {failed:>6} {statistics.median(walls):>8.1f} {max(walls):>9.1f}")
    return int(any(code for runs in results.values() for code, _ in runs))


if __name__ == "__main__":
    sys.exit(main())
