"""Rehearse the GPU profiles on a CPU: stand-ins of the hub models, hub-shaped data, small sizes.

    make rehearse            # every rehearsed lesson on the `colab` code path, then on `full`

`COURSE_REHEARSAL=1` with `COURSE_PROFILE=colab|full` makes helpers.runtime pick that profile on
a machine without a GPU. Lessons then run their GPU code path unchanged: hub ids, the profile's
batch size and max_length, LoRA targets, 4-bit loading, image tiles. Only what a CPU cannot afford
shrinks: rows, evaluation items, steps, and the precision (float32; see `dtype`). Models come from a hub cache built here
($HF_HUB_CACHE, used offline): each stand-in has its published configuration (data/hub/) with
random weights and two layers, and a tokenizer with the published special tokens, chat template
and length limit. Data comes from fixtures with each hub set's columns and split names, multi-turn
and system rows, and a long tail of several thousand tokens. Effects random weights cannot show
are skipped (helpers.checks.expect says so); every other assertion runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from helpers import registry

ENV = "COURSE_REHEARSAL"
# What a rehearsal keeps of a profile's sizes: the shapes stay, the amounts shrink.
N_TRAIN, N_EVAL, MAX_STEPS = 32, 8, 2
GPU_DTYPES = {"colab": "float16", "full": "bfloat16"}  # a T4's, an A100's


def active() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def dtype(profile: str) -> str:
    """float32 on a CPU: its fp16 and bf16 backward passes run about 100x slower (a 2-layer
    SmolLM2-360M stand-in, 8 x 64 tokens: 2.4 s in fp32, 228-252 s in bf16 or fp16, on a 2-core
    AVX2 machine). COURSE_REHEARSAL_DTYPE=gpu keeps the GPU's (on a CPU with AMX, or on a GPU)."""
    if os.environ.get("COURSE_REHEARSAL_DTYPE") == "gpu":
        return GPU_DTYPES[profile]
    return "float32"


def describe(profile: str, dtype: str) -> str:
    note = "" if dtype == GPU_DTYPES[profile] else f" (in {dtype}; on its GPU {GPU_DTYPES[profile]})"
    return f"stand-in models with random weights{note}, hub-shaped data, fewer rows and steps"


def sizes(full: registry.Sizes) -> registry.Sizes:
    """A profile's sizes for a rehearsal: batch size and max_length stay, amounts shrink."""
    return replace(full, n_train=min(full.n_train, N_TRAIN), n_eval=N_EVAL, max_steps=MAX_STEPS, grad_accum=1)


def root() -> Path:
    return registry.cache_dir() / "rehearsal"


def hub_cache() -> Path:
    """The hub cache the stand-ins live in; point $HF_HUB_CACHE here (make rehearse does)."""
    return root() / "hub"


def data_dir() -> Path:
    return root() / "data"


def published() -> dict:
    return json.loads((registry.course_root() / "data" / "hub" / "models.json").read_text())


def hub_ids() -> list[str]:
    """Every model id the course loads on a GPU profile: the registry's and the tokenizers'."""
    ids = {mid for profile in registry.HUB_MODELS.values() for mid in profile.values()}
    return sorted(ids | set(published()["models"]))


def fixture_sources() -> dict[str, registry.DatasetSource]:
    """The hub datasets, each read from its fixture on disk under the hub set's split names."""
    return {
        role: replace(src, local_path=str(data_dir() / role)) for role, src in registry.HUB_DATASETS.items()
    }
