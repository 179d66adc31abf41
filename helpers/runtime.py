"""Hardware detection and the course profile every notebook picks in its first cells.

    from helpers.runtime import get_profile
    profile = get_profile()      # tiny on a CPU, colab on a T4-class GPU, full on an A100/H100
    print(profile.summary())

`COURSE_PROFILE=tiny|colab|full` overrides the automatic choice. Only model ids, sizes and
precision change between profiles; the code path is the same. Used by every notebook.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field, replace

import psutil
import torch

from helpers import registry, rehearsal

PROFILES = ("tiny", "colab", "full")
# GPUs up to this much memory get the `colab` profile (T4 16 GB, L4 24 GB); larger ones `full`.
COLAB_MAX_VRAM_GB = 24.5


@dataclass(frozen=True)
class Hardware:
    """What this machine has. Build one by hand to simulate another machine in tests."""

    cuda: bool = False
    gpu_name: str | None = None
    vram_gb: float = 0.0
    compute_capability: tuple[int, int] | None = None
    mps: bool = False
    cpu_cores: int = 1
    ram_gb: float = 0.0
    colab: bool = False
    flash_attn_installed: bool = False
    cpu_bf16: bool = False  # bf16 units on the CPU (AVX512-BF16 or AMX), used by PyTorch's kernels

    @property
    def bf16(self) -> bool:
        """bf16 needs Ampere (compute capability 8.0) or newer; a T4 is 7.5."""
        return self.cuda and self.compute_capability is not None and self.compute_capability >= (8, 0)

    @property
    def flash_attention_2(self) -> bool:
        return self.bf16 and self.flash_attn_installed


def _cpu_has_bf16_units() -> bool:
    # PyTorch's CPU kernels at AVX512 or above, on a CPU whose flags list bf16 instructions (Linux);
    # ATEN_CPU_CAPABILITY=avx2 (a stand-in for an older CPU) turns them off.
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX"):
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def detect_hardware() -> Hardware:
    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return Hardware(
        cuda=cuda,
        gpu_name=props.name if props else None,
        vram_gb=round(props.total_memory / 2**30, 1) if props else 0.0,
        compute_capability=(props.major, props.minor) if props else None,
        mps=torch.backends.mps.is_available(),
        cpu_cores=os.cpu_count() or 1,
        ram_gb=round(psutil.virtual_memory().total / 2**30, 1),
        colab="google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ,
        flash_attn_installed=importlib.util.find_spec("flash_attn") is not None,
        cpu_bf16=_cpu_has_bf16_units(),
    )


@dataclass(frozen=True)
class Profile:
    """Everything a lesson reads to size itself. Printed by every notebook's setup cell."""

    name: str
    reason: str  # why this profile was chosen, in words
    device: str  # "cpu" or "cuda"
    dtype: str  # "float32", "float16" or "bfloat16"
    attn_implementation: str  # "sdpa" or "flash_attention_2"
    models: dict[str, str]  # role -> what from_pretrained takes (hub id or local path)
    datasets: dict[str, registry.DatasetSource]  # role -> where its rows come from
    sizes: registry.Sizes  # rows, steps, batch and length for this profile
    hardware: Hardware = field(repr=False, default_factory=Hardware)
    seed: int = 0  # the lessons' experiments start from it: $COURSE_SEED, else 0
    rehearsal: bool = False  # a GPU profile's code path on a CPU (make rehearse; helpers.rehearsal)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    @property
    def fp16(self) -> bool:
        return self.dtype == "float16"

    def summary(self) -> str:
        hw = self.hardware
        gpu = f"{hw.gpu_name} ({hw.vram_gb} GB, sm {hw.compute_capability})" if hw.cuda else "none"
        lines = [
            f"profile      : {self.name}  ({self.reason})",
            f"device       : {self.device}, dtype {self.dtype}, attention {self.attn_implementation}",
            f"hardware     : GPU {gpu}; {hw.cpu_cores} CPU cores, {hw.ram_gb} GB RAM"
            + ("; Colab" if hw.colab else ""),
            f"sizes        : {self.sizes}",
        ]
        if self.seed:
            lines.append(f"seed         : {self.seed} (COURSE_SEED)")
        if self.rehearsal:
            lines.append(f"rehearsal    : {rehearsal.describe(self.name, self.dtype)}")
        lines += [f"model {role:<11}: {ref}" for role, ref in self.models.items()]
        lines += [f"data  {role:<11}: {src.label}" for role, src in self.datasets.items()]
        return "\n".join(lines)


def choose_profile(hw: Hardware, requested: str | None = None) -> Profile:
    """The profile for `hw`, or the one `requested` (COURSE_PROFILE), checked against `hw`."""
    if requested:
        requested = requested.strip().lower()
        if requested not in PROFILES:
            raise ValueError(
                f"COURSE_PROFILE={requested!r} is not a profile. Valid choices: {', '.join(PROFILES)} "
                "(or leave it unset to choose from the hardware)."
            )
        if requested != "tiny" and not hw.cuda and not rehearsal.active():
            raise RuntimeError(
                f"COURSE_PROFILE={requested} needs a CUDA GPU, and none was found. "
                "Use COURSE_PROFILE=tiny on this machine (or unset it), or run on a GPU "
                "(Colab: Runtime > Change runtime type > T4 GPU)."
            )
        name, reason = requested, "set by COURSE_PROFILE"
    elif not hw.cuda:
        name = "tiny"
        reason = "no CUDA GPU" + (": Apple MPS is not used by the course yet" if hw.mps else "")
    elif hw.vram_gb <= COLAB_MAX_VRAM_GB:
        name, reason = "colab", f"{hw.gpu_name} with {hw.vram_gb} GB"
    else:
        name, reason = "full", f"{hw.gpu_name} with {hw.vram_gb} GB"

    rehearsing = name != "tiny" and not hw.cuda  # only reached with COURSE_REHEARSAL set
    sizes, datasets = registry.SIZES[name], registry.datasets_for(name)
    if name == "tiny":
        device, dtype, attn = "cpu", "float32", "sdpa"
    elif rehearsing:
        device, dtype, attn = "cpu", rehearsal.dtype(name), "sdpa"
        reason = f"rehearsal of the {name} profile on this CPU"
        sizes, datasets = rehearsal.sizes(sizes), rehearsal.fixture_sources()
    else:
        device = "cuda"
        dtype = "bfloat16" if hw.bf16 else "float16"
        attn = "flash_attention_2" if name == "full" and hw.flash_attention_2 else "sdpa"
    return Profile(
        name=name,
        reason=reason,
        device=device,
        dtype=dtype,
        attn_implementation=attn,
        models=registry.models_for(name),
        datasets=datasets,
        sizes=sizes,
        hardware=hw,
        seed=registry.course_seed(),
        rehearsal=rehearsing,
    )


def get_profile(build_tiny: bool = True) -> Profile:
    """Detect the hardware, honour COURSE_PROFILE, and on `tiny` build the tiny world if missing.

    Also mutes progress bars and library chatter for the lesson (helpers.quiet; COURSE_VERBOSE=1 keeps them).
    """
    from helpers.quiet import quiet

    quiet()
    profile = choose_profile(detect_hardware(), os.environ.get("COURSE_PROFILE"))
    if profile.name == "tiny" and build_tiny:
        from helpers.tiny.build import ensure_built

        ensure_built()
    return profile


# What each course package is for, printed by every notebook's setup cell.
PACKAGES = {
    "torch": "tensors, autograd, devices",
    "transformers": "models, tokenizers, processors",
    "trl": "SFT, DPO and distillation trainers",
    "peft": "LoRA and other adapters",
    "accelerate": "devices and multi-process launch",
    "datasets": "loading and mapping rows",
    "bitsandbytes": "4-bit and 8-bit weights, 8-bit optimizers",
    "safetensors": "safe weight files",
}


@dataclass(frozen=True)
class TrainingPreset:
    """Starting settings for a kind of machine; notebook 07 measures them."""

    batch_size: int
    grad_accum: int
    precision: str  # "fp32", "fp16" (mixed) or "bf16" (mixed)
    gradient_checkpointing: bool
    dataloader_workers: int
    optimizer: str  # a TrainingArguments `optim`
    attention: str
    notes: str


PRESETS: dict[str, TrainingPreset] = {
    "CPU (laptop, CI)": TrainingPreset(
        8,
        1,
        "fp32",
        False,
        0,
        "adamw_torch",
        "sdpa",
        "padding-free + length-grouped batches; bf16 on a CPU pays only with AMX/AVX512-BF16",
    ),
    "T4 16 GB (Colab)": TrainingPreset(
        4,
        4,
        "fp16",
        True,
        2,
        "adamw_8bit",
        "sdpa",
        "no bf16 and no FlashAttention 2 on a T4; QLoRA above ~3 B parameters",
    ),
    "L4 / A10 24 GB": TrainingPreset(
        8, 2, "bf16", True, 4, "adamw_torch_fused", "sdpa", "bf16 works; FlashAttention 2 with flash-attn"
    ),
    "A100 40 GB": TrainingPreset(
        16, 1, "bf16", False, 8, "adamw_torch_fused", "flash_attention_2", "full fine-tuning up to ~3 B"
    ),
    "A100 / H100 80 GB": TrainingPreset(
        32,
        1,
        "bf16",
        False,
        8,
        "adamw_torch_fused",
        "flash_attention_2",
        "full fine-tuning up to ~7 B with ZeRO",
    ),
}


def preset_for(hw: Hardware) -> tuple[str, TrainingPreset]:
    """The preset for this machine, DataLoader workers capped at its cores minus one."""
    if not hw.cuda:
        name = "CPU (laptop, CI)"
    elif hw.vram_gb <= 17:
        name = "T4 16 GB (Colab)"
    elif hw.vram_gb <= 25:
        name = "L4 / A10 24 GB"
    elif hw.vram_gb <= 48:
        name = "A100 40 GB"
    else:
        name = "A100 / H100 80 GB"
    preset = PRESETS[name]
    workers = min(preset.dataloader_workers, max(hw.cpu_cores - 1, 0))
    if not hw.bf16 and preset.precision == "bf16":  # an older GPU with more memory
        preset = replace(preset, precision="fp16", attention="sdpa")
    return name, replace(preset, dataloader_workers=workers)


def package_versions() -> dict[str, str]:
    """Installed version of each course package ('missing' when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out
