"""scripts/robustness.py: a world's settings reach the notebooks whatever the working directory."""

import json
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
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2"  # else bf16 attention crashes on a CPU with AMX
    assert "ONEDNN_MAX_CPU_ISA" not in robustness.World.parse("seed=1").env(tmp_path)


def test_a_world_whose_models_are_not_its_own_build_is_caught(tmp_path):
    world = robustness.World.parse("seed=1")
    tiny = tmp_path / "cache" / "tiny"
    tiny.mkdir(parents=True)

    def manifest(source: str, seed: int) -> None:
        parts = {p: {"source": source} for p in robustness.MODEL_PARTS}
        report = {p: {"spec": {"seed": seed}} for p in robustness.MODEL_PARTS}
        (tiny / "manifest.json").write_text(json.dumps({"parts": parts, "report": report}))

    manifest("trained here", 1)
    assert robustness.not_its_own(tmp_path, world) is None
    manifest("prebuilt", 0)  # what a lesson run without the world's COURSE_SEED leaves behind
    assert "tiny-base (prebuilt, seed 0)" in robustness.not_its_own(tmp_path, world)
    manifest("trained here", 0)
    assert "seed 0" in robustness.not_its_own(tmp_path, world)
    manifest("trained here", 1)
    data = json.loads((tiny / "manifest.json").read_text())
    del data["parts"]["tiny-teacher"]  # a part the build never made
    (tiny / "manifest.json").write_text(json.dumps(data))
    assert "tiny-teacher (missing" in robustness.not_its_own(tmp_path, world)
