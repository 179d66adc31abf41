"""scripts/robustness.py: a world's settings reach the notebooks whatever the working directory."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import robustness


def test_a_world_points_its_notebooks_at_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    world = robustness.World.parse("seed=2,kernels=avx2")
    env = world.env(Path("build/robustness") / world.name)
    for key in ("COURSE_CACHE", "COURSE_MARGINS"):
        assert Path(env[key]).is_absolute(), env[key]
        assert str(tmp_path) in env[key]
    assert env["COURSE_SEED"] == "2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
