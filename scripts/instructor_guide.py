"""Write docs/instructor_guide.md from the timings `make run` measured (build/timings.json).

    make guide        # = make run, then this script
    python scripts/instructor_guide.py --estimates   # only the GPU columns, after `make budget`

The `tiny` minutes and peak memory are measured on the machine that ran `make run`; the GPU
columns are helpers.budget's estimates from every run each lesson declares (upper bounds, at stated
rates, until a GPU measures them). The advice per notebook is written here, once.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))
from helpers import budget

ADVICE = {
    "00_setup.ipynb": (
        "`make tiny` (or the first cell) builds the tiny world: run it before the room arrives.",
        "the memory panel's sliders: show one preset, skip the rest.",
    ),
    "01_token_lengths.ipynb": (
        "nothing: every cell is seconds.",
        "section 6 (fertility across languages) if the audience trains in English only.",
    ),
    "02_lora_sft.ipynb": (
        "sections 1-4 (the main LoRA run) so the comparison table in section 5 is the live part.",
        "section 5's comparison (QLoRA, prefix tuning, NEFTune ...): show the table from a previous run.",
    ),
    "03_vlm_chartqa.ipynb": (
        "the memory section (it loads three variants of the model).",
        "VLM DPO is in notebook 04; here skip the memory comparison and keep before/after.",
    ),
    "04_dpo.ipynb": (
        "notebook 02 first (DPO starts from its merged model; without it, a short SFT runs here).",
        "the beta sweep and IPO: keep one beta, show the sweep table from a previous run.",
    ),
    "05_distillation.ipynb": (
        "`make tiny` (the prebuilt teacher is copied in seconds; trained from scratch it takes 10 to 40 minutes on 2 cores: never live).",
        "the temperature sweep; keep one seed of the four students if pressed (with one seed there is no spread to measure, and the checks then ask only for a gain).",
    ),
    "06_multi_gpu.ipynb": (
        "one ZeRO launch, so DeepSpeed's communication op is compiled (~45 s the first time).",
        "section 3's learning-rate experiment; the pictures and the per-rank table carry the lesson.",
    ),
    "07_gpu_tuning.ipynb": (
        "section 2's benchmark if the machine is slow; its table is the lesson.",
        "sections 4 and 6 (batch finder, image workers).",
    ),
    "08_efficient_architectures.ipynb": (
        "nothing: it runs in seconds.",
        "the MoE router plot.",
    ),
    "09_rl_grpo.ipynb": (
        "nothing beyond `make tiny`: it trains its own reward model and DPO model in the run.",
        "section 8's chain (a DPO and a GRPO run); keep section 7, the reward-hacking curve.",
    ),
    "10_evaluate_and_ship.ipynb": (
        "`make install`, which compiles llama.cpp (a few minutes, once), and notebook 09, whose saved chain this lesson evaluates; without it a short SFT and DPO run here first.",
        "section 3's table of harness settings; keep the agreement check and the GGUF checks.",
    ),
}


def exercises(name: str) -> str:
    """The lesson's exercises, as their headings say (id and level), and where the solutions are."""
    text = (NOTEBOOKS / name).read_text()
    found = re.findall(r"### Exercise (\d\d\.\d) \(([a-z-]+)\)", text)
    if not found:
        return "none"
    listed = ", ".join(f"{eid} ({level})" for eid, level in found)
    return f"{listed}; solutions in notebooks/solutions/{name.removesuffix('.ipynb')}_solutions.ipynb"


def estimate_cells(notebook: str) -> str:
    """A notebook's T4 and A100 cells of the table: helpers.budget's minutes and peak GiB."""
    gpu = [budget.lesson_estimate(notebook[:2], p) for p in budget.PROFILES]
    return " | ".join(f"{e.minutes:.0f} | {e.peak / budget.GiB:.1f}" for e in gpu)


def course_estimates() -> str:
    parts = []
    for p, gpu_name in (("colab", "a T4"), ("full", "an A100")):
        minutes = sum(e.minutes for e in budget.course_estimates(p))
        unsized = sorted(lesson for lesson, q in budget.NOT_YET_SIZED if q == p)
        parts.append(
            f"on {gpu_name} {minutes:.0f} minutes"
            + (
                f" (lesson{'s' if len(unsized) > 1 else ''} {', '.join(unsized)} not yet sized for it)"
                if unsized
                else ""
            )
        )
    return "estimated " + "; ".join(parts)


ROW = re.compile(r"^\| (\d\d_\w+\.ipynb) \| ([\d.]+) \| (\d+) \| .*\|$", re.MULTILINE)
TOTAL = re.compile(r"^(All notebooks on `tiny`: [\d.]+ minutes); estimated .*\.$", re.MULTILINE)


def with_current_estimates(guide: str) -> str:
    """The guide with its GPU columns and course totals recomputed; its measured `tiny` figures kept."""
    guide = ROW.sub(lambda m: f"| {m[1]} | {m[2]} | {m[3]} | {estimate_cells(m[1])} |", guide)
    return TOTAL.sub(lambda m: f"{m[1]}; {course_estimates()}.", guide)


def main(timings_path: str = "build/timings.json", out: str = "docs/instructor_guide.md") -> int:
    if timings_path == "--estimates":
        guide = Path(out)
        guide.write_text(with_current_estimates(guide.read_text()))
        print(f"rewrote the GPU estimates in {guide}")
        return 0
    path = Path(timings_path)
    if not path.exists():
        print(f"{path} not found: run `make run` first (it measures every notebook)", file=sys.stderr)
        return 1
    timings = json.loads(path.read_text())
    lines = [
        "# Instructor's guide",
        "",
        (
            "Generated by `make guide` (scripts/instructor_guide.py) from `make run`'s measurements on "
            f"{timings['machine']} ({timings['date']}); do not edit by hand. `tiny` figures are measured; "
            "T4 and A100 figures are **estimated** by helpers.budget from every run the lesson makes "
            "(`python -m helpers.budget` lists them): upper bounds at assumed rates, until measured on such a GPU."
        ),
        "",
        (
            "| notebook | tiny (CPU) minutes | tiny peak RAM MB | T4 minutes (est.) | T4 peak GiB (est.) "
            "| A100 minutes (est.) | A100 peak GiB (est.) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for name, row in sorted(timings["notebooks"].items()):
        total += row["seconds"]
        lines.append(f"| {name} | {row['seconds'] / 60:.1f} | {row['peak_mb']} | {estimate_cells(name)} |")
    lines += [
        "",
        f"All notebooks on `tiny`: {total / 60:.1f} minutes; {course_estimates()}.",
        "",
        "Each lesson ends with three or four exercises, easiest first. The warm-up and stretch ones are",
        "worked by hand or with the lesson's tools, and their checks run in seconds. The last one changes",
        "a run (a setting, the data, the model) and runs it again, a minute or two on `tiny`; its check",
        "measures the effect. In a workshop, give the warm-up to everyone, and the others to those who",
        "finish early. The worked solutions (notebooks/solutions/) run in CI, so they hold for the",
        "course as committed.",
        "",
        "## Per notebook",
        "",
    ]
    for name, row in sorted(timings["notebooks"].items()):
        ahead, skip = ADVICE.get(name, ("-", "-"))
        lines += [
            f"### {name}",
            f"- measured on `tiny`: {row['seconds']:.0f} s; result: {row['headline']}",
            f"- run ahead of a live demo: {ahead}",
            f"- skip when short of time: {skip}",
            f"- exercises: {exercises(name)}",
            "",
        ]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines))
    print(f"wrote {out} ({len(timings['notebooks'])} notebooks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
