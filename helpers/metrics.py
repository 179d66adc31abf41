"""Scores for held-out items. Used by notebooks 02-05 and helpers.tiny.build."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def exact_match(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Share of predictions equal to their target, ignoring case and surrounding/repeated spaces."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        raise ValueError("exact_match needs at least one target")
    return sum(normalise(p) == normalise(t) for p, t in zip(predictions, targets)) / len(targets)


def binomial_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a share measured on n independent items (an exact match over 200
    held-out items at 50% spans about +-7 points): differences inside it are noise."""
    if n <= 0:
        raise ValueError("binomial_interval needs n > 0 items")
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (share * (1 - share) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def exact_match_by_group(
    predictions: Sequence[str], targets: Sequence[str], groups: Sequence[str]
) -> dict[str, float]:
    """Exact match per group (a skill, a source), plus 'all'."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    scores = {
        g: exact_match([predictions[i] for i in idx], [targets[i] for i in idx])
        for g, idx in by_group.items()
    }
    scores["all"] = exact_match(predictions, targets)
    return scores


def _number(text: str) -> float | None:
    """'1,234.5' -> 1234.5, '45%' -> 45.0, '-3' -> -3.0; None when the text is not one number."""
    cleaned = text.strip().replace(",", "").rstrip("%").strip()
    try:
        return float(cleaned)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, target: str, tolerance: float = 0.05) -> bool:
    """ChartQA's relaxed accuracy: a number is right within `tolerance` (relative) of a numeric
    target (exactly, when the target is 0); anything else must match ignoring case and spaces."""
    p, t = _number(prediction), _number(target)
    if p is not None and t is not None:
        # The bound is inclusive; the 1e-9 absorbs float error at exactly 5% (0.525 vs 0.5).
        return p == t if t == 0 else abs(p - t) <= tolerance * abs(t) * (1 + 1e-9)
    return normalise(prediction) == normalise(target)


def relaxed_accuracy_batch(
    predictions: Sequence[str], targets: Sequence[str | Sequence[str]], tolerance: float = 0.05
) -> float:
    """Share of predictions right under relaxed_accuracy; a target may be a list of accepted answers
    (ChartQA's `label` column)."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        raise ValueError("relaxed_accuracy_batch needs at least one target")
    ok = 0
    for p, t in zip(predictions, targets):
        accepted = [t] if isinstance(t, str) else list(t)
        ok += any(relaxed_accuracy(p, a, tolerance) for a in accepted)
    return ok / len(targets)
