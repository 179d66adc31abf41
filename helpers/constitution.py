"""A written data constitution: plain-language rules applied as filters (notebook 01).

    rules = load_constitution()                      # data/constitution.yaml
    kept, report = apply_constitution(rows, rules, lengths=lengths, max_length=256)

Each rule is reported separately (rows it alone would drop, with one example), so a learner
sees which rule costs how much data before deciding to keep it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from helpers.registry import course_root

CHECKS = ("no_pattern", "no_phrase", "not_empty", "max_tokens", "scripts")


@dataclass(frozen=True)
class Rule:
    name: str
    rule: str  # the plain-language sentence
    check: str
    pattern: str | None = None
    phrases: tuple[str, ...] = ()
    roles: tuple[str, ...] = ("system", "user", "assistant")
    allowed: tuple[str, ...] = field(default=("LATIN",))

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(
                f"Rule {self.name!r}: unknown check {self.check!r}; use one of {', '.join(CHECKS)}."
            )
        if self.check == "no_pattern":
            if not self.pattern:
                raise ValueError(f"Rule {self.name!r}: a no_pattern rule needs a `pattern`.")
            re.compile(self.pattern)
        if self.check == "no_phrase" and not self.phrases:
            raise ValueError(f"Rule {self.name!r}: a no_phrase rule needs `phrases`.")


def load_constitution(path: str | Path | None = None) -> list[Rule]:
    path = Path(path) if path else course_root() / "data" / "constitution.yaml"
    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    rules = []
    for i, r in enumerate(spec.get("rules", [])):
        missing = [k for k in ("name", "rule", "check") if k not in r]
        if missing:
            raise ValueError(f"{path}: rule {i} lacks {missing}.")
        rules.append(Rule(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()}))
    return rules


def _script(ch: str) -> str:
    """The Unicode script of a letter, from its name: 'LATIN SMALL LETTER A' -> 'LATIN'."""
    return unicodedata.name(ch, "UNKNOWN").split(" ")[0]


def violates(rule: Rule, row: dict, n_tokens: int | None = None, max_length: int | None = None) -> bool:
    texts = [m["content"] for m in row["messages"] if m["role"] in rule.roles]
    if rule.check == "no_pattern":
        return any(re.search(rule.pattern, t) for t in texts)
    if rule.check == "no_phrase":
        return any(p.lower() in t.lower() for t in texts for p in rule.phrases)
    if rule.check == "not_empty":
        return any(not t.strip() for t in texts)
    if rule.check == "max_tokens":
        if n_tokens is None or max_length is None:
            raise ValueError(f"Rule {rule.name!r} needs token lengths and a max_length.")
        return n_tokens > max_length
    return any(ch.isalpha() and _script(ch) not in rule.allowed for t in texts for ch in t)


def apply_constitution(
    rows: Sequence[dict],
    rules: Sequence[Rule],
    lengths: Sequence[int] | None = None,
    max_length: int | None = None,
) -> tuple[list[int], pd.DataFrame]:
    """Indices of the rows that follow every rule, and a report: per rule, the rows it drops
    and one example of a dropped row."""
    dropped_by: dict[str, list[int]] = {r.name: [] for r in rules}
    for i, row in enumerate(rows):
        n = None if lengths is None else int(lengths[i])
        for rule in rules:
            if violates(rule, row, n, max_length):
                dropped_by[rule.name].append(i)
    report = pd.DataFrame(
        [
            {
                "rule": r.name,
                "in plain words": r.rule,
                "rows dropped": len(dropped_by[r.name]),
                "example": _example(rows[dropped_by[r.name][0]], r) if dropped_by[r.name] else "",
            }
            for r in rules
        ]
    ).set_index("rule")
    out = set().union(*dropped_by.values()) if dropped_by else set()
    return [i for i in range(len(rows)) if i not in out], report


def _example(row: dict, rule: Rule, width: int = 90) -> str:
    text = " | ".join(f"{m['role']}: {m['content']!r}" for m in row["messages"] if m["role"] in rule.roles)
    return text if len(text) <= width else text[: width - 1] + "…"
