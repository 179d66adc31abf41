"""The tiny tokenizer's chat template marks exactly the assistant answers for the loss."""

import pytest

from helpers.tiny import world
from helpers.tiny.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(world.pretraining_text(400), vocab_size=600)


def test_only_assistant_tokens_and_their_end_token_are_marked(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What number comes after 41?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "Is 7 even or odd?"},
        {"role": "assistant", "content": "odd"},
    ]
    enc = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    marked = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(marked) == "42<|im_end|>odd<|im_end|>"
    # Every unmarked token belongs to the prompt side: system, user, role headers, newlines.
    unmarked = tok.decode([i for i, m in zip(ids, mask) if not m])
    assert "Be brief." in unmarked and "after 41" in unmarked and "42" not in unmarked


def test_generation_prompt_opens_an_assistant_turn(tok):
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"


def test_digits_are_single_tokens_and_any_script_encodes_losslessly(tok):
    assert tok.tokenize("1234") == ["1", "2", "3", "4"]
    for text in ("สวัสดีครับ", "Xin chào", "سلام دنیا"):
        assert tok.decode(tok(text)["input_ids"]) == text
