"""Small pieces around TRL and PEFT that would clutter notebook 02 and later lessons.

quant = quantization_config(profile, bits=4)     # BitsAndBytesConfig, compute dtype from the profile
model = trainable_in_float32(peft_model)         # before fp16 training: what trains in float32
model = load_for_training(path, profile, bits=4) # guarded against the CPU 4-bit eval trap
render_label_mask(tokenizer, ids, labels)        # which tokens carry loss, in colour
token_batches(rows, lengths, max_tokens=4096)    # scoring batches that fit a GPU once padded
model = trained_model(trainer)                   # after train(): the model as saved and reloaded
release(trainer)                                 # keep its log and settings, free its model and optimizer
"""

from __future__ import annotations

import gc
import html
from collections.abc import Sequence
from typing import TypeVar

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedTokenizerBase

from helpers.packed_attention import padding_free_attention
from helpers.runtime import Profile

T = TypeVar("T")


def quantization_config(
    profile: Profile, bits: int = 4, skip_modules: list[str] | None = None
) -> BitsAndBytesConfig:
    """QLoRA's recipe: NF4 with double quantisation (or LLM.int8), computing in the profile's dtype.

    `skip_modules` stay in the profile's dtype. Name every module that trains whole (PEFT's
    modules_to_save): a quantised layer's packed integer weights cannot take gradients. Given a
    list, transformers no longer skips lm_head on its own, so name it too."""
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=profile.torch_dtype,
            llm_int8_skip_modules=skip_modules,
        )
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
    raise ValueError(f"bits must be 4 or 8, not {bits}")


def trainable_in_float32(model: torch.nn.Module) -> torch.nn.Module:
    """Every trainable weight in float32; frozen ones stay as loaded.

    Mixed precision keeps the weights it updates in float32: with float16 ones, the Trainer's
    gradient scaler stops at "Attempting to unscale FP16 gradients". PEFT upcasts LoRA's own
    layers, but a module it trains whole (modules_to_save) keeps the dtype it was loaded in."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def guard_4bit_on_cpu(model: torch.nn.Module) -> int:
    """Keep 4-bit layers trainable after an eval pass on CPUs with AVX512-BF16.

    bitsandbytes switches a Linear4bit to a packed inference layout on its first no-grad
    forward on such CPUs; backward then runs through a kernel without autograd and LoRA
    gradients come out silently wrong (see ../shared/CPU-NOTES.md). Returns the layers guarded."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def load_for_training(
    path: str, profile: Profile, bits: int | None = None, padding_free: bool = False
) -> torch.nn.Module:
    """The model at `path` in the profile's dtype, quantised to `bits` (4 or 8) for QLoRA; with
    `padding_free`, its attention stays within each sequence of a packed row (helpers.packed_attention).

    Says plainly when bitsandbytes cannot quantise here, instead of failing deep inside it."""
    attention = profile.attn_implementation
    if padding_free:
        attention = padding_free_attention(attention)
    if bits is None:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=profile.torch_dtype, attn_implementation=attention
        ).to(profile.device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            quantization_config=quantization_config(profile, bits),
            dtype=profile.torch_dtype,
            device_map=profile.device,
            attn_implementation=attention,
        )
    except (ImportError, RuntimeError, ValueError) as err:
        raise RuntimeError(
            f"bitsandbytes could not load {path} in {bits}-bit on {profile.device}: {err}\n"
            "QLoRA needs a CUDA GPU or bitsandbytes' CPU backend; train with plain LoRA instead."
        ) from err
    if profile.device == "cpu":
        guard_4bit_on_cpu(model)
    return model


def label_mask_rows(
    tokenizer: PreTrainedTokenizerBase, input_ids: list[int], labels: list[int]
) -> list[tuple[str, bool]]:
    """(token text, trained?) for each position: a position is trained when its label is not -100."""
    return [(tokenizer.decode([i]), lab != -100) for i, lab in zip(input_ids, labels)]


def render_label_mask(tokenizer: PreTrainedTokenizerBase, input_ids: list[int], labels: list[int]) -> str:
    """HTML: trained tokens on green, masked ones grey, newlines kept."""
    spans = []
    for text, trained in label_mask_rows(tokenizer, input_ids, labels):
        colour = "#b7e4c7" if trained else "#e9ecef"
        shown = html.escape(text).replace("\n", "↵<br>")
        spans.append(
            f'<span style="background:{colour};border:1px solid #ccc;margin:1px;padding:0 2px;'
            f'font-family:monospace">{shown}</span>'
        )
    legend = (
        '<div><span style="background:#b7e4c7">trained (carries loss)</span> '
        '<span style="background:#e9ecef">masked (label -100)</span></div>'
    )
    return legend + "<div style='line-height:1.9'>" + "".join(spans) + "</div>"


def ensure_training_template(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a ChatML tokenizer (SmolLM2, the tiny models) a template with `{% generation %}`
    markers, which TRL's `assistant_only_loss=True` needs to find the assistant's tokens."""
    from helpers.tiny.tokenizer import CHAT_TEMPLATE

    template = tokenizer.chat_template or ""
    if "{% generation %}" in template or "{%- generation %}" in template:
        return tokenizer
    # A ChatML template, or none at all on a base model whose vocabulary has the ChatML tokens.
    if "<|im_start|>" in template or (not template and "<|im_start|>" in tokenizer.get_vocab()):
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.eos_token = "<|im_end|>"  # each trained answer ends with it; generation stops there
        return tokenizer
    raise ValueError(
        "This tokenizer's chat template has no {% generation %} markers, so assistant-only loss "
        "cannot find the answer tokens. Use trl.get_training_chat_template(tokenizer) or write one."
    )


def token_batches(
    items: Sequence[T], lengths: Sequence[int], max_tokens: int, max_items: int | None = None
) -> list[list[T]]:
    """Consecutive items, as many per batch as fit `max_tokens` once padded to the longest (at
    least one), and at most `max_items`. Scoring a hub set's long tail in fixed batches of rows puts
    rows x longest x vocabulary logits on the GPU at once; a token budget bounds that whatever the
    lengths."""
    batches: list[list[T]] = []
    width = 0
    for item, length in zip(items, lengths, strict=True):
        room = batches and (max_items is None or len(batches[-1]) < max_items)
        if room and max(width, length) * (len(batches[-1]) + 1) <= max_tokens:
            batches[-1].append(item)
            width = max(width, length)
        else:
            batches.append([item])
            width = length
    return batches


def trained_model(trainer) -> torch.nn.Module:
    """The trainer's model in eval mode without accelerate's mixed-precision wrapper.

    With fp16 or bf16 on, accelerate wraps the model's forward in autocast for training and
    leaves it there: after `train()` the model still computes in half precision, while the same
    weights saved and reloaded compute in float32 (tests/test_training.py measures the gap)."""
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()


def release(trainer) -> None:
    """Free what a finished trainer holds on the device: its model, a reference model and the
    optimizer's states; keep its settings (`args`) and log (`state.log_history`).

    A Trainer keeps its optimizer after `train()`, and accelerate keeps references to the model
    and optimizer it prepared. A lesson that runs several trainers one after another then holds
    every earlier model with AdamW's two states: for a 1.7B model in float32, 27 GB each. Its
    callbacks' handler holds the model and optimizer too."""
    trainer.accelerator.free_memory()
    for holder in (trainer, trainer.callback_handler):
        # ref_model: DPO's and GRPO's frozen copy; reward_funcs: GRPO's reward models among them
        for name in ("model", "model_wrapped", "ref_model", "reward_funcs", "optimizer", "lr_scheduler"):
            if hasattr(holder, name):
                setattr(holder, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
