"""helpers.throughput (notebook 07): the step clock, the batch finder, and the hardware presets."""

import time

import pandas as pd
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import packed_attention, runtime, throughput
from helpers.data import task_set
from helpers.runtime import PRESETS, Hardware, choose_profile, get_profile, preset_for
from helpers.throughput import (
    BASELINES,
    StepTimes,
    UtilisationMonitor,
    chat_loss,
    interleaved,
    largest_batch,
    measure_loop,
    quality_verdict,
    sft_benchmark,
    sft_quality,
    sft_trainer,
    sft_variants,
    step_profile,
)
from helpers.training import ensure_training_template


def test_measure_loop_separates_data_wait_from_compute():
    def slow_batches():
        while True:
            time.sleep(0.02)  # a slow input pipeline
            yield torch.ones(4, 10)

    def step(batch):
        time.sleep(0.01)
        return int(batch.numel())

    result = measure_loop(slow_batches(), step, n_steps=8, warmup=2)
    assert 55 < result["data wait %"] < 80  # 20 ms of 30 ms per step
    assert result["tokens/s"] == pytest.approx(40 / 0.03, rel=0.3)
    assert result["step ms"] == pytest.approx(30, rel=0.3)


def test_summary_refuses_all_warmup():
    times = StepTimes(data_s=[0.1], compute_s=[0.1], tokens=[10])
    with pytest.raises(ValueError, match="warm-up"):
        times.summary(warmup=1)


def test_interleaved_takes_medians_per_configuration():
    values = iter([99.0, 1.0, 10.0, 3.0, 20.0, 2.0, 30.0])  # the first call is the untimed warm-up
    table = interleaved({"a": lambda: {"x": next(values)}, "b": lambda: {"x": next(values)}}, rounds=3)
    assert table.loc["a", "x"] == 2.0 and table.loc["b", "x"] == 20.0


@pytest.mark.parametrize("capacity", [1, 7, 64, 100, 1000])
def test_largest_batch_finds_the_boundary_by_trying(capacity):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= capacity

    assert largest_batch(fits, limit=4096) == capacity
    assert len(tried) <= 2 * capacity.bit_length() + 2  # doubling then bisection, not a scan
    assert largest_batch(lambda b: False) == 0
    assert largest_batch(lambda b: True, limit=50) == 50


def test_monitor_samples_cpu_and_memory():
    with UtilisationMonitor(interval_s=0.01) as monitor:
        x = sum(i * i for i in range(300_000))
        time.sleep(0.1)
    df = monitor.frame()
    assert x > 0 and len(df) >= 2 and {"t", "cpu %", "rss MB"} <= set(df.columns)


def test_variants_on_a_cpu_skip_what_it_cannot_use():
    profile = choose_profile(Hardware(cpu_cores=2, ram_gb=8), "tiny")
    variants, skipped = sft_variants(profile)
    assert all(b in variants for b in BASELINES) and "stacked recipe" in variants
    stacked = variants["stacked recipe"]
    assert stacked["bf16"] is False  # no bf16 units: TRL's default would be emulated
    assert (
        stacked["padding_free"]
        and stacked["model_init_kwargs"]["attn_implementation"] == packed_attention.NAME
    )
    assert "train_sampling_strategy" not in stacked  # length grouping costs held-out loss (section 3)
    assert "FlashAttention 2" in skipped and "torch.compile" in skipped
    with_units = choose_profile(Hardware(cpu_cores=2, ram_gb=8, cpu_bf16=True), "tiny")
    assert "bf16" not in sft_variants(with_units)[0]["stacked recipe"]  # TRL's bf16 stays on


def test_cpu_bf16_units_follow_the_kernels_torch_uses(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert runtime._cpu_has_bf16_units() is False  # ATEN_CPU_CAPABILITY=avx2, or an older CPU


def test_every_variant_on_a_t4_runs_fp16_not_emulated_bf16():
    t4 = Hardware(cuda=True, gpu_name="Tesla T4", vram_gb=15.0, compute_capability=(7, 5), cpu_cores=2)
    variants, skipped = sft_variants(choose_profile(t4, "colab"))
    assert "bf16" in skipped and "torch.compile" in variants
    for name, changes in variants.items():  # TRL's bf16 default would be emulated, slowly
        assert changes.get("fp16") is True and changes.get("bf16") is False, name
    attention = variants["stacked recipe"]["model_init_kwargs"]["attn_implementation"]
    assert attention == packed_attention.NAME  # no FlashAttention 2 on a T4
    a100 = Hardware(
        cuda=True,
        gpu_name="A100",
        vram_gb=80.0,
        compute_capability=(8, 0),
        cpu_cores=8,
        flash_attn_installed=True,
    )
    variants, skipped = sft_variants(choose_profile(a100, "full"))
    assert not any("fp16" in changes for changes in variants.values())
    attention = variants["stacked recipe"]["model_init_kwargs"]["attn_implementation"]
    assert attention == "flash_attention_2" and "attention per sequence" in skipped


def test_a_rehearsal_benchmarks_one_step_of_one_batch_a_variant(monkeypatch, tmp_path):
    # On a CPU a GPU profile's stand-in takes seconds a step: the rehearsal runs each variant's
    # code path once, and its figures mean nothing.
    profile = get_profile()
    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(profile.models["base"]))
    rows = Dataset.from_list([{"messages": r["messages"]} for r in task_set(40)])
    variants, _ = sft_variants(profile, pad_to=64)
    seen = []

    def trained(trainer, warmup=0):
        seen.append((trainer.args.max_steps, len(trainer.train_dataset)))
        return {"tokens/s": 1.0}

    monkeypatch.setattr(throughput, "measure_trainer", trained)
    monkeypatch.setenv("COURSE_REHEARSAL", "1")
    table = sft_benchmark(profile.models["base"], tokenizer, rows, variants, output_dir=str(tmp_path))
    assert list(table.index) == list(variants)
    assert len(seen) == len(variants) + 1  # one round, after one warm-up run
    assert all(steps == 1 and n <= 8 for steps, n in seen), seen


def test_presets_follow_the_hardware():
    t4 = Hardware(cuda=True, gpu_name="Tesla T4", vram_gb=15.0, compute_capability=(7, 5), cpu_cores=2)
    name, preset = preset_for(t4)
    assert name.startswith("T4") and preset.precision == "fp16" and preset.dataloader_workers == 1
    v100 = Hardware(cuda=True, vram_gb=32.0, compute_capability=(7, 0), cpu_cores=8)
    assert preset_for(v100)[1].precision == "fp16"  # no bf16 before Ampere
    assert preset_for(Hardware(cpu_cores=4))[0] == "CPU (laptop, CI)"
    assert len(PRESETS) >= 4


def _rows(n: int) -> Dataset:
    return Dataset.from_list([{"messages": r["messages"]} for r in task_set(n)])


def test_the_profile_splits_the_steps_wall_time(tmp_path, monkeypatch):
    profile = get_profile()
    model = profile.models["base"]
    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(model))
    variants, _ = sft_variants(profile)
    shares = step_profile(sft_trainer(model, tokenizer, _rows(24), variants["stacked recipe"], str(tmp_path)))
    assert list(shares.index) == list(throughput.PROFILE_PARTS)
    assert (shares >= 0).all() and shares.sum() == pytest.approx(100, abs=0.5)
    assert shares["matrix multiplies"] > 1 and shares["attention"] > 0 and shares["optimizer"] > 0
    monkeypatch.setenv("COURSE_REHEARSAL", "1")  # a stand-in's steps take seconds: one step
    trainer = sft_trainer(model, tokenizer, _rows(24), variants["stacked recipe"], str(tmp_path))
    step_profile(trainer)
    assert trainer.state.global_step == 1


def test_chat_loss_is_the_models_own_loss_on_one_row():
    profile = get_profile()
    model = AutoModelForCausalLM.from_pretrained(profile.models["chat"])
    tokenizer = AutoTokenizer.from_pretrained(profile.models["chat"])
    row = {"messages": task_set(1)[0]["messages"]}
    ids = tokenizer.apply_chat_template(row["messages"], return_dict=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        own = model(input_ids=ids, labels=ids).loss.item()
    assert chat_loss(model, tokenizer, [row]) == pytest.approx(own, rel=1e-5)
    # padding a batch changes nothing: each row's tokens weigh the same
    rows = [{"messages": r["messages"]} for r in task_set(6)]
    one_by_one = [chat_loss(model, tokenizer, [r]) for r in rows]
    lengths = [
        len(tokenizer.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) - 1 for r in rows
    ]
    expected = sum(loss * n for loss, n in zip(one_by_one, lengths)) / sum(lengths)
    assert chat_loss(model, tokenizer, rows, max_tokens=200) == pytest.approx(expected, rel=1e-4)


def test_quality_compares_held_out_loss_against_the_seed_spread(tmp_path):
    profile = get_profile()
    model = profile.models["base"]
    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(model))
    held_out = [{"messages": r["messages"]} for r in task_set(8)]
    table = sft_quality(
        model,
        tokenizer,
        _rows(16),
        held_out,
        {"TRL defaults": {}, "lr x0": {"learning_rate": 0.0}},
        seeds=(0, 1),
        output_dir=str(tmp_path),
    )
    assert list(table.columns) == ["seed 0", "seed 1", "mean", "seed spread"]
    untrained = chat_loss(AutoModelForCausalLM.from_pretrained(model), tokenizer, held_out)
    assert table.loc["lr x0", "seed 0"] == pytest.approx(untrained, rel=1e-5)  # nothing trained
    assert table.loc["TRL defaults", "mean"] < untrained  # two steps at lr 2e-4 move it
    hand = pd.DataFrame(
        {"mean": [3.0, 3.01, 3.2], "seed spread": [0.02, 0.03, 0.01]}, index=["TRL defaults", "same", "worse"]
    )
    assert quality_verdict(hand, "same").endswith("within the seed spread")
    assert quality_verdict(hand, "worse").endswith("worse")


def test_the_profile_counts_each_op_once_on_a_cpu_and_kernels_on_a_gpu():
    from types import SimpleNamespace

    def event(name, parent=None, self_cpu=0.0, total_cpu=0.0, device=0.0):
        return SimpleNamespace(
            name=name,
            cpu_parent=parent,
            self_cpu_time_total=self_cpu,
            cpu_time_total=total_cpu,
            self_device_time_total=device,
        )

    step = event("Optimizer.step#AdamW.step", self_cpu=50e3, total_cpu=100e3)
    fetch = event(
        "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", self_cpu=10e3, total_cpu=50e3
    )
    events = [
        event("aten::mm", self_cpu=200e3, device=300e3),
        event("aten::_scaled_dot_product_flash_attention_for_cpu", self_cpu=100e3, device=100e3),
        event("aten::mul", self_cpu=150e3, device=50e3),
        step,
        event(
            "aten::_fused_adamw_", parent=step, self_cpu=50e3, device=40e3
        ),  # inside the step: counted there
        fetch,
        event("aten::cat", parent=fetch, self_cpu=40e3),
        event("ChunkedLogProbFunction", self_cpu=30e3),  # a Python span: the rest of the wall time
    ]
    cpu = throughput._split_wall(events, wall=1.0, cuda=False)
    assert cpu["matrix multiplies"] == pytest.approx(20) and cpu["attention"] == pytest.approx(10)
    assert cpu["other tensor ops"] == pytest.approx(15) and cpu["optimizer"] == pytest.approx(10)
    assert cpu["data loading"] == pytest.approx(5) and cpu["Python and framework"] == pytest.approx(40)
    gpu = throughput._split_wall(events, wall=1.0, cuda=True)  # kernel time; the rest is the GPU idle
    assert gpu["matrix multiplies"] == pytest.approx(30) and gpu["optimizer"] == pytest.approx(4)
    assert gpu["other tensor ops"] == pytest.approx(5) and gpu["Python and framework"] == pytest.approx(51)
