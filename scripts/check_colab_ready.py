"""Colab readiness: every notebook opens and runs its first cells outside the repository.

    make colab-check          # or: python scripts/check_colab_ready.py [--work build/colab-check]

What a learner on Colab gets, reproduced on this machine without a GPU or the hub:
1. a fresh venv that holds only what Colab brings before the course (torch, a Jupyter kernel);
2. each notebook copied alone into an empty folder, as Colab opens it from GitHub;
3. the notebook's own set-up cell, made to believe it runs on Colab, so that it clones the course
   (from this checkout's last commit instead of GitHub) and installs it with pip;
4. the notebook's cells up to and including the one that picks the profile (all of notebook 00),
   on the `tiny` profile, with the tiny world this checkout already built;
5. every module that any notebook imports at its top level, imported in that venv, so that a
   dependency missing from pyproject.toml fails here and not on a learner's Colab.
It fails on the first cell error. Only committed work is cloned: commit before you run it.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
FULL = {"00_setup"}  # run whole; the others up to their profile cell
# Only the set-up cell is fooled: libraries that see google.colab change their behaviour.
PRETEND_COLAB = 'import sys, types\n\nsys.modules["google.colab"] = types.ModuleType("google.colab")'
STOP_PRETENDING = 'sys.modules.pop("google.colab")'

# Runs inside the fresh venv, with its own nbclient and kernel.
RUNNER = """
import sys, nbformat
from nbclient import NotebookClient
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, path)
"""


def sh(*cmd: str | Path, **kwargs) -> str:
    """Run a command quietly; on failure show what it printed and stop."""
    done = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True, **kwargs)
    if done.returncode:
        print(done.stdout[-6000:], done.stderr[-6000:], sep="\n")
        raise subprocess.CalledProcessError(done.returncode, cmd)
    return done.stdout


def head(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The cells up to and including the first code cell that picks the profile."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "get_profile(" in cell.source:
            nb.cells = nb.cells[: i + 1]
            return nb
    raise ValueError("no cell calls get_profile(): every notebook must pick its profile in its first cells")


def current_branch() -> str:
    """The branch checked out here: the set-up cell clones it with --branch, as on Colab."""
    branch = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if branch == "HEAD":
        raise SystemExit(
            "make colab-check clones a branch, and this checkout is on none: `git switch -c check` first"
        )
    return branch


def as_on_colab(notebook: Path, course_dir: Path, full: bool) -> nbformat.NotebookNode:
    """A copy that clones and installs the course from this checkout, as its Colab cell would."""
    nb = nbformat.read(notebook, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code")
    lines = setup.source.splitlines()
    for key, value in (
        ("COURSE_REPO", ROOT),
        ("COURSE_BRANCH", current_branch()),
        ("COURSE_DIR", course_dir),
    ):
        at = [i for i, line in enumerate(lines) if line.startswith(f"{key} = ")]
        if len(at) != 1:
            raise ValueError(f"{notebook.name}: its first code cell must set {key} once (the Colab set-up)")
        lines[at[0]] = f'{key} = "{value}"'
    setup.source = "\n".join(lines)
    nb = nb if full else head(nb)
    at = nb.cells.index(setup)
    nb.cells[at : at + 1] = [
        nbformat.v4.new_code_cell(c) for c in (PRETEND_COLAB, setup.source, STOP_PRETENDING)
    ]
    return nb


def top_level_imports(notebooks: list[Path]) -> list[str]:
    """Modules imported at the top level of any code cell (imports under an `if` are GPU-only)."""
    names: set[str] = set()
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(line for line in cell.source.splitlines() if not line.startswith(("%", "!")))
            for node in ast.parse(source).body:
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return sorted(names - set(sys.stdlib_module_names))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "colab-check")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not (ROOT / ".course_cache" / "tiny").exists() and "COURSE_CACHE" not in os.environ:
        print("the tiny world is not built: run `make tiny` first")
        return 1
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    venv, course_dir = work / "venv", work / "course"
    python = venv / "bin" / "python"
    env = dict(
        os.environ, COURSE_PROFILE="tiny", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false", JUPYTER_DATA_DIR=str(work / "jupyter"), PYTHONNOUSERSITE="1",
        COURSE_CACHE=os.environ.get("COURSE_CACHE", str(ROOT / ".course_cache")),
    )  # fmt: skip
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    sh(sys.executable, "-m", "venv", venv)
    sh(python, "-m", "pip", "install", "-q", "--upgrade", "pip", env=env)
    # What Colab has before the course: its own torch (here the CPU build) and a Jupyter kernel.
    sh(python, "-m", "pip", "install", "-q", "torch==2.13.0", "ipykernel<7", "nbclient", "nbformat", env=env)
    sh(python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3", env=env)
    (work / "run_notebook.py").write_text(RUNNER)
    timings["fresh venv"] = time.perf_counter() - start

    for notebook in notebooks:
        start = time.perf_counter()
        folder = work / notebook.stem  # empty but for the notebook, as on Colab
        folder.mkdir()
        copy = folder / notebook.name
        nbformat.write(as_on_colab(notebook, course_dir, full=notebook.stem in FULL), copy)
        try:
            sh(python, work / "run_notebook.py", copy, folder, env=env, cwd=folder)
        except subprocess.CalledProcessError:
            print(f"FAILED {notebook.name} outside the repository (executed copy: {copy})")
            return 1
        timings[notebook.stem + (" (whole)" if notebook.stem in FULL else " (first cells)")] = (
            time.perf_counter() - start
        )

    # The course the notebooks used is the clone their set-up cell installed, not this checkout.
    where = sh(python, "-c", "import helpers; print(helpers.__file__)", env=env, cwd=work).strip()
    if not Path(where).is_relative_to(course_dir):
        print(f"helpers was imported from {where}, not from the clone in {course_dir}")
        return 1
    start = time.perf_counter()
    modules = top_level_imports(notebooks)
    probe = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)"
    try:
        sh(python, "-c", probe, *modules, env=env, cwd=work)
    except subprocess.CalledProcessError:
        print(f"a module the notebooks import is missing from the installed course: {modules}")
        return 1
    timings[f"imports ({len(modules)} modules)"] = time.perf_counter() - start

    for step, seconds in timings.items():
        print(f"{step:<36} {seconds:6.0f} s")
    total = sum(timings.values())
    print(
        f"Colab readiness: {len(notebooks)} notebooks ran outside the repository, course from {where}; {total:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
