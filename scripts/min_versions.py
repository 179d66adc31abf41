"""Pins for `make test-min`: the lowest version pyproject.toml allows of each library whose API the
course leans on (TRL's renames are learners' most common breakage), as pip constraints.

    python scripts/min_versions.py > build/min-constraints.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    sys.exit("scripts/min_versions.py needs Python 3.11 or newer (tomllib)")

ROOT = Path(__file__).resolve().parent.parent
PINNED = ("transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes")


def lowest_versions(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    lowest = {}
    for dep in deps:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*([^;]*)", dep)
        name, spec = match.group(1).lower(), match.group(2)
        bound = re.search(r">=\s*([0-9][^,\s]*)", spec)
        if name in PINNED:
            if not bound:
                raise SystemExit(
                    f"pyproject.toml: {dep!r} needs a lower bound (>=) that the course is tested with"
                )
            lowest[name] = bound.group(1)
    missing = set(PINNED) - set(lowest)
    if missing:
        raise SystemExit(f"pyproject.toml does not declare {sorted(missing)}")
    return lowest


if __name__ == "__main__":
    for name, version in lowest_versions().items():
        print(f"{name}=={version}")
    sys.exit(0)
