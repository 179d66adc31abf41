"""Scaling exponents, timing medians and the KV-cache formula against a real cache."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.benchmark import median_seconds, scaling_exponent
from helpers.memory import kv_cache_bytes


def test_scaling_exponent_recovers_known_powers():
    sizes = [64, 128, 256, 512]
    assert scaling_exponent(sizes, [3 * n for n in sizes]) == pytest.approx(1.0)
    assert scaling_exponent(sizes, [0.5 * n * n for n in sizes]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        scaling_exponent([1], [1])


def test_median_seconds_runs_the_function_warmup_plus_repeat_times():
    calls = []
    assert median_seconds(lambda: calls.append(1), repeat=3, warmup=2) >= 0
    assert len(calls) == 5


def test_median_seconds_times_one_run_in_a_rehearsal(monkeypatch):
    # A rehearsal's timings mean nothing (stand-ins with random weights, on a CPU): one run each.
    monkeypatch.setenv("COURSE_REHEARSAL", "1")
    calls = []
    median_seconds(lambda: calls.append(1), repeat=3, warmup=2)
    assert len(calls) == 1


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # multi-head, grouped-query, multi-query
def test_kv_cache_formula_matches_a_real_cache(kv_heads):
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        intermediate_size=128,
        vocab_size=100,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        cache = model(input_ids=torch.randint(0, 100, (3, 17)), use_cache=True).past_key_values
    counted = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert counted == kv_cache_bytes(config, batch_size=3, seq_len=17, bytes_per_value=4)
