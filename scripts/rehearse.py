"""Rehearse the GPU profiles: lessons executed on the `colab` and `full` code paths, on this CPU.

    make rehearse                                  # every rehearsed notebook, both profiles
    make rehearse ARGS=--ci                        # what CI runs: without the slowest (NOT_IN_CI)
    python scripts/rehearse.py --profiles colab notebooks/02_lora_sft.ipynb   # one of them

Builds the stand-in models and hub-shaped fixtures once (helpers.stand_ins), then runs each
notebook with COURSE_PROFILE set and COURSE_REHEARSAL=1, the hub cache pointing at the
stand-ins and the hub offline (see helpers.rehearsal). Executed copies go to build/rehearse/.
Exit status 1 when any notebook fails on any profile.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import run_notebooks

from helpers import rehearsal, stand_ins

# The notebooks rehearsed, in order (01 writes the data card 02 reads), and on which profiles.
BOTH = ("colab", "full")
REHEARSED = {
    "notebooks/00_setup.ipynb": BOTH,
    "notebooks/01_token_lengths.ipynb": BOTH,
    "notebooks/02_lora_sft.ipynb": BOTH,
    "notebooks/03_vlm_chartqa.ipynb": BOTH,
    "notebooks/04_dpo.ipynb": BOTH,
    "notebooks/05_distillation.ipynb": BOTH,
    "notebooks/06_multi_gpu.ipynb": BOTH,
    "notebooks/07_gpu_tuning.ipynb": BOTH,
    "notebooks/08_efficient_architectures.ipynb": BOTH,
    "notebooks/09_rl_grpo.ipynb": BOTH,
    "notebooks/10_evaluate_and_ship.ipynb": BOTH,
} | {str(p.relative_to(ROOT)): BOTH for p in sorted(ROOT.glob("notebooks/solutions/[0-9]*.ipynb"))}
# Left out of CI's rehearsal (--ci) to keep CI inside its time limit, with their cost on 2 cores;
# (notebook, profile). Each runs in CI on the other profile.
SAME_CODE = "the code CI rehearses on colab"
NOT_IN_CI = {
    ("notebooks/00_setup.ipynb", "full"): f"about 1.5 minutes, 7 GB; {SAME_CODE}",
    (
        "notebooks/02_lora_sft.ipynb",
        "full",
    ): "about 9 minutes at one thread, 6 GB: the 1.7B's main run, the 360M's comparisons",
    ("notebooks/03_vlm_chartqa.ipynb", "full"): f"about 12 minutes, 19 GB; {SAME_CODE}",
    ("notebooks/04_dpo.ipynb", "full"): f"over 10 minutes, the 2B VLM on 5 tiles a chart; {SAME_CODE}",
    ("notebooks/05_distillation.ipynb", "full"): f"about 4 minutes, {SAME_CODE}",
    ("notebooks/06_multi_gpu.ipynb", "full"): f"about 6 minutes, {SAME_CODE} (no pair of GPUs here)",
    ("notebooks/07_gpu_tuning.ipynb", "full"): f"about 9 minutes, 7 GB; {SAME_CODE}",
    ("notebooks/08_efficient_architectures.ipynb", "full"): f"about 2.5 minutes, {SAME_CODE}",
    ("notebooks/09_rl_grpo.ipynb", "full"): f"about 5 minutes, 7 GB; {SAME_CODE}",
    ("notebooks/10_evaluate_and_ship.ipynb", "full"): f"about 3.5 minutes, 10 GB; {SAME_CODE}",
    ("notebooks/solutions/00_setup_solutions.ipynb", "full"): f"about 1.5 minutes, 5 GB; {SAME_CODE}",
    ("notebooks/solutions/03_vlm_chartqa_solutions.ipynb", "full"): f"about 6.5 minutes, 10 GB; {SAME_CODE}",
    ("notebooks/solutions/04_dpo_solutions.ipynb", "full"): f"about 35 s, 2 GB; {SAME_CODE}",
    ("notebooks/solutions/05_distillation_solutions.ipynb", "full"): f"about 6 minutes, 12.5 GB; {SAME_CODE}",
    ("notebooks/solutions/06_multi_gpu_solutions.ipynb", "full"): f"about 4 minutes, 9 GB; {SAME_CODE}",
    ("notebooks/solutions/07_gpu_tuning_solutions.ipynb", "full"): f"about 50 s, 3 GB; {SAME_CODE}",
    ("notebooks/solutions/09_rl_grpo_solutions.ipynb", "full"): f"about 3 minutes, 9 GB; {SAME_CODE}",
    ("notebooks/solutions/10_evaluate_and_ship_solutions.ipynb", "full"): f"about 1.5 minutes, {SAME_CODE}",
}


def ci_runs() -> list[tuple[str, str]]:
    """The (notebook, profile) pairs CI rehearses, in order: every rehearsed pair but NOT_IN_CI."""
    return [
        (nb, profile)
        for profile in BOTH
        for nb, profiles in REHEARSED.items()
        if profile in profiles and (nb, profile) not in NOT_IN_CI
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="default: every rehearsed notebook")
    parser.add_argument("--profiles", nargs="+", default=["colab", "full"], choices=["colab", "full"])
    parser.add_argument("--ci", action="store_true", help="leave out the notebooks in NOT_IN_CI")
    args = parser.parse_args()
    start = time.perf_counter()
    hub = stand_ins.build(log=lambda msg: print(msg, flush=True))
    print(f"stand-ins and fixtures ready in {time.perf_counter() - start:.0f} s ({hub.parent})\n")
    os.environ.update(
        {
            rehearsal.ENV: "1",
            "HF_HUB_CACHE": str(hub),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    rows = []
    for profile in args.profiles:
        os.environ["COURSE_PROFILE"] = profile
        out = ROOT / "build" / "rehearse" / profile
        out.mkdir(parents=True, exist_ok=True)
        print(f"== the {profile} profile", flush=True)
        if args.notebooks:
            chosen = args.notebooks
        elif args.ci:
            chosen = [nb for nb, p in ci_runs() if p == profile]
        else:
            chosen = [nb for nb, profiles in REHEARSED.items() if profile in profiles]
        # A rehearsed cell takes at most a few minutes; past 15 the kernel is hung: run it again.
        rows += [
            {"profile": profile} | run_notebooks.run_one(ROOT / nb, out, timeout=900, retries=1)
            for nb in chosen
        ]
    failed = any(r["headline"].startswith("FAILED") for r in rows)
    print("\n| profile | notebook | seconds | peak MB | result |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['profile']} | {r['notebook']} | {r['seconds']:.0f} | {r['peak_mb']} | {r['headline'][:90]} |"
        )
    skipped = sorted(
        str(p.relative_to(ROOT))
        for p in [*ROOT.glob("notebooks/[0-9]*.ipynb"), *ROOT.glob("notebooks/solutions/[0-9]*.ipynb")]
        if str(p.relative_to(ROOT)) not in REHEARSED
    )
    partly = [
        f"{Path(nb).stem} (not {', '.join(set(BOTH) - set(p))})" for nb, p in REHEARSED.items() if p != BOTH
    ]
    if skipped or partly:
        print("\nnot rehearsed yet: " + ", ".join([*(Path(s).stem for s in skipped), *partly]))
    if args.ci and not args.notebooks:
        print(
            "left out of CI: "
            + ", ".join(f"{Path(nb).stem} on {profile} ({cost})" for (nb, profile), cost in NOT_IN_CI.items())
        )
    print(f"rehearsal: {time.perf_counter() - start:.0f} s, " + ("FAILED" if failed else "all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
