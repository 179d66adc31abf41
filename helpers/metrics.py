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


def exact_match_by_group(
    predictions: Sequence[str], targets: Sequence[str], groups: Sequence[str]
) -> dict[str, float]:
    """Exact match per group (a skill, a source), plus 'all'."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    scores = {
        g: exact_match([predictions[i] for i in idx], [targets[i] for i in idx]) for g, idx in by_group.items()
    }
    scores["all"] = exact_match(predictions, targets)
    return scores
