"""Figures and an ipywidgets panel for helpers.memory: what a configuration needs, and whether it fits."""

from __future__ import annotations

from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd
from transformers import PretrainedConfig

from helpers.memory import (
    GPUS_GIB,
    HEADROOM,
    GiB,
    MemoryPlan,
    TrainSetup,
    plan_memory,
    reference_configs,
    verdict,
)

COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]


def plot_plans(plans: dict[str, MemoryPlan], device_gib: float | None = None, ax=None):
    """Stacked horizontal bars, one per plan, with the device's usable memory as a line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.55 * len(plans) + 1.4))
    labels = list(plans)
    left = [0.0] * len(plans)
    for colour, part in zip(COLOURS, next(iter(plans.values())).parts()):
        widths = [plans[k].parts()[part] / GiB for k in labels]
        ax.barh(labels, widths, left=left, color=colour, label=part)
        left = [a + b for a, b in zip(left, widths)]
    if device_gib:
        ax.axvline(
            device_gib * (1 - HEADROOM),
            color="black",
            ls="--",
            lw=1,
            label=f"usable ({device_gib:g} GiB less {HEADROOM:.0%})",
        )
    ax.invert_yaxis()
    ax.set_xlabel("GiB per GPU")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def fit_table(
    configs: dict[str, PretrainedConfig], setups: dict[str, TrainSetup], device_gib: float
) -> pd.DataFrame:
    """Predicted GiB for every model x setup, with a check mark where it fits the device."""
    rows = {}
    for name, cfg in configs.items():
        row = {}
        for label, setup in setups.items():
            plan = plan_memory(cfg, setup)
            row[label] = f"{plan.total / GiB:.1f} {'✓' if verdict(plan, device_gib * GiB).fits else '✗'}"
        rows[name] = row
    return pd.DataFrame(rows).T


def memory_panel(configs: dict[str, PretrainedConfig] | None = None):
    """Pick a model, method, optimizer, batch, length and GPU; see the parts and the verdict."""
    import ipywidgets as w
    from IPython.display import display

    configs = configs or reference_configs()
    pick = {
        "model": w.Dropdown(options=list(configs), description="model"),
        "method": w.Dropdown(options=["full", "lora", "qlora"], value="lora", description="method"),
        "precision": w.Dropdown(options=["mixed", "bf16", "fp32"], description="precision"),
        "optimizer": w.Dropdown(options=["adamw", "adamw_8bit", "sgd"], description="optimizer"),
        "batch_size": w.IntSlider(value=4, min=1, max=64, description="batch"),
        "seq_len": w.Dropdown(options=[256, 512, 1024, 2048, 4096], value=1024, description="seq len"),
        "gradient_checkpointing": w.Checkbox(value=False, description="gradient checkpointing"),
        "gpu": w.Dropdown(options=list(GPUS_GIB), description="GPU"),
    }
    out = w.Output()

    def redraw(*_):
        setup = replace(TrainSetup(), **{k: v.value for k, v in pick.items() if k not in ("model", "gpu")})
        plan = plan_memory(configs[pick["model"].value], setup)
        device = GPUS_GIB[pick["gpu"].value]
        out.clear_output(wait=True)
        with out:
            print(plan.describe())
            print(f"On {pick['gpu'].value}: {verdict(plan, device * GiB)}")
            plot_plans({pick["model"].value: plan}, device)
            plt.show()

    for widget in pick.values():
        widget.observe(redraw, names="value")
    redraw()
    panel = w.VBox([w.HBox(list(pick.values())[:4]), w.HBox(list(pick.values())[4:]), out])
    display(panel)
    return panel
