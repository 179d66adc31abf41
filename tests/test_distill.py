"""helpers.distill: vocabulary check, loss masks, the cached top-k teacher logits and their batching."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.distill import (
    TopkCollator,
    VocabularyMismatch,
    chat_features,
    check_same_vocab,
    load_topk,
    logit_storage_bytes,
    pad_batch,
    save_topk,
    teacher_topk,
    trained_positions,
)
from helpers.packed_attention import padding_free_attention
from helpers.registry import models_for
from helpers.tiny.build import ensure_built
from helpers.tiny.tokenizer import train_tokenizer
from helpers.training import ensure_training_template

CHATS = [
    [
        {"role": "user", "content": "What is the first letter of c a t?"},
        {"role": "assistant", "content": "c"},
    ],
    [
        {"role": "system", "content": "Answer with the result only."},
        {"role": "user", "content": "What number comes after 41?"},
        {"role": "assistant", "content": "42"},
    ],
    [{"role": "user", "content": "Reverse the word l a m p."}, {"role": "assistant", "content": "p m a l"}],
]


@pytest.fixture(scope="module")
def base():
    ensure_built(["tiny-base"])
    path = models_for("tiny")["base"]
    return AutoModelForCausalLM.from_pretrained(path), ensure_training_template(
        AutoTokenizer.from_pretrained(path)
    )


def test_same_vocabulary_passes_and_a_different_one_says_why(base):
    _, tokenizer = base
    assert check_same_vocab(tokenizer, tokenizer) == len(tokenizer.get_vocab())
    other = train_tokenizer(["a small corpus of words", "with other merges"] * 50, vocab_size=300)
    with pytest.raises(VocabularyMismatch, match="same family|sequence level"):
        check_same_vocab(tokenizer, other)


def test_chat_features_train_only_the_answers(base):
    _, tokenizer = base
    features = chat_features(tokenizer, CHATS, max_length=256)
    assert len(features) == 3
    for f, chat in zip(features, CHATS):
        trained = [t for t, lab in zip(f["input_ids"], f["labels"]) if lab != -100]
        text = tokenizer.decode(trained)
        assert chat[-1]["content"] in text and chat[0]["content"] not in text
    # A row cut before its answer has nothing to train and is dropped.
    assert chat_features(tokenizer, CHATS[:1], max_length=4) == []


def test_topk_cache_round_trips_and_lines_up_with_each_batch(base, tmp_path):
    model, tokenizer = base
    features = chat_features(tokenizer, CHATS, max_length=256)
    longest = max(len(f["input_ids"]) for f in features)
    topk = teacher_topk(model, features, k=4, pad_id=tokenizer.pad_token_id, max_tokens=2 * longest)
    one_by_one = teacher_topk(model, features, k=4, pad_id=tokenizer.pad_token_id, max_tokens=1)
    assert torch.equal(topk["indices"], one_by_one["indices"]) and torch.equal(
        topk["offsets"], one_by_one["offsets"]
    )
    n_trained = sum(sum(lab != -100 for lab in f["labels"][1:]) for f in features)
    assert topk["values"].shape == (n_trained, 4) and topk["offsets"][-1] == n_trained
    assert torch.all(topk["values"][:, :-1] >= topk["values"][:, 1:])  # sorted, largest first
    loaded = load_topk(save_topk(topk, tmp_path / "topk.safetensors"))
    assert all(torch.equal(loaded[k], topk[k]) for k in topk)

    # Rows in another order: the collator still hands each position its own teacher logits.
    collate = TopkCollator(loaded, tokenizer.pad_token_id)
    batch = collate([dict(features[2], row=2), dict(features[0], row=0)])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    student_top = logits[:, :-1][trained_positions(batch["labels"])].topk(4, dim=-1)
    assert torch.equal(student_top.indices, batch["teacher_indices"])  # same model: same top-k
    assert torch.allclose(student_top.values, batch["teacher_values"], atol=1e-2)  # fp16 cache

    with pytest.raises(ValueError, match="cache"):
        collate([dict(features[1], row=0)])  # a row pointing at another row's slice


def test_storage_arithmetic():
    sizes = logit_storage_bytes(n_positions=1000, vocab_size=49152, k=16)
    assert sizes == {"full": 1000 * 49152 * 2, "top_k": 1000 * 16 * 6}


def test_pad_batch_without_a_pad_token_masks_the_padding():
    """SmolLM2's base tokenizer has no pad token: pad_id None must still give a usable batch."""
    features = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = pad_batch(features, None)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert pad_batch(features, 2)["input_ids"][1].tolist() == [8, 2, 2]


def test_a_packed_batch_trains_as_the_padded_one(base):
    """Notebook 05's students train on padding-free rows: same loss, same teacher slices, fewer tokens."""
    model, tokenizer = base
    packed_model = AutoModelForCausalLM.from_pretrained(
        models_for("tiny")["base"], attn_implementation=padding_free_attention("sdpa")
    )
    assert padding_free_attention("flash_attention_2") == "flash_attention_2"
    features = chat_features(tokenizer, CHATS, max_length=256)
    topk = teacher_topk(model, features, k=4, pad_id=tokenizer.pad_token_id)
    rows = [dict(features[i], row=i) for i in (2, 0, 1)]
    padded = TopkCollator(topk, tokenizer.pad_token_id)(rows)
    packed = TopkCollator(topk, tokenizer.pad_token_id, packed=True)(rows)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features))
    assert "attention_mask" not in packed and packed["position_ids"][0].tolist().count(0) == 3
    for key in ("teacher_values", "teacher_indices"):
        assert torch.equal(padded[key], packed[key])
    loss = {}
    for name, batch, m in (("padded", padded, model), ("packed", packed, packed_model)):
        inputs = {k: v for k, v in batch.items() if not k.startswith("teacher_")}
        with torch.no_grad():
            out = m(**inputs)
        loss[name] = out.loss
        top = out.logits[:, :-1][trained_positions(batch["labels"])].topk(4, dim=-1).indices
        assert torch.equal(top, batch["teacher_indices"])  # each position lines up with its slice
    assert torch.allclose(loss["padded"], loss["packed"], atol=1e-5)
    # A packed row never learns to predict one sequence from the one before it: each first label is -100.
    starts = (packed["position_ids"][0] == 0).nonzero().flatten()
    assert torch.all(packed["labels"][0, starts] == -100)
