"""Rebuild the tiny world as other machines would, rerun the lessons, and print every check's margin.

    python scripts/robustness.py                      # make robustness: 4 perturbed worlds, all lessons
    python scripts/robustness.py --worlds seed=1 seed=0,kernels=default --notebooks 00 05
    python scripts/robustness.py --report             # the table again, from what earlier runs left
    python scripts/robustness.py --notebooks 09 --parts data tokenizer tiny-base   # one lesson, cheaply

Another CPU trains another tiny world: float results differ between CPU kernels, and training from
scratch amplifies the difference. Each *world* here changes what another machine would change:
the training seed of the tiny world's build and of the lessons' experiments (COURSE_SEED), and
torch's CPU kernels (ATEN_CPU_CAPABILITY=default or avx2 make torch dispatch to other kernels
than this CPU's best). Every world is built from scratch in its own cache, then every lesson runs
with every cell executed (an error does not stop the rest), and each `helpers.checks.expect`
records its margin. The table gives, for each check, the margin in every world; the exit status
is 1 when any check, any notebook or any world-level requirement fails. A world fails, too, when
its models are not the ones its own build trained, before or after the lessons: a lesson run
pointed at a world's cache with another COURSE_SEED silently rebuilds or copies them.

`--parts` builds only the parts the chosen lessons read (09 reads tiny-base alone, for example):
a lesson's check then costs minutes, not the teacher's build. The tiny world's own requirements
(tiny-chat's band, the teacher's lead) are then left out of the verdict, and the table says so.

A world takes as long as `make tiny-from-scratch` plus `make run`: about 20 minutes on a fast
2-core machine, about 2 hours on a slow one (the distillation teacher is most of the build).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers.checks import read_margins

PARTS = ["data", "tokenizer", "tiny-base", "tiny-chat", "tiny-vlm", "tiny-teacher"]
MODEL_PARTS = ("tiny-base", "tiny-chat", "tiny-teacher")  # trained with the world's seed
# World-level requirements on the tiny world itself, across all worlds.
CHAT_BAND = 0.10  # tiny-chat's held-out exact match spans at most this many points
TEACHER_LEAD = 0.10  # the teacher beats tiny-chat by at least this in every world


ONEDNN_ISA = {"avx2": "AVX2", "default": "SSE41"}  # oneDNN's ceiling to match each kernel set


@dataclass(frozen=True)
class World:
    seed: int
    kernels: str | None  # ATEN_CPU_CAPABILITY, or None for this CPU's best

    @property
    def name(self) -> str:
        return f"seed{self.seed}-{self.kernels or 'native'}"

    @classmethod
    def parse(cls, text: str) -> World:
        fields = dict(part.split("=", 1) for part in text.split(","))
        unknown = set(fields) - {"seed", "kernels"}
        if unknown:
            raise SystemExit(
                f"--worlds {text!r}: unknown key {sorted(unknown)}; use seed=N[,kernels=default|avx2]"
            )
        kernels = fields.get("kernels") or None
        if kernels not in (None, *ONEDNN_ISA):
            raise SystemExit(
                f"--worlds {text!r}: kernels={kernels} unknown; use kernels=default or kernels=avx2"
            )
        return cls(int(fields.get("seed", 0)), kernels)

    def env(self, out: Path) -> dict[str, str]:
        out = out.resolve()  # the notebooks run in notebooks/: a relative path would miss this world
        env = dict(
            os.environ,
            COURSE_PROFILE="tiny",
            COURSE_SEED=str(self.seed),
            COURSE_CACHE=str(out / "cache"),
            COURSE_MARGINS=str(out / "margins.jsonl"),
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        env.pop("ATEN_CPU_CAPABILITY", None)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if self.kernels:
            env["ATEN_CPU_CAPABILITY"] = self.kernels
            # oneDNN too: torch packs bf16 attention for AMX when oneDNN reports it, and then stops
            # with "pack_vnni2 is only supported when avx512 is supported" if ATen alone is lowered.
            env["ONEDNN_MAX_CPU_ISA"] = ONEDNN_ISA[self.kernels]
        return env


# Four worlds: two other seeds on this CPU's kernels, two on torch's other kernels. On a CPU whose
# best kernels are AVX2, `avx2` changes nothing but the seed; `default` always differs.
DEFAULT_WORLDS = ["seed=1", "seed=2,kernels=avx2", "seed=0,kernels=default", "seed=3,kernels=default"]


def run_world(world: World, out: Path, notebooks: list[str], fresh: bool, parts: list[str] = PARTS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = world.env(out)
    if fresh:
        subprocess.run(["rm", "-rf", str(out / "cache"), str(out / "margins.jsonl")], check=True)
    capability = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"\n=== world {world.name}: COURSE_SEED={world.seed}, torch CPU kernels {capability}", flush=True)
    start = time.perf_counter()
    with (out / "build.log").open("w") as log:
        build = subprocess.run(
            [sys.executable, "-m", "helpers.tiny", "build", "--from-scratch", "--only", *parts],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    build_s = time.perf_counter() - start
    print(f"  build: {build_s:.0f} s (exit {build.returncode}; log {out / 'build.log'})", flush=True)
    status = {
        "world": world.name,
        "kernels": capability,
        "build_s": round(build_s),
        "parts": list(parts),
        "notebooks": {},
    }
    if build.returncode != 0:
        status["failed"] = "build failed"
    elif problem := not_its_own(out, world, parts):
        status["failed"] = f"after the build: {problem}"
    (out / "margins.jsonl").unlink(missing_ok=True)  # an earlier run's margins are not this one's
    if "failed" in status:  # recorded, so that the table shows this run's failure, not an old status
        (out / "status.json").write_text(json.dumps(status, indent=1))
        return status
    for nb in notebooks:
        path = next(ROOT.glob(f"notebooks/{nb}_*.ipynb"))
        with (out / "run.log").open("a") as log:
            run = subprocess.run(
                [
                    sys.executable,
                    "scripts/run_notebooks.py",
                    str(path),
                    str(out / "notebooks"),
                    "--keep-going",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                check=False,
            )
            log.write(run.stdout)
        line = next((ln for ln in run.stdout.splitlines() if ln.startswith(path.name)), run.stdout[-200:])
        status["notebooks"][path.stem] = {"ok": run.returncode == 0, "line": line.strip()}
        print(f"  {line.strip()}", flush=True)
    status["run_s"] = round(time.perf_counter() - start - build_s)
    if problem := not_its_own(out, world, parts):  # a lesson run with other settings rebuilt or copied them
        status["failed"] = f"after the lessons: {problem}"
    (out / "status.json").write_text(json.dumps(status, indent=1))
    return status


def not_its_own(out: Path, world: World, parts: list[str] = PARTS) -> str | None:
    """Why the world's models (those among `parts`) are not the ones its own build trained (missing,
    prebuilt copies, another seed), or None. Without this check a world could silently measure the
    prebuilt world."""
    manifest_path = out / "cache" / "tiny" / "manifest.json"
    if not manifest_path.exists():
        return f"no manifest in {manifest_path.parent}"
    manifest = json.loads(manifest_path.read_text())
    wrong = []
    for part in [p for p in MODEL_PARTS if p in parts]:
        source = manifest.get("parts", {}).get(part, {}).get("source", "missing")
        seed = manifest.get("report", {}).get(part, {}).get("spec", {}).get("seed")
        if source != "trained here" or seed != world.seed:
            wrong.append(f"{part} ({source}, seed {seed})")
    return f"not trained here with seed {world.seed}: {', '.join(wrong)}" if wrong else None


def world_scores(out: Path) -> dict[str, float]:
    manifest_path = out / "cache" / "tiny" / "manifest.json"
    if not manifest_path.exists():
        return {}
    report = json.loads(manifest_path.read_text()).get("report", {})
    scores = {}
    for part in ("tiny-chat", "tiny-teacher"):
        if part in report:
            scores[part] = report[part]["exact_match_after"]["all"]
    return scores


def table(root: Path, worlds: list[World]) -> tuple[str, bool]:
    """Markdown: one row per check, the margin in each world; world-level rows at the end."""
    margins: dict[str, dict[str, dict]] = {}
    statuses = {}
    for w in worlds:
        statuses[w.name] = json.loads(p.read_text()) if (p := root / w.name / "status.json").exists() else {}
        for m in read_margins(root / w.name / "margins.jsonl"):
            margins.setdefault(m["name"], {})[w.name] = m
    ok = True
    head = "| check | " + " | ".join(w.name for w in worlds) + " | smallest margin |"
    lines = [head, "|" + "---|" * (len(worlds) + 2)]
    for name, by_world in margins.items():
        cells, smallest = [], None
        for w in worlds:
            m = by_world.get(w.name)
            if m is None:
                cells.append("not run")
                ok = False
                continue
            mark = "" if m["ok"] else " FAIL"
            ok &= m["ok"]
            cells.append(f"{m['value']:.4g} ({m['margin']:+.3g}){mark}")
            smallest = m["margin"] if smallest is None else min(smallest, m["margin"])
        low = "-" if smallest is None else f"{smallest:+.3g}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {low} |")
    scores = {w.name: world_scores(root / w.name) for w in worlds}
    built = {w.name: statuses[w.name].get("parts", PARTS) for w in worlds}
    if not any({"tiny-chat", "tiny-teacher"} <= set(b) for b in built.values()):
        # --parts left the chat model and the teacher out: their requirements are not this run's.
        lines.append("| tiny-chat band, teacher lead | not built in these worlds (--parts) | - |")
        return _tail(lines, worlds, statuses, ok)
    chat = {k: v["tiny-chat"] for k, v in scores.items() if "tiny-chat" in v}
    lead = {k: v["tiny-teacher"] - v["tiny-chat"] for k, v in scores.items() if len(v) == 2}
    cells = [f"{chat[w.name]:.1%}" if w.name in chat else "-" for w in worlds]
    band = max(chat.values()) - min(chat.values()) if chat else float("nan")
    band_ok = bool(chat) and band <= CHAT_BAND
    ok &= band_ok
    lines.append(
        "| tiny-chat held-out exact match (band <= 10 points) | "
        + " | ".join(cells)
        + f" | band {band:.1%}{'' if band_ok else ' FAIL'} |"
    )
    cells = [
        f"{lead[w.name]:+.1%}" + ("" if lead[w.name] >= TEACHER_LEAD else " FAIL") if w.name in lead else "-"
        for w in worlds
    ]
    lead_ok = len(lead) == len(worlds) and min(lead.values()) >= TEACHER_LEAD
    ok &= lead_ok
    smallest_lead = f"{min(lead.values()) - TEACHER_LEAD:+.1%}" if lead else "-"
    lines.append(
        "| tiny-teacher minus tiny-chat exact match (>= 10 points) | "
        + " | ".join(cells)
        + f" | {smallest_lead} |"
    )
    return _tail(lines, worlds, statuses, ok)


def _tail(lines: list[str], worlds: list[World], statuses: dict, ok: bool) -> tuple[str, bool]:
    """The table's last lines: failed notebooks and worlds, and how each world was built."""
    for w in worlds:
        for st in statuses[w.name].get("notebooks", {}).values():
            if not st["ok"]:
                ok = False
                lines.append(f"\n{w.name}: {st['line']}")
        if statuses[w.name].get("failed"):
            ok = False
            lines.append(f"\n{w.name}: {statuses[w.name]['failed']}")
    builds = ", ".join(
        f"{w.name} {statuses[w.name].get('kernels', '?')} kernels, build {statuses[w.name].get('build_s', '?')} s"
        for w in worlds
    )
    lines.append(f"\nWorlds: {builds}. Cells: measured value (margin inside the bound).")
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--worlds", nargs="+", default=DEFAULT_WORLDS, help="e.g. seed=1 seed=0,kernels=default"
    )
    parser.add_argument(
        "--notebooks",
        nargs="+",
        default=sorted(p.name[:2] for p in ROOT.glob("notebooks/[0-9][0-9]_*.ipynb")),
        help="lesson numbers",
    )
    parser.add_argument(
        "--parts", nargs="+", default=PARTS, choices=PARTS, help="what to build: the parts the lessons read"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "robustness")
    parser.add_argument(
        "--keep-cache", action="store_true", help="reuse a world's cache instead of rebuilding"
    )
    parser.add_argument("--report", action="store_true", help="only print the table from earlier runs")
    args = parser.parse_args()
    # Absolute: the notebooks run in notebooks/, and COURSE_CACHE and COURSE_MARGINS point in here.
    args.out = args.out.resolve()
    worlds = [World.parse(w) for w in args.worlds]
    if not args.report:
        for w in worlds:
            run_world(w, args.out / w.name, args.notebooks, fresh=not args.keep_cache, parts=args.parts)
    text, ok = table(args.out, worlds)
    print("\n" + text)
    (args.out / "table.md").write_text(text + "\n")
    print(
        f"\n{'all checks hold in every world' if ok else 'SOME CHECKS FAIL'}; table in {args.out / 'table.md'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
