"""Batched greedy and sampled replies from a chat model, for before/after comparisons, and a base
model's plain-text completions.

Used by notebooks 00, 02, 04, 05, 09 and by helpers.tiny.build to measure the SFT gain; notebook 09
also samples several replies per question (pass@k).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.training import token_batches

Conversation = list[dict[str, str]]


def _stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    return sorted(set(ids) | {tokenizer.eos_token_id} - {None})


def _cache_keeps_adapter(model: PreTrainedModel) -> bool:
    """False for a PEFT prefix- or prompt-tuned model: with the KV cache on, its generate() returns
    the base model's tokens, the virtual tokens dropped (measured: peft 0.21, transformers 5.25; its forward
    pass does use them). Without the cache each step recomputes the whole sequence, prefix included."""
    config = getattr(model, "active_peft_config", None)
    return not getattr(config, "is_prompt_learning", False)


def _generate(model: PreTrainedModel, batch, **kwargs) -> torch.Tensor:
    if _cache_keeps_adapter(model):
        return model.generate(**batch, **kwargs)
    try:
        return model.generate(**batch, use_cache=False, **kwargs)
    except RuntimeError as err:  # older peft and transformers cannot run a prefix without the cache
        warnings.warn(
            f"generating without the KV cache failed ({str(err).splitlines()[0]}); with it, these replies "
            "may be the base model's, without the prefix: upgrade peft and transformers",
            stacklevel=3,
        )
        return model.generate(**batch, **kwargs)


# Every row of a batch is left-padded to its longest prompt, and each new token attends over that
# width: one 2,700-token chat among 63 short ones makes the batch cost as much as 64 long ones. On
# 600 of notebook 05's training prompts (one torch thread): 34 s in batches of 64, 8 s under this
# cap, the same replies. Held-out questions (under 30 tokens on tiny) still go 64 at a time.
MAX_PROMPT_TOKENS = 4096


def _prompt_length(tokenizer: PreTrainedTokenizerBase, item) -> int:
    if isinstance(item, str):
        return len(tokenizer(item)["input_ids"])
    encoded = tokenizer.apply_chat_template(item, add_generation_prompt=True, tokenize=True, return_dict=True)
    return len(encoded["input_ids"])


@torch.no_grad()
def _replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation] | Sequence[str],
    batch_size: int,
    skip_special_tokens: bool = True,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    **generate_kwargs,
) -> list[str]:
    """Decoded new text of model.generate over batches of conversations (or plain-text prompts),
    num_return_sequences per item in a row; the tokenizer's padding side and the model's mode are
    restored. A batch holds at most batch_size items and max_prompt_tokens padded prompt tokens."""
    if tokenizer.pad_token is None:  # some hub tokenizers ship without one; batching needs it
        tokenizer.pad_token = tokenizer.eos_token
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge of each row
    was_training = model.training
    model.eval()
    replies: list[str] = []
    try:
        lengths = [_prompt_length(tokenizer, c) for c in conversations]
        for items in token_batches(list(conversations), lengths, max_prompt_tokens, max_items=batch_size):
            if isinstance(items[0], str):  # plain text, continued as it stands
                batch = tokenizer(items, padding=True, return_tensors="pt").to(model.device)
            else:
                batch = tokenizer.apply_chat_template(
                    items, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
                ).to(model.device)
            out = _generate(
                model,
                batch,
                pad_token_id=tokenizer.pad_token_id,
                # Stop at the tokenizer's end of turn too: a base model's config may name another.
                eos_token_id=_stop_ids(model, tokenizer),
                **generate_kwargs,
            )
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            replies += [
                r.strip() for r in tokenizer.batch_decode(new_tokens, skip_special_tokens=skip_special_tokens)
            ]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return replies


def generate_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    max_new_tokens: int = 48,
    batch_size: int = 64,
) -> list[str]:
    """The assistant's next reply to each conversation, decoded greedily (reproducible)."""
    return _replies(
        model, tokenizer, conversations, batch_size, max_new_tokens=max_new_tokens, do_sample=False
    )


def complete_lines(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    batch_size: int = 64,
) -> list[str]:
    """The first line a model writes after each plain-text prompt, decoded greedily: how to ask a
    base model in the format of its pretraining text (a question, a newline, the answer's line)."""
    texts = _replies(
        model,
        tokenizer,
        prompts,
        batch_size,
        skip_special_tokens=False,
        max_new_tokens=max_new_tokens,
        do_sample=False,
    )
    # A line ends at a newline or at a special token (a base model may close its document and go on).
    ends = ["\n", *(t for t in tokenizer.all_special_tokens if t != tokenizer.pad_token)]
    lines = []
    for text in texts:
        cut = min([text.find(e) for e in ends if e in text], default=len(text))
        lines.append(text[:cut].strip())
    return lines


def sample_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    k: int,
    temperature: float = 1.0,
    max_new_tokens: int = 24,
    batch_size: int = 64,
    seed: int = 0,
) -> list[list[str]]:
    """k replies to each conversation, sampled at `temperature` from the full distribution (no top-k
    or top-p cut, as GRPO samples by default). Seeds torch's generator, so a rerun draws the same."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    torch.manual_seed(seed)
    flat = _replies(
        model,
        tokenizer,
        conversations,
        batch_size,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        num_return_sequences=k,
    )
    return [flat[i : i + k] for i in range(0, len(flat), k)]
