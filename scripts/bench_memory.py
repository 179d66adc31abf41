"""Predicted vs measured training memory.

    python scripts/bench_memory.py          # CPU: bytes counted from tensors, tiny models
    python scripts/bench_memory.py --gpu    # GPU: predicted total vs torch.cuda.max_memory_allocated

On a GPU, models are built from published configs with random weights (same memory as the real
ones, nothing downloaded) and trained for three steps; the peak of the last step is compared
with the plan's total. Prints one table; nothing is asserted here (tests/test_memory.py does).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import replace

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from helpers.memory import (
    GiB,
    TrainSetup,
    counted_model_states,
    counted_saved_activations,
    plan_memory,
    reference_configs,
)
from helpers.registry import models_for

warnings.filterwarnings("ignore")


def build(config, setup: TrainSetup, device: str):
    dtype = (
        torch.bfloat16
        if setup.precision == "bf16" or (setup.method != "full" and setup.precision != "fp32")
        else torch.float32
    )
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=setup.attn).to(device)
    if setup.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=setup.lora_r, lora_alpha=2 * setup.lora_r, target_modules=list(setup.lora_targets)),
        )
    if setup.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if setup.optimizer == "adamw_8bit":
        import bitsandbytes as bnb

        opt = bnb.optim.AdamW8bit(params, lr=1e-4)
    elif setup.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    else:
        opt = torch.optim.AdamW(params, lr=1e-4)
    return model, opt


def cpu_table() -> None:
    config = AutoConfig.from_pretrained(models_for("tiny")["base"])
    base = TrainSetup(method="full", precision="fp32", batch_size=8, seq_len=64)
    print(f"{'setup (tiny-base, CPU)':<58} {'part':<12} {'predicted':>11} {'counted':>11} {'error':>7}")
    for setup in [
        base,
        replace(base, optimizer="adamw_8bit"),
        replace(base, gradient_checkpointing=True),
        replace(base, method="lora", lora_r=8),
        replace(base, method="lora", precision="bf16"),
    ]:
        model, opt = build(config, setup, "cpu")
        ids = torch.randint(4, config.vocab_size, (setup.batch_size, setup.seq_len))
        saved, loss = counted_saved_activations(model, {"input_ids": ids, "labels": ids})
        loss.backward()
        opt.step()
        counted = counted_model_states(model, opt) | {"activations": saved}
        plan = plan_memory(config, setup)
        predicted = {
            "weights": plan.weights,
            "gradients": plan.gradients,
            "optimizer": plan.optimizer,
            "activations": plan.saved_activations,
        }
        for part, n in counted.items():
            err = predicted[part] / n - 1 if n else 0.0
            print(
                f"{setup.label:<58} {part:<12} {predicted[part] / 2**20:>9.3f}MB {n / 2**20:>9.3f}MB {err:>+7.1%}"
            )


def gpu_table() -> None:
    configs = reference_configs()
    cases = [
        ("SmolLM2-135M", TrainSetup(method="full", precision="bf16", batch_size=8, seq_len=512)),
        ("SmolLM2-360M", TrainSetup(method="full", precision="mixed", batch_size=4, seq_len=1024)),
        ("SmolLM2-360M", TrainSetup(method="lora", precision="bf16", batch_size=8, seq_len=1024)),
        (
            "SmolLM2-1.7B",
            TrainSetup(
                method="lora", precision="bf16", batch_size=4, seq_len=1024, gradient_checkpointing=True
            ),
        ),
        (
            "SmolLM2-1.7B",
            TrainSetup(
                method="full", precision="bf16", batch_size=2, seq_len=1024, gradient_checkpointing=True
            ),
        ),
    ]
    print(f"{'model':<14} {'setup':<62} {'predicted':>10} {'measured':>10} {'error':>7}")
    for name, setup in cases:
        model, opt = build(configs[name], setup, "cuda")
        ids = torch.randint(4, configs[name].vocab_size, (setup.batch_size, setup.seq_len), device="cuda")
        for step in range(3):
            if step == 2:
                torch.cuda.reset_peak_memory_stats()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=setup.precision == "mixed"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        measured = torch.cuda.max_memory_allocated()
        predicted = plan_memory(configs[name], setup).total
        print(
            f"{name:<14} {setup.label:<62} {predicted / GiB:>8.2f}GB {measured / GiB:>8.2f}GB {predicted / measured - 1:>+7.1%}"
        )
        del model, opt
        torch.cuda.empty_cache()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gpu", action="store_true", help="measure on the GPU instead of counting on the CPU"
    )
    if parser.parse_args().gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu needs a CUDA GPU; run without it to count bytes on the CPU.")
        gpu_table()
    else:
        cpu_table()
