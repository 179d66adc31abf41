"""GGUF export through llama.cpp's own converters: a tokenizer llama.cpp does not know is refused
with the fix in the message, a declared pre-tokenizer gives the tokenizer's own ids and
transformers' greedy answers, and quantisation names its types."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import shipping
from helpers.data import task_set
from helpers.generation import generate_replies
from helpers.runtime import get_profile


@pytest.fixture(scope="module")
def chat():
    return get_profile().models["chat"]


@pytest.fixture(scope="module")
def gguf(chat, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "chat-f32.gguf"
    return shipping.to_gguf(chat, out, pre_tokenizer="smollm")


def test_an_unknown_tokenizer_is_refused_with_the_fix(chat, tmp_path):
    with pytest.raises(RuntimeError, match="pre_tokenizer='smollm'"):
        shipping.to_gguf(chat, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() or (tmp_path / "x.gguf").stat().st_size == 0


def test_the_gguf_tokenizes_and_answers_as_transformers(chat, gguf):
    tokenizer = AutoTokenizer.from_pretrained(chat)
    model = AutoModelForCausalLM.from_pretrained(chat, dtype=torch.float32)
    questions = [r["messages"][:-1] for r in task_set(24)]
    prompts = [
        tokenizer.apply_chat_template(q, add_generation_prompt=True, tokenize=False) for q in questions
    ]
    llm = shipping.load_gguf(gguf, logits_all=True)
    try:
        for text in prompts + ["digits 0123456789 and  spaces\n\n"]:
            assert (
                llm.tokenize(text.encode(), add_bos=False, special=True)
                == tokenizer(text, add_special_tokens=False)["input_ids"]
            )
        assert shipping.greedy_replies(llm, prompts) == generate_replies(
            model, tokenizer, questions, max_new_tokens=32
        )
        ids = tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            reference = model(torch.tensor([ids])).logits[0].numpy()
        assert abs(shipping.prompt_logits(llm, ids) - reference).max() < 0.05
    finally:
        llm.close()


def test_quantize_makes_a_smaller_file_and_names_its_types(gguf, tmp_path):
    q8 = shipping.quantize(gguf, tmp_path / "q8.gguf", "Q8_0")
    assert 0 < q8.stat().st_size < gguf.stat().st_size / 2
    with pytest.raises(ValueError, match="Q4_K_M"):
        shipping.quantize(gguf, tmp_path / "q.gguf", "Q3_X")


def test_a_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="to_gguf"):
        shipping.load_gguf(tmp_path / "none.gguf")
