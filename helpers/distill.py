"""Knowledge distillation plumbing: vocabulary checks, cached top-k teacher logits, batching.

The distillation loss itself is written out in notebook 05, where a learner can read and change
it; this module keeps what would clutter the lesson: tokenising chats with their loss masks,
running the teacher once over the training set, saving its top-k logits with safetensors, and
handing each batch the teacher's slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import DataCollatorWithFlattening, PreTrainedModel, PreTrainedTokenizerBase

from helpers.training import token_batches


class VocabularyMismatch(ValueError):
    """Teacher and student tokenizers disagree: their logits are over different token sets."""


def check_same_vocab(teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase) -> int:
    """Return the shared vocabulary size, or raise VocabularyMismatch saying where they differ.

    Logit distillation compares the two models' distributions position by position and token by
    token, so token i must be the same string for both."""
    t_vocab, s_vocab = teacher.get_vocab(), student.get_vocab()
    if t_vocab == s_vocab:
        return len(t_vocab)
    t_ids = {i: tok for tok, i in t_vocab.items()}
    s_ids = {i: tok for tok, i in s_vocab.items()}
    differ = [i for i in sorted(set(t_ids) | set(s_ids)) if t_ids.get(i) != s_ids.get(i)]
    examples = ", ".join(f"id {i}: teacher {t_ids.get(i)!r} vs student {s_ids.get(i)!r}" for i in differ[:3])
    raise VocabularyMismatch(
        f"teacher and student tokenizers differ ({len(t_vocab):,} vs {len(s_vocab):,} tokens, "
        f"{len(differ):,} ids map to different strings; {examples}). Logit distillation needs one "
        "vocabulary: pick a teacher and student of the same family (e.g. SmolLM2-1.7B and "
        "SmolLM2-135M), or distil at sequence level (train the student on the teacher's generated "
        "text), which works across tokenizers."
    )


def chat_features(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[list[dict]], max_length: int
) -> list[dict[str, list[int]]]:
    """input_ids and labels (-100 outside the assistant's turns) for each conversation, cut at
    max_length. Rows whose answers were cut away entirely are dropped."""
    out = []
    for messages in conversations:
        enc = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = enc["input_ids"][:max_length]
        mask = enc["assistant_masks"][:max_length]
        labels = [t if m else -100 for t, m in zip(ids, mask)]
        if any(m for m in mask[1:]):  # position 0 is never predicted
            out.append({"input_ids": ids, "labels": labels})
    return out


def pad_batch(features: Sequence[dict[str, list[int]]], pad_id: int | None) -> dict[str, torch.Tensor]:
    """Right-pad input_ids (with pad_id) and labels (with -100); attention_mask marks real tokens.

    pad_id may be None: some base tokenizers (SmolLM2's) ship without a pad token, and the
    attention mask and the -100 labels hide padding whatever its id, so 0 stands in."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), 0 if pad_id is None else pad_id)
    labels = torch.full((len(features), width), -100)
    attention = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        attention[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


def trained_positions(labels: torch.Tensor) -> torch.Tensor:
    """Where the logits predict a trained token: logits[:, :-1][mask] lines up with labels[:, 1:][mask]."""
    return labels[:, 1:] != -100


@torch.no_grad()
def teacher_topk(
    model: PreTrainedModel, features: Sequence[dict], k: int, pad_id: int | None, max_tokens: int = 8192
) -> dict[str, torch.Tensor]:
    """The teacher's k largest logits at every trained position, in row order, in batches of at
    most `max_tokens` padded tokens (the logits of one batch are tokens x vocabulary).

    Returns `values` (n_positions, k) float16, `indices` (n_positions, k) int32 and `offsets`
    (n_rows + 1): row r owns positions offsets[r]:offsets[r+1]."""
    model.eval()
    # Rows of similar length batched together: in data order, a batch pads every row to its
    # longest, and on notebook 05's prompts four positions in five were padding.
    lengths = [len(f["input_ids"]) for f in features]
    order = sorted(range(len(features)), key=lengths.__getitem__)
    per_row: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for rows in token_batches(order, [lengths[r] for r in order], max_tokens):
        batch = pad_batch([features[r] for r in rows], pad_id)
        logits = model(
            input_ids=batch["input_ids"].to(model.device),
            attention_mask=batch["attention_mask"].to(model.device),
        ).logits
        mask = trained_positions(batch["labels"]).to(logits.device)
        for r, row_logits, row_mask in zip(rows, logits[:, :-1], mask):
            top = row_logits[row_mask].float().topk(k, dim=-1)
            per_row[r] = (top.values.half().cpu(), top.indices.int().cpu())
    values, indices = zip(*(per_row[r] for r in range(len(features))))
    offsets = torch.tensor([0] + [len(v) for v in values]).cumsum(0)
    return {"values": torch.cat(values), "indices": torch.cat(indices), "offsets": offsets}


def save_topk(
    topk: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in topk.items()}, str(path), metadata=metadata)
    return path


def load_topk(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def logit_storage_bytes(
    n_positions: int, vocab_size: int, k: int, value_bytes: int = 2, index_bytes: int = 4
) -> dict[str, int]:
    """Bytes to cache the teacher's logits at n_positions: the full distribution vs top-k."""
    return {
        "full": n_positions * vocab_size * value_bytes,
        "top_k": n_positions * k * (value_bytes + index_bytes),
    }


flatten = DataCollatorWithFlattening(return_tensors="pt")


class TopkCollator:
    """Pads a batch (or packs it, `packed=True`) and attaches the teacher's cached top-k for
    exactly its trained positions.

    Each feature carries its row number (`row`) into the cache; the slices are concatenated in
    batch order, which is the order of logits[:, :-1][trained_positions(labels)]."""

    def __init__(self, topk: dict[str, torch.Tensor], pad_id: int | None, packed: bool = False):
        self.topk, self.pad_id, self.packed = topk, pad_id, packed

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        # packed: transformers' padding-free collator, one row with position ids restarting at each
        # sequence and each sequence's first label -100 (notebook 07)
        batch = flatten(features) if self.packed else pad_batch(features, self.pad_id)
        off = self.topk["offsets"]
        rows = [int(f["row"]) for f in features]
        batch["teacher_values"] = torch.cat([self.topk["values"][off[r] : off[r + 1]] for r in rows]).float()
        batch["teacher_indices"] = torch.cat([self.topk["indices"][off[r] : off[r + 1]] for r in rows]).long()
        expected = int(trained_positions(batch["labels"]).sum())
        if batch["teacher_values"].shape[0] != expected:
            raise ValueError(
                f"the teacher cache has {batch['teacher_values'].shape[0]} positions for this batch but "
                f"the labels train {expected}: the cache was made from other rows or another max_length; "
                "delete it and run the caching cell again"
            )
        return batch
