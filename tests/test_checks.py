"""helpers.checks.expect asserts, prints and records margins; the robustness table reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.checks import expect, read_margins

ROOT = Path(__file__).resolve().parent.parent


def test_expect_passes_records_and_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_MARGINS", str(tmp_path / "m.jsonl"))
    assert expect("gain", 0.27, above=0.20).margin == pytest.approx(0.07)
    assert "margin +0.07" in capsys.readouterr().out
    assert expect("gap", 3e-6, below=1e-4).ok
    with pytest.raises(AssertionError, match="not shown by this run: loss"):
        expect("loss", 1.06, below=1.05)
    recorded = read_margins(tmp_path / "m.jsonl")
    assert [m["name"] for m in recorded] == ["gain", "gap", "loss"]
    assert [m["ok"] for m in recorded] == [True, True, False]  # a failed check is recorded too
    with pytest.raises(ValueError):
        expect("both", 1.0, above=0.0, below=2.0)


def test_robustness_table_reports_every_world_and_fails_on_a_failed_check(tmp_path):
    for world, margin_ok, chat, teacher in (
        ("seed1-native", True, 0.60, 0.80),
        ("seed0-default", False, 0.55, 0.62),
    ):
        out = tmp_path / world
        (out / "cache" / "tiny").mkdir(parents=True)
        value = 0.3 if margin_ok else 0.1
        row = {"name": "02 gain", "value": value, "bound": 0.2, "direction": "above", "margin": value - 0.2}
        (out / "margins.jsonl").write_text(json.dumps(row | {"ok": margin_ok}) + "\n")
        report = {
            p: {"exact_match_after": {"all": s}} for p, s in (("tiny-chat", chat), ("tiny-teacher", teacher))
        }
        (out / "cache" / "tiny" / "manifest.json").write_text(json.dumps({"report": report}))
        (out / "status.json").write_text(json.dumps({"kernels": "avx2", "build_s": 1, "notebooks": {}}))
    done = subprocess.run(
        [
            sys.executable,
            "scripts/robustness.py",
            "--report",
            "--out",
            str(tmp_path),
            "--worlds",
            "seed=1",
            "seed=0,kernels=default",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    table = (tmp_path / "table.md").read_text()
    assert "| 02 gain | 0.3 (+0.1) | 0.1 (-0.1) FAIL | -0.1 |" in table
    assert "band 5.0%" in table  # 60% and 55%: inside the 10-point band
    assert "+7.0% FAIL" in table  # the teacher leads by 7 points, 10 required


def test_robustness_table_of_worlds_built_in_part_leaves_the_world_rows_out(tmp_path):
    # --parts data tokenizer tiny-base (notebook 09's check): no chat model, no teacher to compare.
    out = tmp_path / "seed2-avx2"
    out.mkdir()
    row = {"name": "09 gain", "value": 0.4, "bound": 0.1, "direction": "above", "margin": 0.3, "ok": True}
    (out / "margins.jsonl").write_text(json.dumps(row) + "\n")
    status = {"kernels": "avx2", "build_s": 1, "parts": ["data", "tokenizer", "tiny-base"], "notebooks": {}}
    (out / "status.json").write_text(json.dumps(status))
    report = [sys.executable, "scripts/robustness.py", "--report", "--out", str(tmp_path)]
    done = subprocess.run(
        [*report, "--worlds", "seed=2,kernels=avx2"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not built in these worlds" in (tmp_path / "table.md").read_text()
    status["notebooks"] = {"09_rl_grpo": {"ok": False, "line": "09_rl_grpo.ipynb FAILED"}}
    (out / "status.json").write_text(json.dumps(status))  # a failed lesson still fails the run
    done = subprocess.run(
        [*report, "--worlds", "seed=2,kernels=avx2"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1 and "09_rl_grpo.ipynb FAILED" in done.stdout
