"""The tiny world's cache survives its users: a lock, parts moved into place whole, damage found."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from helpers.registry import tiny_dir
from helpers.tiny import build as tb


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache, and no prebuilt world: every part is built here."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setattr(tb, "prebuilt_dir", lambda: tmp_path / "no-prebuilt-world")
    return tmp_path


def test_a_fresh_cache_gets_the_prebuilt_models_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    trained = []
    real = tb._build_part
    monkeypatch.setattr(
        tb, "_build_part", lambda part, root, out: trained.append(part) or real(part, root, out)
    )
    tb.build(["tiny-chat"])
    assert trained == ["data"]  # the data is generated here; tokenizer and models are copied
    manifest = tb.read_manifest()
    for part in ("tokenizer", "tiny-base", "tiny-chat"):
        assert manifest["parts"][part]["source"] == "prebuilt"
        for f in (tb.prebuilt_dir() / part).iterdir():
            assert (tiny_dir() / part / f.name).read_bytes() == f.read_bytes()
    assert manifest["report"]["tiny-chat"]["exact_match_after"]["all"] > 0
    assert tb.missing_parts(["tiny-chat"]) == []


def test_from_scratch_retrains_a_part_that_was_copied(tmp_path, monkeypatch):
    """A world rebuilt from scratch over a cache that holds prebuilt copies trains them here."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    tb.build(["tokenizer"])
    assert tb.read_manifest()["parts"]["tokenizer"]["source"] == "prebuilt"
    trained = []
    real = tb._build_part
    monkeypatch.setattr(
        tb, "_build_part", lambda part, root, out: trained.append(part) or real(part, root, out)
    )
    tb.build(["tokenizer"], from_scratch=True)
    assert trained == ["tokenizer"]
    assert tb.read_manifest()["parts"]["tokenizer"]["source"] == "trained here"


def test_every_part_builds_from_scratch_at_a_small_budget(fresh_cache, monkeypatch):
    """The from-scratch path CI would otherwise never take (the prebuilt world is copied): every
    part trained here, at the real sizes but a few steps, saved, recorded and loadable."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    few = {tb.TinySpec: {"pretrain_steps": 6, "sft_steps": 3}, tb.VlmSpec: {"align_steps": 3}}
    monkeypatch.setattr(
        tb, "SPECS", {part: replace(spec, **few[type(spec)]) for part, spec in tb.SPECS.items()}
    )
    # An untrained model rambles to the token limit on every held-out row: score 16 of them
    score = tb.chat_scores
    monkeypatch.setattr(
        tb, "chat_scores", lambda model, tokenizer, rows: score(model, tokenizer, rows.select(range(16)))
    )
    tb.build(tb.PARTS, from_scratch=True)
    assert tb.missing_parts(tb.PARTS) == []
    manifest = tb.read_manifest()
    for part in tb.PREBUILT_PARTS:
        assert manifest["parts"][part]["source"] != "prebuilt", part
    assert manifest["report"]["tiny-base"]["spec"]["pretrain_steps"] == 6
    assert manifest["report"]["tiny-vlm"]["spec"]["align_steps"] == 3
    assert set(manifest["report"]["tiny-vlm"]) >= {
        "held-out answers right, charts",
        "held-out answers right, blank images",
    }
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dir() / "tiny-teacher")
    assert teacher.config.hidden_size == tb.TEACHER.hidden_size
    assert sorted(p.name for p in (tiny_dir() / "tiny-chat").glob("*.safetensors")) == ["model.safetensors"]


def test_a_prebuilt_part_that_does_not_fit_is_refused_and_says_why(tmp_path, monkeypatch):
    shipped = tmp_path / "tiny-world"
    shutil.copytree(tb.prebuilt_dir(), shipped)
    monkeypatch.setattr(tb, "prebuilt_dir", lambda: shipped)
    fingerprint = json.loads((shipped / "world.json").read_text())["data_fingerprint"]
    assert tb.prebuilt_problem("tiny-base", fingerprint) is None
    assert "other data" in tb.prebuilt_problem("tiny-base", "0" * 64)
    monkeypatch.setenv("COURSE_SEED", "1")  # another seed asks for another world
    assert "'seed': 1" in tb.prebuilt_problem("tiny-base", fingerprint)
    monkeypatch.delenv("COURSE_SEED")
    weights = shipped / "tiny-base" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert "hash" in tb.prebuilt_problem("tiny-base", fingerprint)
    assert tb.prebuilt_problem("tiny-chat", fingerprint) is None  # only the damaged part is refused


def test_damaged_part_is_found_and_rebuilt(fresh_cache):
    tb.build(["tokenizer"])
    assert tb.missing_parts(["data", "tokenizer"]) == []
    target = tiny_dir() / "tokenizer" / "tokenizer.json"
    whole = target.read_bytes()
    target.write_bytes(whole[: len(whole) // 2])  # truncated, as a killed copy or a full disk leaves it
    assert tb.missing_parts(["data", "tokenizer"]) == ["tokenizer"]
    assert "tokenizer.json" in tb.damage("tokenizer") and "expected" in tb.damage("tokenizer")
    tb.ensure_built(["tokenizer"])
    assert target.read_bytes() == whole  # rebuilt, from the same data: the same tokenizer
    assert tb.missing_parts(["tokenizer"]) == []


def test_same_size_corruption_is_found(fresh_cache):
    tb.build(["data"])
    arrow = next((tiny_dir() / "data" / "chat" / "train").glob("*.arrow"))
    raw = bytearray(arrow.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    arrow.write_bytes(bytes(raw))
    assert "hash" in tb.damage("data")
    assert tb.missing_parts(["data"]) == ["data"]


def test_a_rebuilt_part_rebuilds_what_was_made_from_it(fresh_cache, monkeypatch):
    tb.build(["tokenizer"])
    (tiny_dir() / "data" / "chat" / "dataset_dict.json").unlink()  # damage the data
    built = []
    real = tb._build_part
    monkeypatch.setattr(
        tb, "_build_part", lambda part, root, out: built.append(part) or real(part, root, out)
    )
    tb.ensure_built(["tokenizer"])
    assert built == ["data", "tokenizer"]


def test_a_killed_build_leaves_no_part_behind(fresh_cache, monkeypatch):
    tb.build(["data"])

    def killed(part, root, out):
        (out / "tokenizer.json").write_text("{")  # half written when the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(tb, "_build_part", killed)
    with pytest.raises(KeyboardInterrupt):
        tb.build(["tokenizer"])
    assert not (tiny_dir() / "tokenizer").exists()  # nothing half-built where a reader looks
    assert "tokenizer" not in tb.read_manifest()["parts"]
    monkeypatch.undo()
    monkeypatch.setenv("COURSE_CACHE", str(fresh_cache))
    tb.ensure_built(["tokenizer"])  # the next build clears the partial folder and completes
    assert not list(tiny_dir().glob(".tokenizer.partial"))
    assert json.loads((tiny_dir() / "tokenizer" / "tokenizer.json").read_text())["model"]


def test_a_damaged_manifest_means_rebuild_not_crash(fresh_cache):
    tb.build(["data"])
    (tiny_dir() / "manifest.json").write_text('{"version": ')
    assert tb.missing_parts(["data"]) == ["data"]


def test_two_processes_build_once(fresh_cache):
    """A second process waits for the first one's build instead of building the same part too."""
    go = fresh_cache / "second-is-waiting"
    code = textwrap.dedent(
        f"""
        import pathlib, time
        from helpers.tiny import build as tb
        real = tb._build_part
        def slow(part, root, out):  # holds the lock until the second process says it is waiting
            deadline = time.time() + 120
            while not pathlib.Path({str(go)!r}).exists() and time.time() < deadline:
                time.sleep(0.1)
            return real(part, root, out)
        tb._build_part = slow
        tb.ensure_built(["data"])
        """
    )
    env = dict(os.environ, COURSE_CACHE=str(fresh_cache))

    def start():
        return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)

    first = start()
    first_out = [first.stdout.readline()]  # "[tiny] building data ...": it holds the lock now
    assert "building data" in first_out[0], first_out
    second = start()
    second_out = []
    for line in second.stdout:  # until it waits (or ends: then the asserts below say why)
        second_out.append(line)
        if "waiting for it to finish" in line:
            break
    go.touch()
    second_out.append(second.communicate(timeout=300)[0])
    second_out = "".join(second_out)
    first_out.append(first.communicate(timeout=300)[0])
    assert first.returncode == 0 and second.returncode == 0, (first_out, second_out)
    assert "waiting for it to finish" in second_out and "building data" not in second_out, second_out
    assert "everything asked for is built already" in second_out
    assert tb.missing_parts(["data"]) == []
