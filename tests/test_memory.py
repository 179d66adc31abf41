"""The memory planner: paper arithmetic by hand, and predictions against bytes counted from real tensors."""

from dataclasses import replace

import bitsandbytes as bnb
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from helpers.memory import (
    DoesNotFit,
    GiB,
    TrainSetup,
    check_fits,
    counted_model_states,
    counted_saved_activations,
    lora_trainable_params,
    plan_memory,
    reference_configs,
    zero_model_states,
)
from helpers.registry import models_for
from helpers.tiny.build import ensure_built

GQA = LlamaConfig(
    hidden_size=96,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    intermediate_size=256,
    vocab_size=512,
    tie_word_embeddings=False,
)


@pytest.fixture(scope="module")
def tiny_base_config():
    ensure_built(["tiny-base"])
    return AutoConfig.from_pretrained(models_for("tiny")["base"])


def test_zero_model_states_match_the_papers_example():
    # ZeRO paper, Figure 1: a 7.5B model on 64 GPUs with K = 12.
    psi, nd = 7.5e9, 64
    assert zero_model_states(psi, nd, 0) == pytest.approx(120e9)
    assert zero_model_states(psi, nd, 1) == pytest.approx(2 * psi + 2 * psi + 12 * psi / nd)  # 31.4 GB
    assert zero_model_states(psi, nd, 2) / 1e9 == pytest.approx(16.6, abs=0.05)
    assert zero_model_states(psi, nd, 3) / 1e9 == pytest.approx(1.875)
    assert zero_model_states(1000, 1, 3, k=6) == 10_000
    with pytest.raises(ValueError, match="stage"):
        zero_model_states(1000, 2, 4)


def test_lora_trainable_params_by_hand():
    # Each adapted linear layer adds r x (in + out). GQA: k_proj and v_proj are 96 -> 32.
    r, layers = 8, 3
    q, v = r * (96 + 96), r * (96 + 32)
    assert lora_trainable_params(GQA, r, ["q_proj", "v_proj"]) == layers * (q + v)
    mlp = r * (96 + 256) * 2 + r * (256 + 96)
    assert lora_trainable_params(GQA, r, ["gate_proj", "up_proj", "down_proj"]) == layers * mlp


def test_parameter_counts_of_published_models():
    # Totals published by the model authors, counted here from the config on the meta device.
    expected = {
        "SmolLM2-135M": 134.5e6,
        "SmolLM2-360M": 361.8e6,
        "Llama-3.2-1B": 1.236e9,
        "Llama-3.1-8B": 8.03e9,
        "Llama-3.1-70B": 70.55e9,
    }
    configs = reference_configs()
    for name, n in expected.items():
        assert plan_memory(configs[name], TrainSetup(method="full")).n_params == pytest.approx(
            n, rel=0.005
        ), name


def _train_one_step(config, setup: TrainSetup):
    torch.manual_seed(0)
    dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=setup.attn)
    if setup.method == "lora":
        lora = LoraConfig(
            r=setup.lora_r,
            lora_alpha=2 * setup.lora_r,
            lora_dropout=setup.lora_dropout,
            target_modules=list(setup.lora_targets),
        )
        model = get_peft_model(model, lora)
    if setup.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = {
        "adamw": lambda: torch.optim.AdamW(params, lr=1e-3),
        "sgd": lambda: torch.optim.SGD(params, lr=1e-3, momentum=0.9),
        "adamw_8bit": lambda: bnb.optim.AdamW8bit(params, lr=1e-3),
    }[setup.optimizer]()
    ids = torch.randint(4, config.vocab_size, (setup.batch_size, setup.seq_len))
    saved, loss = counted_saved_activations(model, {"input_ids": ids, "labels": ids})
    loss.backward()
    optimizer.step()
    return counted_model_states(model, optimizer), saved


FULL = TrainSetup(method="full", precision="fp32", batch_size=4, seq_len=48)
SETUPS = [
    FULL,
    replace(FULL, optimizer="sgd"),
    replace(FULL, optimizer="adamw_8bit"),
    replace(FULL, precision="bf16"),
    replace(FULL, attn="eager"),
    replace(FULL, gradient_checkpointing=True),
    replace(FULL, method="lora", lora_r=8),
    replace(FULL, method="lora", lora_r=4, lora_targets=("q_proj", "v_proj")),
    replace(FULL, method="lora", lora_dropout=0.1),
    replace(FULL, method="lora", precision="bf16"),
    replace(FULL, method="lora", gradient_checkpointing=True),
]


@pytest.mark.parametrize("which", ["tiny-base", "gqa"])
@pytest.mark.parametrize("setup", SETUPS, ids=[s.label for s in SETUPS])
def test_prediction_matches_counted_bytes(which, setup, tiny_base_config):
    config = tiny_base_config if which == "tiny-base" else GQA
    counted, saved = _train_one_step(config, setup)
    plan = plan_memory(config, setup)
    # Weights, gradients and optimizer states: exact.
    assert counted == {"weights": plan.weights, "gradients": plan.gradients, "optimizer": plan.optimizer}
    # Activations saved for backward: within 20% (the bar; measured within 1%).
    assert saved == pytest.approx(plan.saved_activations, rel=0.20)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantised_weights_match_bitsandbytes(bits, tiny_base_config):
    from transformers import BitsAndBytesConfig

    quant = (
        BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        if bits == 4
        else BitsAndBytesConfig(load_in_8bit=True)
    )
    model = AutoModelForCausalLM.from_pretrained(
        models_for("tiny")["base"], quantization_config=quant, dtype=torch.float32, device_map="cpu"
    )
    counted = counted_model_states(model, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]))["weights"]
    plan = plan_memory(tiny_base_config, TrainSetup(method="qlora", quant_bits=bits, precision="fp32"))
    assert counted == plan.weights - plan.n_trainable * 4  # less the fp32 adapter, not attached here


def test_memory_grows_as_expected():
    cfg = reference_configs()["SmolLM2-360M"]
    base = plan_memory(cfg, TrainSetup(method="full", batch_size=4, seq_len=512))
    assert plan_memory(cfg, replace(base.setup, batch_size=8)).activations == pytest.approx(
        2 * base.activations, rel=0.01
    )
    assert (
        plan_memory(cfg, replace(base.setup, gradient_checkpointing=True)).activations < base.activations / 4
    )
    lora = plan_memory(cfg, replace(base.setup, method="lora"))
    qlora = plan_memory(cfg, replace(base.setup, method="qlora"))
    assert qlora.weights < lora.weights < base.weights
    assert lora.optimizer < base.optimizer / 10
    zero3 = plan_memory(cfg, replace(base.setup, zero_stage=3, n_gpus=4))
    assert zero3.weights + zero3.gradients + zero3.optimizer == pytest.approx(
        zero_model_states(base.n_params, 4, 3)
    )


def test_check_fits_passes_or_says_what_would_fit():
    configs = reference_configs()
    small = plan_memory(configs["SmolLM2-135M"], TrainSetup(method="lora", batch_size=4, seq_len=512))
    assert check_fits(small, 16 * GiB).fits
    big = plan_memory(configs["Llama-3.1-8B"], TrainSetup(method="full", batch_size=4, seq_len=1024))
    with pytest.raises(DoesNotFit) as err:
        check_fits(big, 16 * GiB, config=configs["Llama-3.1-8B"])
    message = str(err.value)
    assert "over" in message and "Changes that fit" in message and "qlora" in message
    # The change it proposes does fit.
    fitted = plan_memory(
        configs["Llama-3.1-8B"],
        TrainSetup(
            method="qlora", optimizer="adamw_8bit", batch_size=2, seq_len=1024, gradient_checkpointing=True
        ),
    )
    assert check_fits(fitted, 16 * GiB)


def test_bad_setups_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="method 'prefix'"):
        TrainSetup(method="prefix")
    with pytest.raises(ValueError, match="offload needs a ZeRO stage"):
        TrainSetup(offload=True)
