"""Point every Open-in-Colab badge, Colab set-up cell and README link at one repository.

    python scripts/publish.py someone/course            # make publish REPO=someone/course
    python scripts/publish.py someone/course --branch workshop
    python scripts/publish.py --check                   # make lint: fail if anything disagrees

The address is declared once, in pyproject.toml's [tool.course] table (`repository`, `branch`).
Publishing rewrites that table, then, from the old address to the new one: the badges
(colab.research.google.com/github/OWNER/NAME/blob/BRANCH/...), the set-up cells' COURSE_REPO,
COURSE_BRANCH and COURSE_DIR, and github.com/OWNER/NAME links in README.md and docs/. Running it
twice changes nothing more.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLAB = "https://colab.research.google.com/github"


@dataclass(frozen=True)
class Address:
    repository: str  # owner/name
    branch: str

    @property
    def name(self) -> str:
        return self.repository.split("/")[1]

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repository}"

    def badge_url(self, notebook: str) -> str:
        return f"{COLAB}/{self.repository}/blob/{self.branch}/{notebook}"

    def setup_lines(self) -> dict[str, str]:
        """The lines each notebook's Colab set-up cell must hold, by variable."""
        return {
            "COURSE_REPO": f'COURSE_REPO = "{self.url}"  # the course\'s repository',
            "COURSE_BRANCH": f'COURSE_BRANCH = "{self.branch}"',
            "COURSE_DIR": f'COURSE_DIR = "/content/{self.name}"',
        }


def declared(root: Path = ROOT) -> Address:
    # A regular expression, not tomllib: that needs Python 3.11, and the course supports 3.10.
    text = (root / "pyproject.toml").read_text()
    table = re.search(r"(?ms)^\[tool\.course\]$(.*?)(?=^\[|\Z)", text)
    values = dict(re.findall(r'(?m)^(repository|branch) = "([^"]*)"$', table.group(1))) if table else {}
    if "repository" not in values:
        raise SystemExit(
            'pyproject.toml has no [tool.course] table with repository = "owner/name"; add it first'
        )
    return Address(values["repository"], values.get("branch", "main"))


def check_repository(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}", text):
        raise SystemExit(f"REPO={text!r} is not of the form owner/name (e.g. REPO=someone/course)")
    return text


def notebooks(root: Path) -> list[Path]:
    return sorted(p for p in (root / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def rewrite_text(text: str, old: Address, new: Address) -> str:
    """Every address-bearing string of `old` replaced by `new`; nothing else touched."""
    text = text.replace(
        f"{COLAB}/{old.repository}/blob/{old.branch}/", f"{COLAB}/{new.repository}/blob/{new.branch}/"
    )
    for var, line in old.setup_lines().items():
        text = text.replace(line, new.setup_lines()[var])
    # Plain links (README, docs): github.com/OWNER/NAME, not followed by more of a name.
    return re.sub(rf"https://github\.com/{re.escape(old.repository)}(?![A-Za-z0-9._-])", new.url, text)


def rewrite_notebook(path: Path, old: Address, new: Address) -> bool:
    raw = path.read_text()
    nb = json.loads(raw)
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        cell["source"] = rewrite_text(source, old, new).splitlines(keepends=True)
    out = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if out != raw:
        path.write_text(out)
        return True
    return False


def publish(root: Path, new: Address) -> list[Path]:
    """Rewrite the declared address and every file that carries it; return the files changed."""
    old = declared(root)
    changed = []
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    table = re.search(r"(?ms)^\[tool\.course\]$.*?(?=^\[|\Z)", text)
    body = re.sub(r'(?m)^repository = ".*"$', f'repository = "{new.repository}"', table.group(0))
    body = re.sub(r'(?m)^branch = ".*"$', f'branch = "{new.branch}"', body)
    updated = text[: table.start()] + body + text[table.end() :]
    if updated != text:
        pyproject.write_text(updated)
        changed.append(pyproject)
    for path in notebooks(root):
        if rewrite_notebook(path, old, new):
            changed.append(path)
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text()
        if (updated := rewrite_text(text, old, new)) != text:
            path.write_text(updated)
            changed.append(path)
    return changed


def disagreements(root: Path = ROOT) -> list[str]:
    """Where a notebook's badge or set-up cell does not carry the declared address."""
    address, found = declared(root), []
    for path in notebooks(root):
        rel = path.relative_to(root).as_posix()
        cells = json.loads(path.read_text())["cells"]
        text = "".join("".join(c["source"]) for c in cells)
        badges = re.findall(rf"{re.escape(COLAB)}/[^)\s\"]+", text)
        expected = address.badge_url(rel)
        for badge in badges:
            if badge != expected:
                found.append(f"{rel}: badge points to {badge}, expected {expected}")
        if not badges and "solutions" not in path.parts:
            found.append(f"{rel}: no Open-in-Colab badge in its first cell")
        setup = next(("".join(c["source"]) for c in cells if c["cell_type"] == "code"), "")
        lines = setup.splitlines()
        for var, line in address.setup_lines().items():
            if line not in lines:
                have = next((ln for ln in lines if ln.startswith(f"{var} = ")), "nothing")
                found.append(f"{rel}: set-up cell has {have!r}, expected {line!r}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("repository", nargs="?", help="owner/name of your copy on GitHub")
    parser.add_argument(
        "--branch", default=None, help="the branch learners clone (default: keep the declared one)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that every file agrees with pyproject.toml"
    )
    args = parser.parse_args()
    if args.check or not args.repository:
        if not args.check:
            parser.error("give REPO=owner/name (make publish REPO=someone/course), or --check")
        found = disagreements()
        for msg in found:
            print(msg)
        address = declared()
        if found:
            print(
                f"Fix with: make publish REPO={address.repository} (rewrites every address from pyproject.toml)"
            )
            return 1
        print(f"every badge and set-up cell points to {address.url} ({address.branch})")
        return 0
    new = Address(check_repository(args.repository), args.branch or declared().branch)
    changed = publish(ROOT, new)
    for path in changed:
        print(f"rewrote {path.relative_to(ROOT)}")
    print(
        f"{len(changed)} files now point to {new.url} ({new.branch}); commit and push them, then open a badge"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
