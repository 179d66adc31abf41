"""Asserted effects that say by how much they held.

A lesson asserts what its run must show ("LoRA SFT lifts exact match by more than 20 points").
`expect` asserts it, prints the margin, and, when $COURSE_MARGINS names a file, appends the
measurement to it as one JSON line, so that `make robustness` can compare margins across
perturbed tiny worlds (other seeds, other CPU kernels). In a rehearsal of the GPU profiles
(helpers.rehearsal) it prints the check as skipped: random weights show no effect. Used by
notebooks 00 and 02-06.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers import rehearsal


@dataclass(frozen=True)
class Margin:
    name: str  # what is asserted, in words, starting with the notebook's number
    value: float
    bound: float
    direction: str  # "above" or "below": value must be above / below bound
    margin: float  # how far inside the bound (negative: the check failed)

    @property
    def ok(self) -> bool:
        return self.margin > 0


def expect(name: str, value: float, above: float | None = None, below: float | None = None) -> Margin:
    """Assert `value` > `above` (or < `below`); print and record the margin."""
    if (above is None) == (below is None):
        raise ValueError("give exactly one of above= or below=")
    value = float(value)
    direction, bound = ("above", above) if above is not None else ("below", below)
    margin = float(value - bound if direction == "above" else bound - value)
    result = Margin(name, value, float(bound), direction, margin)
    sign = ">" if direction == "above" else "<"
    line = f"{name}: {value:.4g} ({sign} {bound:.4g} needed; margin {margin:+.4g})"
    if rehearsal.active():  # stand-ins have random weights: an effect cannot show
        print(f"- skipped in rehearsal: {line}")
        return result
    _record(result)
    if not result.ok:
        raise AssertionError(f"not shown by this run: {line}")
    print(f"✓ {line}")
    return result


def _record(result: Margin) -> None:
    path = os.environ.get("COURSE_MARGINS")
    if path:
        with Path(path).open("a") as fh:
            fh.write(json.dumps(asdict(result) | {"ok": result.ok}) + "\n")


def read_margins(path: Path) -> list[dict]:
    """The margins a run recorded, in order (an absent file: none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
