"""`make publish REPO=owner/name` changes every address and nothing else, once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD = "finetuning-course/finetuning-course"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def copy_of_repo(tmp_path: Path) -> Path:
    """The tracked files as they are in this working tree, committed in a fresh repository."""
    dst = tmp_path / "course"
    for rel in git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    git(dst, "init", "-q")
    git(dst, "add", "-A")
    git(dst, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")
    return dst


def publish(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/publish.py", *args], cwd=repo, capture_output=True, text=True, check=False
    )


def test_publish_changes_every_address_and_nothing_else(tmp_path):
    repo = copy_of_repo(tmp_path)
    assert publish(repo, "--check").returncode == 0
    done = publish(repo, "someone/course")
    assert done.returncode == 0, done.stderr
    diff = git(repo, "diff", "-U0")
    removed = [ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert removed and len(removed) == len(added)
    for old, new in zip(removed, added):
        assert OLD in old or "/content/finetuning-course" in old, old
        assert new == old.replace(OLD, "someone/course").replace(
            "/content/finetuning-course", "/content/course"
        )
    changed = set(git(repo, "diff", "--name-only").split())
    lessons = {p.relative_to(repo).as_posix() for p in (repo / "notebooks").rglob("*.ipynb")}
    assert lessons <= changed and "pyproject.toml" in changed
    assert OLD not in "".join((repo / p).read_text() for p in lessons)
    assert publish(repo, "--check").returncode == 0

    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "published")
    again = publish(repo, "someone/course")
    assert again.returncode == 0 and git(repo, "status", "--porcelain") == ""  # idempotent


def test_lint_fails_on_a_notebook_that_disagrees(tmp_path):
    repo = copy_of_repo(tmp_path)
    nb = repo / "notebooks" / "03_vlm_chartqa.ipynb"
    nb.write_text(nb.read_text().replace(f"github/{OLD}/blob/main", "github/someone-else/fork/blob/main"))
    done = publish(repo, "--check")
    assert done.returncode == 1
    assert "03_vlm_chartqa.ipynb: badge points to" in done.stdout and "make publish" in done.stdout


def test_a_malformed_address_is_refused(tmp_path):
    repo = copy_of_repo(tmp_path)
    done = publish(repo, "not an address")
    assert done.returncode != 0 and "owner/name" in done.stderr + done.stdout
    assert git(repo, "status", "--porcelain") == ""
