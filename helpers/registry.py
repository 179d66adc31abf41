"""Which model and which dataset each role means on each profile.

Roles: models `base`, `chat`, `teacher`, `student`, `vlm`; datasets `chat`, `preference`,
`charts`, `news`, `pretraining`. On `colab` and `full` they are hub ids; on `tiny` they are
the project's own tiny models and data (see helpers.tiny), built into a local cache, with the
same columns as the hub datasets so that one code path serves both. Read through
helpers.runtime.Profile by every notebook.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Hub ids for the GPU profiles. VRAM figures are for bf16/fp16 weights alone.
HUB_MODELS: dict[str, dict[str, str]] = {
    "colab": {
        "base": "HuggingFaceTB/SmolLM2-135M",  # ~0.3 GB
        "chat": "HuggingFaceTB/SmolLM2-360M-Instruct",  # ~0.7 GB
        "teacher": "HuggingFaceTB/SmolLM2-360M-Instruct",  # ~0.7 GB
        "student": "HuggingFaceTB/SmolLM2-135M",  # ~0.3 GB
        "vlm": "HuggingFaceTB/SmolVLM-256M-Instruct",  # ~0.5 GB
    },
    "full": {
        "base": "HuggingFaceTB/SmolLM2-1.7B",  # ~3.4 GB
        "chat": "HuggingFaceTB/SmolLM2-1.7B-Instruct",  # ~3.4 GB
        "teacher": "HuggingFaceTB/SmolLM2-1.7B-Instruct",  # ~3.4 GB
        "student": "HuggingFaceTB/SmolLM2-360M",  # ~0.7 GB
        "vlm": "HuggingFaceTB/SmolVLM-Instruct",  # ~4.5 GB
    },
}
# The tiny models, by folder name under the tiny cache (built by `python -m helpers.tiny build`).
TINY_MODELS = {
    "base": "tiny-base",  # pretrained on the tiny corpus only
    "chat": "tiny-chat",  # tiny-base after SFT on the tiny instructions
    "teacher": "tiny-teacher",  # larger, pretrained longer, then SFT
    "student": "tiny-base",
    "vlm": "tiny-vlm",  # Idefics3 (SmolVLM) architecture, text weights from tiny-base
}


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset role's rows come from; `columns` are the same on every profile."""

    hub_id: str | None  # None on `tiny`
    config: str | None
    train_split: str
    test_split: str
    columns: tuple[str, ...]
    local_path: str | None = None  # the tiny world's DatasetDict on disk

    @property
    def label(self) -> str:
        where = f"{self.hub_id}" + (f" ({self.config})" if self.config else "")
        if self.local_path:
            where = f"{where}, rehearsal fixture" if self.hub_id else self.local_path
        return f"{where} [{self.train_split}/{self.test_split}] columns {', '.join(self.columns)}"


HUB_DATASETS: dict[str, DatasetSource] = {
    "chat": DatasetSource("HuggingFaceTB/smol-smoltalk", None, "train", "test", ("messages",)),
    # The hub set's prompt is implicit (inside chosen/rejected); trl's maybe_extract_prompt splits it out.
    "preference": DatasetSource(
        "trl-lib/ultrafeedback_binarized", None, "train", "test", ("chosen", "rejected")
    ),
    "charts": DatasetSource(
        "HuggingFaceM4/ChartQA", None, "train", "val", ("image", "query", "label", "human_or_machine")
    ),
    "news": DatasetSource("fancyzhx/ag_news", None, "train", "test", ("text", "label")),
    "pretraining": DatasetSource("HuggingFaceTB/smollm-corpus", "cosmopedia-v2", "train", "train", ("text",)),
}


@dataclass(frozen=True)
class Sizes:
    """How much each lesson runs on a profile; lessons may scale these, never exceed them."""

    n_train: int  # training rows a lesson takes
    n_eval: int  # held-out rows for before/after scores
    max_steps: int  # optimizer steps of a lesson's main training run
    batch_size: int  # rows per device step
    grad_accum: int  # steps accumulated per optimizer step
    max_length: int  # tokens per row, before notebook 01 measures a better one
    max_length_cap: int  # the longest rows the lessons' runs are sized for (helpers.budget)


SIZES = {
    "tiny": Sizes(
        n_train=2000,
        n_eval=200,
        max_steps=200,
        batch_size=8,
        grad_accum=2,
        max_length=256,
        max_length_cap=512,
    ),
    "colab": Sizes(
        n_train=5000,
        n_eval=200,
        max_steps=500,
        batch_size=8,
        grad_accum=4,
        max_length=1024,
        max_length_cap=1024,
    ),
    "full": Sizes(
        n_train=20000,
        n_eval=500,
        max_steps=1000,
        batch_size=16,
        grad_accum=2,
        max_length=2048,
        max_length_cap=2048,
    ),
}


def course_root() -> Path:
    """The folder that holds helpers/ (the repository, when installed with `pip install -e`)."""
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where built assets live: $COURSE_CACHE, else .course_cache/ in the checkout (gitignored)."""
    env = os.environ.get("COURSE_CACHE")
    if env:
        return Path(env).expanduser()
    root = course_root()
    if (root / "pyproject.toml").exists():
        return root / ".course_cache"
    return Path.home() / ".cache" / "finetuning-course"  # installed from a wheel, e.g. on Colab


def tiny_dir() -> Path:
    return cache_dir() / "tiny"


def runs_dir(profile: str, lesson: str) -> Path:
    """Where a lesson writes what later lessons read (the data card, 02's merged model), by
    profile, so that a `tiny` run never feeds a `colab` lesson."""
    return cache_dir() / "runs" / profile / lesson


def course_seed() -> int:
    """The training seed of the tiny world's build and of the lessons' experiments: $COURSE_SEED,
    else 0. Another seed trains another tiny world, as another machine would (make robustness)."""
    raw = os.environ.get("COURSE_SEED", "0")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"COURSE_SEED={raw!r} is not an integer; unset it or set e.g. COURSE_SEED=1"
        ) from None


def models_for(profile: str) -> dict[str, str]:
    if profile == "tiny":
        return {role: str(tiny_dir() / name) for role, name in TINY_MODELS.items()}
    return dict(HUB_MODELS[profile])


def datasets_for(profile: str) -> dict[str, DatasetSource]:
    if profile != "tiny":
        return dict(HUB_DATASETS)
    return {
        role: DatasetSource(None, None, "train", "test", src.columns, str(tiny_dir() / "data" / role))
        for role, src in HUB_DATASETS.items()
    }
