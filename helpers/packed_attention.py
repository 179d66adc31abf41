"""Attention for padding-free batches without a FlashAttention kernel: each sequence on its own.

    from helpers.packed_attention import NAME, register
    register()
    SFTConfig(padding_free=True, model_init_kwargs={"attn_implementation": NAME}, ...)

A padding-free batch is one row: every sequence of the batch concatenated. FlashAttention 2
attends within each sequence from their boundaries (cu_seq_lens). SDPA cannot: transformers gives
it a block-diagonal mask over the whole row, T x T for T tokens, so a batch of eight 400-token
rows costs as much attention as one 3,200-token row, eight times the work. Registered under
transformers' AttentionInterface, `sequence_sdpa` splits the row at the boundaries TRL's collator
passes (`cu_seq_lens_q`) and runs causal SDPA on each sequence, with no mask built.

On a CPU it also computes attention in float32 under bf16 autocast: PyTorch's bf16 flash-attention
kernel for the CPU ran about 5x slower than its float32 one at these sizes (0.2 ms vs 1.1 ms
forward and backward for 8 x 4 heads x 28 tokens, measured on a 2-core AVX512-BF16 Xeon), while
the linear layers gain from bf16. Batches with padding (an attention mask) and generation fall
through to transformers' own SDPA path. Used by notebooks 02, 05, 06 and 07 and `make bench`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "sdpa_per_sequence"


def _boundaries(cu_seq_lens_q, position_ids, length: int) -> list[int] | None:
    """Sequence lengths in a packed row, from TRL's cu_seq_lens or else from restarting position ids."""
    if cu_seq_lens_q is not None:
        return cu_seq_lens_q.diff().tolist()
    if position_ids is None or position_ids.shape[0] != 1:
        return None
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if starts[:1] != [0] or len(starts) == 1:
        return None  # one sequence: plain causal attention is already right
    return torch.tensor([*starts, length]).diff().tolist()


def sequence_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, heads, T, head_dim)
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    lengths = None
    causal = kwargs.get("is_causal", getattr(module, "is_causal", True))
    if causal and query.shape[0] == 1 and query.shape[2] > 1 and attention_mask is None:
        lengths = _boundaries(cu_seq_lens_q, position_ids, query.shape[2])
    if lengths is None:  # padded batches, one sequence, generation: transformers' SDPA
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    cpu = query.device.type == "cpu"
    dtype = torch.float32 if cpu else query.dtype
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    with torch.autocast(query.device.type, enabled=not cpu):
        outputs = [
            F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scaling, dropout_p=dropout, enable_gqa=gqa
            )
            for q, k, v in zip(*(x.to(dtype).split(lengths, 2) for x in (query, key, value)))
        ]
    # attention functions return (B, T, heads, head_dim)
    return torch.cat(outputs, 2).to(query.dtype).transpose(1, 2), None


def _mask_unless_one_row(batch_size: int, q_length: int, kv_length: int, **kwargs):
    # One row, no padding, no cache: nothing to mask beyond causality, which sequence_sdpa applies
    # per sequence; building the T x T block-diagonal mask is what it avoids. Else SDPA's mask.
    if batch_size == 1 and q_length == kv_length and kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, **kwargs)


def padding_free_attention(attn_implementation: str) -> str:
    """The attention for padding-free batches given a profile's: FlashAttention 2 attends within
    each sequence already; anything else gets NAME (registered here)."""
    return attn_implementation if attn_implementation == "flash_attention_2" else register()


def register() -> str:
    """Make `attn_implementation=NAME` available to from_pretrained (and SFTConfig's
    model_init_kwargs) in this process; returns NAME."""
    AttentionInterface.register(NAME, sequence_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _mask_unless_one_row)
    return NAME
