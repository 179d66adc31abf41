"""Training memory, predicted from a model config before any weights load, and counted after.

    plan = plan_memory(config, TrainSetup(method="lora", batch_size=8, seq_len=512))
    print(plan.describe())
    check_fits(plan, 16 * GiB)        # raises DoesNotFit, with changes that would fit

Four parts, as in the ZeRO paper (Rajbhandari et al., 2020) and the activation accounting of
Korthikanti et al. (2022), adapted to Llama-style decoders (RMSNorm, rotary, SwiGLU, SDPA):
- weights: every parameter, in its storage precision (4-bit/8-bit linear layers for QLoRA);
- gradients: trainable parameters only;
- optimizer states: AdamW keeps two per trainable parameter, SGD with momentum one, and
  8-bit AdamW one byte each (bitsandbytes, blockwise, for tensors of 4,096+ elements);
- activations: what autograd saves between forward and backward, per token and per layer,
  counted term by term from what PyTorch's kernels save (see `_layer_elements`), plus the
  fp32 log-probabilities that the loss keeps over the whole vocabulary ("logits").
Precisions: `fp32`; `mixed` is HF Trainer's fp16/bf16 autocast (fp32 weights, gradients and
AdamW states, plus a half-precision copy of each weight cached during the forward pass);
`bf16` is a model cast to bf16 with the optimizer in bf16 too. With DeepSpeed ZeRO
(`zero_stage` > 0) model states follow the paper: 2 + 2 + K bytes per parameter, partitioned.
tests/test_memory.py checks these numbers against bytes counted from real tensors.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig

from helpers.registry import course_root

GiB = 2**30
# Kept free for the CUDA context, the allocator's fragmentation and temporary buffers.
HEADROOM = 0.10
LINEAR_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPUS_GIB = {
    "T4 (16 GB)": 15.0,
    "L4 (24 GB)": 22.0,
    "A100 40 GB": 39.4,
    "A100 80 GB": 79.1,
    "H100 80 GB": 79.1,
}
# bitsandbytes: 4-bit blocks of 64 weights (one absmax each); 8-bit AdamW blocks of 256.
NF4_BLOCK, NESTED_BLOCK, ADAM8_BLOCK, ADAM8_MIN_SIZE = 64, 256, 256, 4096

Method = Literal["full", "lora", "qlora"]
Precision = Literal["fp32", "mixed", "bf16"]
Optimizer = Literal["adamw", "adamw_8bit", "sgd"]


@dataclass(frozen=True)
class TrainSetup:
    """A training configuration, as a learner would describe it."""

    method: Method = "lora"
    precision: Precision = "mixed"
    optimizer: Optimizer = "adamw"
    batch_size: int = 4  # per device, per micro-step
    seq_len: int = 512
    gradient_checkpointing: bool = False
    lora_r: int = 16
    lora_targets: tuple[str, ...] = LINEAR_TARGETS
    lora_dropout: float = 0.0
    quant_bits: Literal[4, 8] = 4  # QLoRA base weights
    attn: Literal["sdpa", "eager"] = "sdpa"
    zero_stage: Literal[0, 1, 2, 3] = 0
    n_gpus: int = 1
    offload: bool = False  # ZeRO-Offload: optimizer states (and gradients) in CPU memory

    def __post_init__(self) -> None:
        problems = []
        if self.method not in ("full", "lora", "qlora"):
            problems.append(f"method {self.method!r} is not one of full, lora, qlora")
        if self.precision not in ("fp32", "mixed", "bf16"):
            problems.append(f"precision {self.precision!r} is not one of fp32, mixed, bf16")
        if self.optimizer not in ("adamw", "adamw_8bit", "sgd"):
            problems.append(f"optimizer {self.optimizer!r} is not one of adamw, adamw_8bit, sgd")
        if self.batch_size < 1 or self.seq_len < 1 or self.n_gpus < 1:
            problems.append("batch_size, seq_len and n_gpus must be at least 1")
        if self.zero_stage not in (0, 1, 2, 3):
            problems.append(f"zero_stage {self.zero_stage} is not 0, 1, 2 or 3")
        if self.offload and self.zero_stage == 0:
            problems.append("offload needs a ZeRO stage (1-3)")
        if self.quant_bits not in (4, 8):
            problems.append(f"quant_bits {self.quant_bits} is not 4 or 8")
        if problems:
            raise ValueError("TrainSetup: " + "; ".join(problems) + ".")

    @property
    def label(self) -> str:
        method = {
            "full": "full",
            "lora": f"LoRA r={self.lora_r}",
            "qlora": f"QLoRA {self.quant_bits}-bit r={self.lora_r}",
        }
        parts = [
            method[self.method],
            self.precision,
            self.optimizer,
            f"batch {self.batch_size} x {self.seq_len}",
        ]
        if self.gradient_checkpointing:
            parts.append("grad. checkpointing")
        if self.zero_stage:
            parts.append(
                f"ZeRO-{self.zero_stage} x {self.n_gpus} GPUs" + (" + offload" if self.offload else "")
            )
        return ", ".join(parts)


@dataclass(frozen=True)
class MemoryPlan:
    """Predicted bytes per GPU, by part. `saved_activations` is what the autograd hooks see."""

    setup: TrainSetup
    n_params: int
    n_trainable: int
    weights: float
    gradients: float
    optimizer: float
    activations: float  # peak, including one recomputed layer under gradient checkpointing
    logits: float
    saved_activations: float  # activations + logits saved between forward and backward
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    def parts(self) -> dict[str, float]:
        return {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer states": self.optimizer,
            "activations": self.activations,
            "logits (loss)": self.logits,
        }

    def describe(self) -> str:
        lines = [
            f"{self.setup.label}: {self.n_params / 1e6:,.1f} M parameters, {self.n_trainable / 1e6:,.2f} M trainable"
        ]
        lines += [f"  {name:<17}{_fmt(b):>10}" for name, b in self.parts().items()]
        lines.append(f"  {'total':<17}{_fmt(self.total):>10}")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _fmt(b: float) -> str:
    return f"{b / GiB:.2f} GiB" if b >= 0.1 * GiB else f"{b / 2**20:.1f} MiB"


# --- model shape, from the config alone -----------------------------------------------------------


def meta_model(config: PretrainedConfig) -> torch.nn.Module:
    """The model with every tensor on the meta device: shapes without memory or downloads."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def lora_trainable_params(config: PretrainedConfig, r: int, target_modules: list[str]) -> int:
    """Trainable parameters of a LoRA adapter, counted by PEFT itself on the meta model."""
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():  # PEFT calls a transformers method deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(
            meta_model(config), LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules))
        )
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def zero_model_states(n_params: int, n_gpus: int, stage: int, k: int = 12) -> float:
    """Bytes of model states per GPU under ZeRO: 2 (fp16 weights) + 2 (fp16 grads) + K
    (fp32 master weights and Adam moments: 12) per parameter; stage 1 partitions the optimizer
    states across GPUs, stage 2 the gradients too, stage 3 the weights too."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, not {stage}.")
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be at least 1, not {n_gpus}.")
    weights, grads, states = 2.0 * n_params, 2.0 * n_params, float(k) * n_params
    if stage >= 1:
        states /= n_gpus
    if stage >= 2:
        grads /= n_gpus
    if stage >= 3:
        weights /= n_gpus
    return weights + grads + states


@dataclass(frozen=True)
class _Shape:
    h: int
    kv: int  # key/value width: kv heads x head dim
    q: int  # query width: heads x head dim
    heads: int
    inter: int
    layers: int
    vocab: int
    head_dim: int

    @classmethod
    def of(cls, c: PretrainedConfig) -> _Shape:
        c = c.get_text_config()
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        return cls(
            c.hidden_size,
            kv_heads * head_dim,
            c.num_attention_heads * head_dim,
            c.num_attention_heads,
            c.intermediate_size,
            c.num_hidden_layers,
            c.vocab_size,
            head_dim,
        )


# --- activations -----------------------------------------------------------------------------------


def _stream_bytes(setup: TrainSetup) -> int:
    """Bytes per element of the residual stream: fp32 for an fp32 model (autocast included)."""
    fp32_model = setup.precision == "fp32" or (setup.precision == "mixed" and setup.method == "full")
    return 4 if fp32_model else 2


def _layer_bytes(s: _Shape, setup: TrainSetup, first: bool) -> float:
    """Bytes saved per token by one decoder layer, term by term, as PyTorch's kernels save them.

    A frozen linear layer keeps nothing for its own weight: autograd saves an input only when
    some gradient needs it. RMSNorm computes in fp32, so it keeps an fp32 copy of its input and
    1/rms whatever the model's dtype."""
    act = 4 if setup.precision == "fp32" else 2  # linear outputs: half under autocast or bf16
    stream = _stream_bytes(setup)
    full = setup.method == "full"
    targets = set() if full else set(setup.lora_targets)
    r, drop = setup.lora_r, setup.lora_dropout > 0

    # PEFT keeps adapters in fp32 and casts their input to fp32; on an fp32 base that input is
    # the same tensor for every adapter reading it, otherwise each adapter keeps its own copy.
    shared = setup.precision == "fp32" and not drop

    def kept_inputs(width: int, names: list[str], saved_anyway: bool = False, grad_in: bool = True) -> float:
        """Inputs kept for the weight gradients of the linear layers reading one tensor."""
        if full:
            return 0 if saved_anyway else width * act
        hit = [n for n in names if n in targets]
        if not hit:
            return 0
        if shared:
            return (0 if saved_anyway else width * act) + len(hit) * r * 4
        # Dropout keeps its output and, when the input needs a gradient, its mask (fp32 on the
        # CPU; CUDA's fused kernel keeps 1 byte per element).
        return len(hit) * (width * 4 + (width * 4 if drop and grad_in else 0) + r * 4)

    # Norm inputs and 1/rms; with LoRA (no checkpointing) nothing before the first adapter
    # needs a gradient, so the first norm keeps nothing.
    cold_start = first and not full and not setup.gradient_checkpointing
    b = (1 if cold_start else 2) * (s.h + 1) * 4
    if full:  # trainable norm weights keep the normalised input
        b += 2 * s.h * stream
    b += kept_inputs(s.h, ["q_proj", "k_proj", "v_proj"], grad_in=not cold_start)
    b += kept_inputs(s.h, ["gate_proj", "up_proj"])
    if setup.attn == "sdpa":  # q after rotary, k, v, the output (o_proj's input), a log-sum-exp per head
        b += (2 * s.q + 2 * s.kv) * act + s.heads * 4 + kept_inputs(s.q, ["o_proj"], saved_anyway=True)
    else:  # eager: k and v repeated to every head, the softmax matrix, a contiguous copy for o_proj
        kv = max(s.kv, s.q)
        b += (s.q + 2 * kv) * act + s.heads * setup.seq_len * act + kept_inputs(s.q, ["o_proj"])
    # SwiGLU: SiLU's input and output and the up projection; their product feeds down_proj.
    b += 3 * s.inter * act + kept_inputs(s.inter, ["down_proj"])
    return b


def _activation_bytes(s: _Shape, setup: TrainSetup) -> tuple[float, float, float, float]:
    """Bytes for the whole batch: (saved by the layers and final norm, extra peak of one
    recomputed layer under checkpointing, saved by the loss, the logits the model returns)."""
    tokens = setup.batch_size * setup.seq_len
    stream = _stream_bytes(setup)
    full = setup.method == "full"
    layers = [_layer_bytes(s, setup, first=(i == 0)) for i in range(s.layers)]
    if setup.gradient_checkpointing:
        saved, recompute = s.layers * s.h * stream, max(layers)  # layer inputs only
    else:
        saved, recompute = sum(layers), 0.0
    saved += (s.h + 1) * 4 + (2 * s.h * stream if full else 0)  # final norm
    saved += 8 if full else 0  # input ids, kept by a trainable embedding
    loss_saved = s.vocab * 4 + 8  # fp32 log-probabilities and the shifted int64 labels
    logits = s.vocab * (4 if setup.precision == "fp32" else 2)
    rotary = 2 * setup.seq_len * s.head_dim * 4  # cos and sin, shared by the batch and layers
    return saved * tokens + rotary, recompute * tokens, loss_saved * tokens, logits * tokens


# --- model states ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    """What the planner needs of one parameter tensor."""

    numel: int
    rows: int  # its first dimension (LLM.int8 keeps a scale per row)
    quantised: bool  # a decoder linear weight, which QLoRA stores in 4 or 8 bits


_PARAMETERS: dict[tuple, tuple[tuple[_Param, ...], tuple[_Param, ...]]] = {}


def _parameters(config: PretrainedConfig, lora: tuple[int, tuple[str, ...]] | None):
    """The base model's parameters and, for `lora` = (r, targets), the adapter's, read from the
    meta model and PEFT's wrapping of it. Cached: building a 70B meta model takes about a second,
    and a fit table plans each model many times."""
    key = (config.to_json_string(use_diff=False), lora)
    if key not in _PARAMETERS:
        model = meta_model(config)
        quantised = {
            id(m.weight)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in LINEAR_TARGETS
        }
        base = tuple(_Param(p.numel(), p.shape[0], id(p) in quantised) for p in model.parameters())
        adapter: tuple[_Param, ...] = ()
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            r, targets = lora
            with warnings.catch_warnings():  # PEFT calls a transformers method deprecated in v5
                warnings.simplefilter("ignore", FutureWarning)
                wrapped = get_peft_model(
                    model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets))
                )
            adapter = tuple(
                _Param(p.numel(), p.shape[0], False) for p in wrapped.parameters() if p.requires_grad
            )
        _PARAMETERS[key] = (base, adapter)
    return _PARAMETERS[key]


def _weight_bytes(params: tuple[_Param, ...], setup: TrainSetup) -> float:
    """Every parameter of the base model in its storage format; QLoRA quantises the decoder's
    linear layers (bitsandbytes keeps embeddings, norms and lm_head in the compute dtype)."""
    if setup.method == "full":
        dtype_bytes = 2 if setup.precision == "bf16" else 4
    else:  # a frozen base is loaded in half precision unless the run is fp32
        dtype_bytes = 4 if setup.precision == "fp32" else 2
    total = 0.0
    for p in params:
        if setup.method == "qlora" and p.quantised:
            if setup.quant_bits == 4:  # NF4 codes, a uint8 absmax per block, fp32 per 256 blocks
                blocks = math.ceil(p.numel / NF4_BLOCK)
                total += p.numel / 2 + blocks + 4 * math.ceil(blocks / NESTED_BLOCK)
            else:  # LLM.int8: int8 weights and an fp32 scale per output row
                total += p.numel + 4 * p.rows
        else:
            total += p.numel * dtype_bytes
    return total


def _optimizer_bytes(trainable: tuple[_Param, ...], optimizer: str, param_bytes: int) -> float:
    if optimizer == "sgd":  # one momentum buffer
        return float(sum(p.numel for p in trainable) * param_bytes)
    if optimizer == "adamw":  # exp_avg and exp_avg_sq in the parameter's dtype, a float32 step
        return float(sum(2 * p.numel * param_bytes + 4 for p in trainable))
    total = 2 * 256 * 4.0  # adamw_8bit: two shared fp32 quantisation maps
    for p in trainable:  # 1 byte per state and an fp32 absmax per block; small tensors stay fp32
        n = p.numel
        total += 2 * n + 2 * 4 * math.ceil(n / ADAM8_BLOCK) if n >= ADAM8_MIN_SIZE else 2 * n * 4
    return total


# Bytes per trainable parameter of fp32 master weights + optimizer states, for ZeRO's K.
ZERO_K = {"adamw": 12, "adamw_8bit": 6, "sgd": 8}


def plan_memory(config: PretrainedConfig, setup: TrainSetup = TrainSetup()) -> MemoryPlan:
    """Predicted training memory per GPU for `config` trained as `setup`. Loads no weights."""

    s = _Shape.of(config)
    lora = None if setup.method == "full" else (setup.lora_r, tuple(setup.lora_targets))
    base, adapter = _parameters(config, lora)
    n_params = sum(p.numel for p in base)
    base_weights = _weight_bytes(base, setup)
    if setup.method == "full":
        trainable = base
        param_bytes = 2 if setup.precision == "bf16" else 4
    else:
        trainable = adapter
        param_bytes = 4  # PEFT keeps adapter weights in fp32
    n_trainable = sum(p.numel for p in trainable)
    notes: list[str] = []

    if setup.zero_stage == 0:
        weights = base_weights + (n_trainable * 4 if setup.method != "full" else 0)
        if setup.method == "full" and setup.precision == "mixed":
            weights += 2 * n_params  # autocast's half copy of each weight, cached for the forward
            notes.append("mixed precision keeps fp32 weights and a half copy of each for the forward pass")
        gradients = float(n_trainable * param_bytes)
        optimizer = _optimizer_bytes(trainable, setup.optimizer, param_bytes)
    else:  # DeepSpeed: half weights and gradients, K bytes of fp32 states, partitioned by stage
        n, z = setup.n_gpus, setup.zero_stage
        frozen = base_weights if setup.method != "full" else 0.0
        weights = (frozen + 2.0 * n_trainable) / (n if z == 3 else 1)
        gradients = 2.0 * n_trainable / (n if z >= 2 else 1)
        optimizer = ZERO_K[setup.optimizer] * n_trainable / n
        if setup.method == "full":  # the paper's accounting, by its own function
            assert math.isclose(
                weights + gradients + optimizer, zero_model_states(n_trainable, n, z, ZERO_K[setup.optimizer])
            )
        if setup.offload:
            notes.append(
                f"offload: {_fmt(optimizer + gradients)} of optimizer states and gradients live in CPU RAM"
            )
            optimizer, gradients = 0.0, 0.0
    saved, recompute, loss_saved, logits = _activation_bytes(s, setup)
    return MemoryPlan(
        setup,
        n_params,
        n_trainable,
        weights,
        gradients,
        optimizer,
        activations=saved + recompute,
        logits=loss_saved + logits,
        saved_activations=saved + loss_saved,
        notes=tuple(notes),
    )


# --- the verdict -----------------------------------------------------------------------------------


class DoesNotFit(MemoryError):
    """Raised by check_fits before any weights load; the message lists changes that would fit."""


@dataclass(frozen=True)
class Verdict:
    needed: float
    usable: float  # device bytes less the headroom

    @property
    def fits(self) -> bool:
        return self.needed <= self.usable

    def __bool__(self) -> bool:
        return self.fits

    def __str__(self) -> str:
        return f"needs {_fmt(self.needed)} of {_fmt(self.usable)} usable: " + (
            f"fits, {_fmt(self.usable - self.needed)} to spare"
            if self.fits
            else f"{_fmt(self.needed - self.usable)} over"
        )


def verdict(plan: MemoryPlan, device_bytes: float) -> Verdict:
    return Verdict(plan.total, device_bytes * (1 - HEADROOM))


def _single_changes(setup: TrainSetup) -> list[TrainSetup]:
    """One change each, as a learner would make it in a config."""
    alts: list[TrainSetup] = []
    if not setup.gradient_checkpointing:
        alts.append(replace(setup, gradient_checkpointing=True))
    if setup.batch_size > 1:
        alts.append(replace(setup, batch_size=max(1, setup.batch_size // 2)))
    if setup.method == "full":
        alts.append(replace(setup, method="lora"))
    if setup.method != "qlora":
        alts.append(replace(setup, method="qlora", quant_bits=4))
    if setup.optimizer == "adamw":
        alts.append(replace(setup, optimizer="adamw_8bit"))
    if setup.n_gpus > 1:
        alts += [replace(setup, zero_stage=z, offload=False) for z in (2, 3) if z > setup.zero_stage]
    return alts


def _stacked_changes(setup: TrainSetup) -> list[TrainSetup]:
    """Changes stacked one after another, cheapest in lost speed or quality first."""
    steps = [
        lambda s: replace(s, gradient_checkpointing=True),
        lambda s: replace(s, method="lora") if s.method == "full" else s,
        lambda s: replace(s, method="qlora", quant_bits=4),
        lambda s: replace(s, optimizer="adamw_8bit") if s.optimizer == "adamw" else s,
    ]
    steps += [lambda s: replace(s, batch_size=max(1, s.batch_size // 2))] * max(
        1, setup.batch_size.bit_length()
    )
    out, current = [], setup
    for step in steps:
        current = step(current)
        if current != setup and (not out or current != out[-1]):
            out.append(current)
    return out


def _change(old: TrainSetup, new: TrainSetup) -> str:
    said = []
    for name in (
        "method",
        "quant_bits",
        "optimizer",
        "batch_size",
        "gradient_checkpointing",
        "zero_stage",
        "offload",
    ):
        a, b = getattr(old, name), getattr(new, name)
        if a != b and not (name == "quant_bits" and new.method != "qlora"):
            if name == "batch_size":
                said.append(
                    f"batch_size={b} with gradient_accumulation_steps={old.batch_size // b} (same effective batch)"
                )
            else:
                said.append(f"{name}={b}")
    return ", ".join(said)


def check_fits(plan: MemoryPlan, device_bytes: float, config: PretrainedConfig | None = None) -> Verdict:
    """The plan's verdict on a device of `device_bytes`. Raises DoesNotFit, saying by how much
    and which changes fit (planned again from `config` when given), before any weights load."""
    v = verdict(plan, device_bytes)
    if v.fits:
        return v
    msg = [f"{plan.setup.label} {v}. (Device {_fmt(device_bytes)}, {HEADROOM:.0%} kept free.)"]
    if config is not None:
        fitting = [(alt, plan_memory(config, alt)) for alt in _single_changes(plan.setup)]
        fitting = [(alt, p) for alt, p in fitting if verdict(p, device_bytes).fits]
        if not fitting:  # the first stack of changes that fits
            for alt in _stacked_changes(plan.setup):
                alt_plan = plan_memory(config, alt)
                if verdict(alt_plan, device_bytes).fits:
                    fitting = [(alt, alt_plan)]
                    break
        msg.append("Changes that fit:" if fitting else "Nothing fits; use a smaller model or a larger GPU.")
        msg += [f"  - {_change(plan.setup, alt)}: {_fmt(p.total)}" for alt, p in fitting]
    else:
        msg.append(
            "Try gradient_checkpointing=True, a smaller batch with gradient accumulation, LoRA or QLoRA, "
            "8-bit AdamW, or ZeRO-3 with offload (pass config= to check_fits for figures)."
        )
    raise DoesNotFit("\n".join(msg))


# --- reference architectures and counting real tensors ---------------------------------------------


def reference_configs() -> dict[str, LlamaConfig]:
    """Published shapes of well-known models (data/model_configs.json), as configs: no download."""
    specs = json.loads((course_root() / "data" / "model_configs.json").read_text())
    return {name: LlamaConfig(**spec) for name, spec in specs.items() if not name.startswith("_")}


def _unique_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if torch.is_tensor(t) and t.device.type != "meta":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def counted_model_states(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of weights, gradients and optimizer states, counted from the live tensors
    (unique storages; quantised weights include their quantisation state)."""
    weights = []
    for p in model.parameters():
        weights.append(p)
        if getattr(p, "SCB", None) is not None:  # LLM.int8 row scales
            weights.append(p.SCB)
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            weights += [
                qs.absmax,
                *([qs.state2.absmax] if getattr(qs, "nested", False) and qs.state2 is not None else []),
            ]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    states = [v for st in optimizer.state.values() for v in st.values()]
    return {
        "weights": _unique_bytes(weights),
        "gradients": _unique_bytes(grads),
        "optimizer": _unique_bytes(states),
    }


def counted_saved_activations(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[int, torch.Tensor]:
    """Bytes autograd saves for backward during one forward pass, parameters excluded (they are
    counted as weights), and the loss."""
    return saved_bytes(lambda: model(**batch).loss, exclude=model.parameters())


def kv_cache_bytes(config: PretrainedConfig, batch_size: int, seq_len: int, bytes_per_value: int = 2) -> int:
    """Bytes of the key/value cache after `seq_len` tokens: a key and a value vector per layer,
    per key/value head, per token. Grouped-query attention shares each kv head among
    num_attention_heads / num_key_value_heads query heads, and shrinks the cache by that factor."""
    s = _Shape.of(config)
    return 2 * s.layers * s.kv * seq_len * batch_size * bytes_per_value


def saved_bytes(fn, exclude=()) -> tuple[int, object]:
    """Bytes of the tensors autograd saves for backward while `fn()` runs, less those sharing
    storage with `exclude` (parameters, say), and fn's result: a layer's training memory, counted."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out
