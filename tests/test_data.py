"""Row checks name the first bad row and what is wrong; tiny datasets load in the hub's columns."""

import pytest

from helpers.data import check_conversations, load_split, parallel_sentences
from helpers.runtime import Hardware, choose_profile

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"text": "no messages"}, "missing the 'messages' column"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"content": "x"}]}, "message 0 has no 'role'"),
        ({"messages": [{"role": "user"}]}, "message 0 has no 'content'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "content is list, not a string"),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
        ({"messages": ["user: hi"]}, "message 0 is a str"),
    ],
)
def test_check_conversations_names_the_first_bad_row(bad, expected):
    rows = [GOOD, GOOD, bad, {"text": "also bad"}]
    with pytest.raises(ValueError) as err:
        check_conversations(rows)
    assert str(err.value).startswith("Row 2:")
    assert expected in str(err.value)


def test_check_conversations_counts_good_rows():
    assert check_conversations([GOOD] * 5) == 5


@pytest.fixture(scope="module")
def tiny_profile():
    from helpers.tiny.build import ensure_built

    ensure_built(["data"])
    return choose_profile(Hardware())


@pytest.mark.parametrize("role", ["chat", "preference", "charts", "news", "pretraining"])
def test_tiny_datasets_have_the_hub_columns(tiny_profile, role):
    for split in ("train", "test"):
        ds = load_split(tiny_profile, role, split, n=5)
        assert len(ds) == 5
        assert set(tiny_profile.datasets[role].columns) <= set(ds.column_names)


def test_tiny_chat_rows_pass_the_row_check(tiny_profile):
    assert check_conversations(load_split(tiny_profile, "chat", "train")) == 3000 + 45  # + duplicates


def test_tiny_charts_match_chartqa_types(tiny_profile):
    ds = load_split(tiny_profile, "charts", "test", n=3)
    assert ds.features["human_or_machine"].names == ["human", "machine"]
    row = ds[0]
    assert row["image"].mode == "RGB" and isinstance(row["label"], list)


def test_unknown_role_and_split_are_refused(tiny_profile):
    with pytest.raises(KeyError, match="roles are"):
        load_split(tiny_profile, "recipes")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_split(tiny_profile, "chat", "validation")


def test_hub_profile_offline_points_to_tiny(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    t4 = choose_profile(Hardware(cuda=True, gpu_name="Tesla T4", vram_gb=15.0, compute_capability=(7, 5)))
    with pytest.raises(RuntimeError, match="COURSE_PROFILE=tiny"):
        load_split(t4, "news", "train")


def test_parallel_sentences_cover_four_languages():
    rows = parallel_sentences()
    assert len(rows) >= 20
    for r in rows:
        assert set(r) == {"id", "en", "th", "vi", "fa"} and all(
            r[k].strip() for k in ("en", "th", "vi", "fa")
        )
    assert any("\u0e00" <= ch <= "\u0e7f" for ch in rows[0]["th"])  # Thai script
    assert any("\u0600" <= ch <= "\u06ff" for ch in rows[0]["fa"])  # Arabic script (Persian)


def test_reward_prompts_are_checkable_and_never_a_held_out_question():
    from helpers.data import reward_prompts, task_set

    rows = reward_prompts(300, ["parity", "parity", "after"])
    held_out = {r["messages"][-2]["content"] for r in task_set(1000)}
    assert len(rows) == 300 and not {r["prompt"][-1]["content"] for r in rows} & held_out
    assert [r["skill"] for r in rows[:6]] == ["parity", "parity", "after"] * 2  # the mix asked for
    parity = [r for r in rows if r["skill"] == "parity"]
    assert all(
        r["answer"] == ("even" if int(r["prompt"][0]["content"].split()[1]) % 2 == 0 else "odd")
        for r in parity
    )
    assert len({r["prompt"][0]["content"] for r in rows}) == 300  # no question twice
    with pytest.raises(ValueError, match="unknown skills"):
        reward_prompts(10, ["parity", "spelling"])


def test_sampled_replies_vary_are_seeded_and_greedy_is_their_mode(tiny_profile):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.data import task_set
    from helpers.generation import generate_replies, sample_replies

    tokenizer = AutoTokenizer.from_pretrained(tiny_profile.models["chat"])
    model = AutoModelForCausalLM.from_pretrained(tiny_profile.models["chat"], dtype=torch.float32)
    questions = [r["messages"][:-1] for r in task_set(16) if r["skill"] in ("first", "parity")]
    samples = sample_replies(model, tokenizer, questions, k=8, max_new_tokens=8, seed=3)
    assert len(samples) == len(questions) and all(len(s) == 8 for s in samples)
    assert any(len(set(s)) > 1 for s in samples)  # sampling at temperature 1 disagrees with itself
    assert samples == sample_replies(model, tokenizer, questions, k=8, max_new_tokens=8, seed=3)
    near_greedy = sample_replies(model, tokenizer, questions, k=4, max_new_tokens=8, temperature=1e-4)
    greedy = generate_replies(model, tokenizer, questions, max_new_tokens=8)
    assert all(set(s) == {g} for s, g in zip(near_greedy, greedy))
    with pytest.raises(ValueError, match="k must be"):
        sample_replies(model, tokenizer, questions, k=0)
