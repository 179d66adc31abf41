"""helpers.generation: batches capped in padded prompt tokens, replies unchanged."""

import warnings

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.data import task_set
from helpers.generation import _prompt_length, generate_replies, sample_replies
from helpers.registry import models_for
from helpers.tiny.build import ensure_built
from helpers.training import token_batches


@pytest.fixture(scope="module")
def chat():
    ensure_built(["tiny-chat"])
    path = models_for("tiny")["chat"]
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def conversations() -> list:
    short = [r["messages"][:-1] for r in task_set(6)]
    long = [{"role": "user", "content": " ".join(["word"] * 300) + " What is the first letter of c a t?"}]
    return short[:3] + [long] + short[3:]


def test_batches_keep_order_and_cap_rows_and_padded_tokens(chat):
    _, tokenizer = chat
    items = conversations()
    lengths = [_prompt_length(tokenizer, c) for c in items]
    assert lengths[3] > 256 > max(lengths[:3] + lengths[4:])
    batches = token_batches(items, lengths, max_tokens=256, max_items=64)
    assert [c for b in batches for c in b] == items  # every item once, in order
    assert [len(b) for b in batches] == [3, 1, 3]  # the long prompt goes alone
    assert [len(b) for b in token_batches(items, lengths, 10**6, max_items=2)] == [2, 2, 2, 1]
    assert _prompt_length(tokenizer, "a b c") == len(tokenizer("a b c")["input_ids"])


def test_capped_batches_give_the_same_replies(chat):
    model, tokenizer = chat
    items = conversations()
    one_batch = generate_replies(model, tokenizer, items, max_new_tokens=8)
    from helpers import generation

    alone = generation._replies(
        model, tokenizer, items, 64, max_prompt_tokens=1, max_new_tokens=8, do_sample=False
    )
    assert alone == one_batch and len(one_batch) == len(items)
    # sampling: k replies per item, in the items' order, whatever the batches
    k = sample_replies(model, tokenizer, items[:2], k=3, max_new_tokens=4)
    assert len(k) == 2 and all(len(r) == 3 for r in k)


def test_a_prefix_tuned_model_generates_with_its_prefix(chat):
    """peft drops the virtual tokens from generate() when the KV cache is on; generate_replies must
    not: its greedy replies are those of a forward pass over the whole sequence, prefix included."""
    import torch
    from peft import PrefixTuningConfig, get_peft_model

    model, tokenizer = chat
    items = conversations()[:3]
    plain = generate_replies(model, tokenizer, items, max_new_tokens=6)
    fresh = AutoModelForCausalLM.from_pretrained(models_for("tiny")["chat"])  # the fixture's stays plain
    tuned = get_peft_model(fresh, PrefixTuningConfig(num_virtual_tokens=8, task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in tuned.prompt_encoder.parameters():
            weight.copy_(3 * torch.randn_like(weight))  # a prefix that changes every reply
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with_prefix = generate_replies(tuned, tokenizer, items, max_new_tokens=6)
    if any("without the KV cache failed" in str(w.message) for w in caught):
        pytest.skip("these peft and transformers versions cannot generate with a prefix and no cache")
    assert with_prefix != plain
    # the first greedy token of each reply, from a forward pass with the prefix (one row, no padding)
    tuned.eval()
    firsts = []
    for item in items:
        ids = tokenizer.apply_chat_template(
            item, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            firsts.append(tokenizer.decode(tuned(**ids).logits[0, -1].argmax()).strip())
    assert all(r.startswith(f) for r, f in zip(with_prefix, firsts)), (with_prefix, firsts)
