"""The chain notebook 10 evaluates: notebook 09's when it saved one, else a short SFT and DPO run
(kept, so a second call trains nothing), the DPO stage also as its LoRA adapter."""

import dataclasses
import os

import pytest

from helpers import stages
from helpers.runtime import get_profile


@pytest.fixture
def profile(tmp_path, monkeypatch):
    full = get_profile()  # model paths into the real tiny world, built before the cache moves
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    return dataclasses.replace(full, sizes=dataclasses.replace(full.sizes, max_steps=3, n_train=64))


def test_without_09_a_short_chain_is_trained_once(profile, tmp_path):
    assert stages.chain_from_09(profile) is None
    chain, source = stages.course_chain(profile)
    assert "short SFT and DPO" in source and "GRPO" not in chain
    assert list(chain) == ["base", "SFT", "DPO", "DPO adapter"]
    for stage in ("SFT", "DPO"):
        assert (chain[stage] / "model.safetensors").exists()
    assert (chain["DPO adapter"] / "adapter_model.safetensors").exists()
    made = (chain["DPO"] / "model.safetensors").stat().st_mtime_ns
    again, _ = stages.course_chain(profile)
    assert again == chain and (chain["DPO"] / "model.safetensors").stat().st_mtime_ns == made


def test_09s_saved_chain_is_used_when_whole_and_from_one_run(profile, tmp_path):
    runs = tmp_path / "runs" / profile.name / "09_rl_grpo"

    def save(stage, name="model.safetensors", at=0):
        (runs / stage).mkdir(parents=True, exist_ok=True)
        (runs / stage / name).write_bytes(b"")
        os.utime(runs / stage / name, ns=(at, at))

    save("sft", at=1)
    save("dpo", at=3)
    save("grpo", at=4)
    assert stages.chain_from_09(profile) is None  # no adapter: 09 stopped part way
    save("dpo-adapter", "adapter_model.safetensors", at=2)
    chain, source = stages.course_chain(profile)
    assert "notebook 09" in source and chain["GRPO"] == runs / "grpo"
    save("sft", at=5)  # 09 run again and stopped after its SFT stage: GRPO is the old run's
    assert stages.chain_from_09(profile) is None


def test_lora_sft_merges_what_it_learns_and_keeps_a_finished_model(profile, tmp_path):
    """05's teacher stage: the LoRA run's change lands in the merged weights (no adapter left), and
    a finished model is not trained again."""
    import torch
    from safetensors.torch import load_file

    from helpers.budget import lesson_plan

    run = lesson_plan("05", profile)["teacher-sft"]
    assert run.steps == 3 and run.setup.method == "lora"
    base = profile.models["teacher"]
    out = stages.lora_sft(profile, base, run, tmp_path / "teacher", learning_rate=3e-3)
    assert not list(out.glob("adapter_*")) and (out / "tokenizer_config.json").exists()
    merged, before = load_file(out / "model.safetensors"), load_file(f"{base}/model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], merged[k])]
    assert changed and all("proj" in k for k in changed)  # LoRA's targets, folded in
    made = (out / "model.safetensors").stat().st_mtime_ns
    assert stages.lora_sft(profile, base, run, out, learning_rate=3e-3) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == made
