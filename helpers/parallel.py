"""Which multi-GPU strategy to pick, from the memory planner, and the pictures of notebook 06.

    pick_strategy(config, n_gpus=4, gpu_gib=79.1)     # -> ("ZeRO-2", MemoryPlan)
    strategy_table(reference_configs(), (1, 2, 4, 8), 79.1)

Strategies are tried from the simplest and fastest to the most frugal: plain data parallelism
(DDP) keeps everything on every GPU; ZeRO-1, -2 and -3 (or FSDP, its PyTorch counterpart) shard
optimizer states, then gradients, then weights; CPU offload moves optimizer states and gradients
to host RAM. Activations are never sharded by these: they shrink with a smaller micro-batch and
gradient checkpointing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from transformers import PretrainedConfig

from helpers.memory import HEADROOM, GiB, MemoryPlan, TrainSetup, plan_memory

# (name, zero stage, offload), simplest first.
STRATEGIES = (
    ("DDP", 0, False),
    ("ZeRO-1", 1, False),
    ("ZeRO-2", 2, False),
    ("ZeRO-3 / FSDP", 3, False),
    ("ZeRO-3 + CPU offload", 3, True),
)


def strategy_setup(base: TrainSetup, zero_stage: int, offload: bool, n_gpus: int) -> TrainSetup:
    return replace(base, zero_stage=zero_stage, offload=offload, n_gpus=n_gpus)


def pick_strategy(
    config: PretrainedConfig,
    n_gpus: int,
    gpu_gib: float,
    setup: TrainSetup | None = None,
) -> tuple[str, MemoryPlan]:
    """The first strategy whose per-GPU plan fits, or ("does not fit", the most frugal plan).

    `setup` defaults to full fine-tuning in mixed precision, micro-batch 1 x 2,048 tokens with
    gradient checkpointing: the usual starting point when a model does not fit one GPU."""
    base = setup or TrainSetup(
        method="full", precision="mixed", batch_size=1, seq_len=2048, gradient_checkpointing=True
    )
    usable = gpu_gib * GiB * (1 - HEADROOM)
    plan = None
    for name, stage, offload in STRATEGIES:
        if n_gpus == 1 and stage > 0 and not offload:
            continue  # sharding over one GPU saves nothing
        plan = plan_memory(config, strategy_setup(base, stage, offload, n_gpus))
        if plan.total <= usable:
            return name, plan
    assert plan is not None
    return "does not fit", plan


def strategy_table(
    configs: dict[str, PretrainedConfig], gpu_counts: tuple[int, ...], gpu_gib: float
) -> pd.DataFrame:
    """For each model (rows) and GPU count (columns): the strategy to pick and GiB per GPU."""
    table = {}
    for name, config in configs.items():
        row = {}
        for n in gpu_counts:
            strategy, plan = pick_strategy(config, n, gpu_gib)
            row[f"{n} GPU" + ("s" if n > 1 else "")] = f"{strategy} ({plan.total / GiB:.1f} GiB)"
        table[name] = row
    return pd.DataFrame(table).T


# --- pictures ----------------------------------------------------------------------------------------

PART_COLOURS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer states": "#55a868"}


def draw_zero_stages(n_gpus: int = 4, k: int = 12, ax=None):
    """What each GPU holds under DDP and ZeRO-1/2/3: one bar per GPU, in bytes per parameter."""
    stages = [("DDP", 0), ("ZeRO-1", 1), ("ZeRO-2", 2), ("ZeRO-3", 3)]
    ax = ax or plt.subplots(figsize=(9, 3.2))[1]
    for col, (label, stage) in enumerate(stages):
        parts = {
            "weights": 2 / (n_gpus if stage >= 3 else 1),
            "gradients": 2 / (n_gpus if stage >= 2 else 1),
            "optimizer states": k / (n_gpus if stage >= 1 else 1),
        }
        for g in range(n_gpus):
            x, bottom = col * (n_gpus + 1.5) + g, 0.0
            for part, value in parts.items():
                ax.bar(x, value, bottom=bottom, color=PART_COLOURS[part], label=part if x == 0 else None)
                bottom += value
        ax.text(col * (n_gpus + 1.5) + (n_gpus - 1) / 2, 2 + 2 + k + 0.8, label, ha="center")
    ax.set_xticks([])
    ax.set_ylabel("bytes per parameter, per GPU")
    ax.set_ylim(0, 2 + 2 + k + 2.5)
    ax.set_title(f"Model states on each of {n_gpus} GPUs (mixed precision, Adam: 2 + 2 + {k} bytes)")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def draw_pipeline(n_stages: int = 4, n_micro: int = 6, ax=None):
    """GPipe's schedule: forward of every micro-batch through the stages, then backward; the
    idle corners are the pipeline bubble, a share of (n_stages - 1) / (n_micro + n_stages - 1)."""
    ax = ax or plt.subplots(figsize=(9, 2.6))[1]
    for stage in range(n_stages):
        for m in range(n_micro):
            fwd = stage + m
            bwd = (n_micro + n_stages - 1) + (n_stages - 1 - stage) + m
            ax.barh(stage, 1, left=fwd, color="#4c72b0", edgecolor="white")
            ax.barh(stage, 1, left=bwd, color="#dd8452", edgecolor="white")
            ax.text(fwd + 0.5, stage, f"F{m}", ha="center", va="center", color="white", fontsize=7)
            ax.text(bwd + 0.5, stage, f"B{m}", ha="center", va="center", color="white", fontsize=7)
    ax.set_yticks(range(n_stages), [f"GPU {s}" for s in range(n_stages)])
    ax.invert_yaxis()
    ax.set_xlabel("time (one micro-batch through one stage)")
    bubble = (n_stages - 1) / (n_micro + n_stages - 1)
    ax.set_title(
        f"Pipeline parallelism (GPipe): {n_stages} stages, {n_micro} micro-batches, bubble {bubble:.0%}"
    )
    return ax


def draw_tensor_parallel(ax=None):
    """Megatron-LM's MLP split over 2 GPUs: the first weight by columns, the second by rows, so
    each GPU computes half the hidden units and one all-reduce adds the two partial outputs."""
    ax = ax or plt.subplots(figsize=(9, 2.6))[1]
    colours = ["#4c72b0", "#dd8452"]
    ax.add_patch(plt.Rectangle((0, 0), 1, 2, color="grey", alpha=0.4))
    ax.text(0.5, 2.15, "X (replicated)", ha="center")
    for g in range(2):  # W1 split by columns
        ax.add_patch(plt.Rectangle((1.5 + g, 0), 1, 2, color=colours[g], alpha=0.8))
        ax.text(2 + g, 1, f"W1[:, {g}]\nGPU {g}", ha="center", va="center", color="white", fontsize=8)
    ax.text(2.5, 2.15, "column-parallel", ha="center")
    for g in range(2):  # W2 split by rows
        ax.add_patch(plt.Rectangle((4, 1 - g), 2, 1, color=colours[g], alpha=0.8))
        ax.text(5, 1.5 - g, f"W2[{g}, :]  GPU {g}", ha="center", va="center", color="white", fontsize=8)
    ax.text(5, 2.15, "row-parallel", ha="center")
    ax.annotate("", xy=(7.2, 1), xytext=(6.2, 1), arrowprops={"arrowstyle": "->"})
    ax.text(7.3, 1, "all-reduce:\nY = Y0 + Y1", va="center")
    ax.set_xlim(-0.2, 9)
    ax.set_ylim(-0.2, 2.5)
    ax.axis("off")
    ax.set_title("Tensor parallelism (Megatron-LM): an MLP over 2 GPUs, one all-reduce per block half")
    return ax


def rank_logs(log_dir: Path, kind: str = "stderr") -> dict[int, str]:
    """What each rank wrote to stdout or stderr in a `torchrun --log-dir D --redirects 3` launch.

    torchrun keeps them as D/<run id>/attempt_<n>/<rank>/<kind>.log; the last attempt is read.
    Notebook 06 prints a failing rank's stderr from here instead of the launcher's summary.
    """
    attempts = sorted(Path(log_dir).glob("*/attempt_*"), key=lambda p: p.stat().st_mtime)
    if not attempts:
        return {}
    return {
        int(f.parent.name): f.read_text(errors="replace")
        for f in sorted(attempts[-1].glob(f"*/{kind}.log"))
        if f.parent.name.isdigit()
    }
