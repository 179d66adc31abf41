"""helpers.preference: completion log-probabilities and the metrics DPO moves, checked by hand."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.preference import completion_logps, pair_logps, preference_metrics
from helpers.registry import models_for
from helpers.tiny.build import ensure_built


@pytest.fixture(scope="module")
def chat():
    ensure_built(["tiny-chat"])
    path = models_for("tiny")["chat"]
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def one_by_one(model, tokenizer, prompt, completion):
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0]
    logps = torch.log_softmax(logits, -1)
    return sum(logps[i - 1, full[i]].item() for i in range(len(head), len(full)))


def test_batched_logps_match_one_by_one(chat):
    model, tok = chat
    prompts = [
        [{"role": "user", "content": "What number comes after 41?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is 8 even or odd?"}],
    ]
    completions = [
        [{"role": "assistant", "content": "42"}],
        [{"role": "assistant", "content": "even, clearly"}],
    ]
    batched = completion_logps(model, tok, prompts, completions)
    alone = completion_logps(model, tok, prompts, completions, max_tokens=1)  # a batch per row
    for i in range(2):
        expected = one_by_one(model, tok, prompts[i], completions[i])
        assert batched[i].item() == pytest.approx(expected, abs=1e-4)
        assert alone[i].item() == pytest.approx(expected, abs=1e-4)


def test_rows_past_max_length_are_cut_like_dpo_cuts_them(chat):
    model, tok = chat
    prompt = [{"role": "user", "content": "What number comes after 41?"}]
    answer = [{"role": "assistant", "content": "42 " * 20}]
    head = len(
        tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    whole = completion_logps(model, tok, [prompt], [answer])
    cut = completion_logps(model, tok, [prompt], [answer], max_length=head + 3)
    first_three = completion_logps(model, tok, [prompt], [answer], max_length=head + 3, max_tokens=head + 3)
    assert cut.item() == pytest.approx(first_three.item(), abs=1e-5)
    assert cut.item() > whole.item()  # fewer tokens, so a larger (less negative) sum
    assert completion_logps(model, tok, [prompt], [answer], max_length=head - 1).item() == 0.0


def test_the_chat_model_prefers_right_answers(chat):
    model, tok = chat
    rows = [
        {
            "prompt": [{"role": "user", "content": "What number comes after 41?"}],
            "chosen": [{"role": "assistant", "content": "42"}],
            "rejected": [{"role": "assistant", "content": "17"}],
        }
    ]
    chosen, rejected = pair_logps(model, tok, rows)
    assert chosen[0] > rejected[0]


def test_preference_metrics_by_hand():
    chosen, rejected = torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -4.0])
    ref_c, ref_r = torch.tensor([-2.0, -5.0]), torch.tensor([-2.0, -5.0])
    m = preference_metrics(chosen, rejected, ref_c, ref_r, beta=0.5)
    assert m["prefers chosen"] == 0.5  # -1 > -3 yes; -5 > -4 no
    # rewards: chosen 0.5*(1, 0) = (0.5, 0); rejected 0.5*(-1, 1) = (-0.5, 0.5)
    assert m["reward accuracy"] == 0.5
    assert m["reward margin"] == pytest.approx(((0.5 + 0.5) + (0 - 0.5)) / 2)
    assert m["drift (nats)"] == pytest.approx((1 + 0 + 1 + 1) / 4)
    same = preference_metrics(chosen, rejected, chosen, rejected, beta=0.1)
    assert (
        same["reward accuracy"] == 0 and same["drift (nats)"] == 0 and not math.isnan(same["reward margin"])
    )


def test_a_template_that_rewrites_the_prompt_is_refused(chat):
    model, tok = chat
    tok = AutoTokenizer.from_pretrained(models_for("tiny")["chat"])
    # A template that only renders the last message: the prompt is not a prefix of prompt + answer.
    tok.chat_template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>>{% endif %}"
    with pytest.raises(ValueError, match="misaligned"):
        completion_logps(
            model, tok, [[{"role": "user", "content": "hi"}]], [[{"role": "assistant", "content": "yo"}]]
        )
