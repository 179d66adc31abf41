"""Batched greedy replies from a chat model, for before/after comparisons.

Used by notebooks 00, 02, 04, 05 and by helpers.tiny.build to measure the SFT gain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

Conversation = list[dict[str, str]]


def _stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    return sorted(set(ids) | {tokenizer.eos_token_id} - {None})


@torch.no_grad()
def generate_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    max_new_tokens: int = 48,
    batch_size: int = 64,
) -> list[str]:
    """The assistant's next reply to each conversation, decoded greedily (reproducible)."""
    if tokenizer.pad_token is None:  # some hub tokenizers ship without one; batching needs it
        tokenizer.pad_token = tokenizer.eos_token
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge of each row
    was_training = model.training
    model.eval()
    replies: list[str] = []
    try:
        for start in range(0, len(conversations), batch_size):
            batch = tokenizer.apply_chat_template(
                list(conversations[start : start + batch_size]),
                add_generation_prompt=True,
                padding=True,
                return_tensors="pt",
                return_dict=True,
            ).to(model.device)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                # Stop at the tokenizer's end of turn too: a base model's config may name another.
                eos_token_id=_stop_ids(model, tokenizer),
            )
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            replies += [r.strip() for r in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return replies
