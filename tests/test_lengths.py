"""Length statistics, padding waste, outliers and the constitution, against hand-made inputs."""

import pytest
from transformers import AutoTokenizer

from helpers.constitution import Rule, apply_constitution, load_constitution, violates
from helpers.lengths import (
    fertility,
    outliers,
    padding_waste,
    percentiles,
    recommend_max_length,
    token_lengths,
    truncation_table,
    valid_rows,
)
from helpers.registry import models_for
from helpers.tiny.build import ensure_built


def chat(user: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {
        "messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    }


@pytest.fixture(scope="module")
def tokenizer():
    ensure_built(["tokenizer"])
    return AutoTokenizer.from_pretrained(models_for("tiny")["chat"])


def test_token_lengths_split_template_from_content(tokenizer):
    rows = [chat("What is 2?", "3"), chat("Hi", "Hello there", system="Be brief.")]
    df = token_lengths(rows, tokenizer)
    for row, (_, got) in zip(rows, df.iterrows()):
        full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert got["total"] == len(full)
        content = sum(
            len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in row["messages"]
        )
        assert got["template"] == len(full) - content > 0
    assert df.loc[1, "system"] > 0 and df.loc[0, "system"] == 0


@pytest.mark.parametrize(
    "row, problem",
    [
        ({"text": "x"}, "missing the 'messages' column"),
        ({"messages": [{"role": "user"}]}, "message 0 has no 'content'"),
        ({"messages": [{"content": "hi"}]}, "message 0 has no 'role'"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "unknown role 'bot'"),
        ({"messages": [{"role": "user", "content": 7}]}, "content is int"),
    ],
)
def test_malformed_rows_are_named_not_crashed_on(tokenizer, row, problem):
    good, bad = valid_rows([chat("a", "b"), row])
    assert len(good) == 1 and bad[0][0] == 1 and problem in bad[0][1]
    with pytest.raises(ValueError, match=f"Row 1: .*{problem}"):
        token_lengths([chat("a", "b"), row], tokenizer)


def test_percentiles_and_recommendation_by_hand():
    lengths = list(range(1, 101))  # 1..100
    assert percentiles(lengths) == {"p50": 50, "p90": 90, "p95": 95, "p99": 99}
    assert recommend_max_length(lengths, 0.95) == 96  # 95 rounded up to a multiple of 8
    assert recommend_max_length(lengths, 0.99, multiple=1) == 99
    assert recommend_max_length([10] * 5, 1.0) == 16
    with pytest.raises(ValueError):
        recommend_max_length(lengths, 0)


def test_truncation_table_by_hand():
    table = truncation_table([10, 20, 30, 40], [25])
    assert table.loc[25, "examples truncated"] == 0.5
    assert table.loc[25, "tokens lost"] == pytest.approx((5 + 15) / 100)


def test_padding_waste_by_hand():
    lengths = [1, 1, 3, 3]
    waste = padding_waste(lengths, batch_size=2, max_length=4, seed=0)
    real = 8
    assert waste.loc["pad to max_length", "real tokens"] == real / 16
    # Random batches pad to their longest row: never better than no padding, never worse than max_length.
    assert real / 16 <= waste.loc["pad to longest", "real tokens"] <= 1.0
    # TRL packs into rows of 4 with best-fit decreasing: [3, 1], [3, 1] -> one full batch of 2 x 4.
    assert waste.loc["packed (TRL bfd)", "real tokens"] == 1.0
    assert waste.loc["packed (TRL bfd)", "batches"] == 1
    # Truncation happens first: a 10-token row counts as max_length real tokens.
    assert padding_waste([10], batch_size=1, max_length=4).loc["pad to max_length", "real tokens"] == 1.0


def test_length_grouping_beats_random_batches():
    lengths = [1] * 40 + [3] * 40
    waste = padding_waste(lengths, batch_size=4, max_length=4, seed=0)
    # Mega-batches of 20 sorted by length: at most one mixed batch in each of the four.
    mixed_pads = 4 * 3 * 2
    assert waste.loc["length-grouped", "real tokens"] >= 160 / (160 + mixed_pads)
    assert waste.loc["length-grouped", "real tokens"] > waste.loc["pad to longest", "real tokens"]


def test_outliers_find_each_kind():
    rows = [chat("q1", "a"), chat("q2", " "), chat("q1", "a"), chat("Q1!", "A"), chat("q3", "b")] + [
        chat(f"q{i}", "c") for i in range(10, 30)
    ]
    lengths = [5] * len(rows)
    lengths[4] = 500
    found = outliers(rows, lengths)
    assert found["empty or near-empty turn"] == [1]
    assert found["exact duplicate"] == [2]
    assert found["near duplicate"] == [3]
    assert found["extreme length"] == [4]


def test_constitution_rules_each_drop_what_they_say():
    rules = load_constitution()
    assert {r.check for r in rules} >= {"no_pattern", "no_phrase", "not_empty", "max_tokens", "scripts"}
    rows = [
        chat("My e-mail is kim@example.com", "ok"),
        chat("Call me on +1 555 0199", "ok"),
        chat("hi", ""),
        chat("hi", "As an AI language model, I cannot"),
        chat("วันนี้อากาศเป็นอย่างไร", "ok"),
        chat("a long one", "ok"),
        chat("What number comes after 41?", "42"),
        chat("Which is larger, 12 or 7?", "12"),
    ]
    lengths = [10, 10, 10, 10, 10, 999, 10, 10]
    kept, report = apply_constitution(rows, rules, lengths=lengths, max_length=64)
    assert kept == [6, 7]
    assert report["rows dropped"].tolist() == [1, 1, 1, 1, 1, 1]
    assert "kim@example.com" in report.loc["no e-mail addresses", "example"]


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="unknown check"):
        Rule(name="x", rule="x", check="no_magic")
    with pytest.raises(ValueError, match="needs a `pattern`"):
        Rule(name="x", rule="x", check="no_pattern")
    with pytest.raises(ValueError, match="needs token lengths"):
        violates(Rule(name="x", rule="x", check="max_tokens"), chat("a", "b"))


def test_constitution_catches_the_tiny_worlds_defects():
    from helpers.tiny import world

    rows = world.instruction_rows(n_train=1000, n_test=10)["train"]
    _, report = apply_constitution(rows, [r for r in load_constitution() if r.check != "max_tokens"])
    k = 1000 // 200
    assert report.loc["no e-mail addresses", "rows dropped"] >= k
    assert report.loc["no empty answers", "rows dropped"] >= k
    assert report.loc["allowed languages", "rows dropped"] >= k // 2
    assert report.loc["no phone numbers", "rows dropped"] < 3 * k  # the world's own numbers are not phones


def test_fertility_against_a_count(tokenizer):
    sentences = [{"en": "a cat", "th": "แมว"}]
    table = fertility(sentences, tokenizer, ["en", "th"])
    en = len(tokenizer("a cat", add_special_tokens=False)["input_ids"])
    assert table.loc["en", "tokens"] == en
    assert table.loc["en", "tokens per word"] == en / 2
    assert table.loc["th", "x English"] == table.loc["th", "tokens"] / en > 1
