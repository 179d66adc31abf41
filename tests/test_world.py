"""The tiny world's generators: deterministic, in the hub datasets' schemas, held-out kept apart."""

import re

import pytest

from helpers.data import check_conversations
from helpers.tiny import charts, world


def test_generators_are_deterministic_and_seed_dependent():
    assert world.instruction_rows(50, 10) == world.instruction_rows(50, 10)
    assert world.pretraining_text(20, seed=0) == world.pretraining_text(20, seed=0)
    assert world.pretraining_text(20, seed=0) != world.pretraining_text(20, seed=1)
    a, b = charts.chart_rows(3, seed=4), charts.chart_rows(3, seed=4)
    assert [r["query"] for r in a] == [r["query"] for r in b]
    assert a[0]["image"].tobytes() == b[0]["image"].tobytes()


def test_every_skill_answers_correctly():
    import random

    rng = random.Random(0)
    for _ in range(50):
        t = world.first_letter_task(rng)
        assert t.answer == t.question.removesuffix("?").split("of ")[1].split()[0]
        t = world.last_letter_task(rng)
        assert t.answer == t.question.removesuffix("?").split("of ")[1].split()[-1]
        t = world.reverse_task(rng)
        assert t.answer == " ".join(reversed(t.question.split(": ")[1].split()))
        t = world.capitals_task(rng)
        assert t.answer == t.question.split(": ")[1].upper()
        t = world.larger_task(rng)
        a, b = map(int, re.findall(r"\d+", t.question))
        assert int(t.answer) == max(a, b)
        t = world.after_task(rng)
        assert int(t.answer) == int(re.findall(r"\d+", t.question)[0]) + 1
        t = world.count_task(rng)
        lo, hi = map(int, re.findall(r"\d+", t.question))
        assert t.answer.split() == [str(i) for i in range(lo, hi + 1)]
        for task in (t, world.parity_task(rng)):
            assert task.answer in task.prose and task.wrong != task.answer


def test_instruction_rows_are_valid_chats_with_unseen_test_questions():
    rows = world.instruction_rows(300, 80)
    assert check_conversations(rows["train"]) == 300 + 3  # + two exact and one near duplicate
    assert check_conversations(rows["test"]) == 80
    train_q = {m["content"] for r in rows["train"] for m in r["messages"] if m["role"] == "user"}
    test_q = {r["messages"][0]["content"] for r in rows["test"]}
    assert not train_q & test_q
    roles = {m["role"] for r in rows["train"] for m in r["messages"]}
    assert roles == {"system", "user", "assistant"}
    assert any(len(r["messages"]) >= 4 for r in rows["train"])  # some multi-turn rows
    assert {r["skill"] for r in rows["test"]} == set(world.SKILLS)


def test_preference_rows_follow_trl_conversational_format():
    rows = world.preference_rows(40, 10)
    for r in rows["train"] + rows["test"]:
        assert set(r) == {"prompt", "chosen", "rejected", "skill"}
        assert r["prompt"][0]["role"] == "user"
        assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
        assert r["chosen"][0]["content"] != r["rejected"][0]["content"]


def test_chart_rows_use_chartqa_columns_and_answers_match_the_bars():
    rows = charts.chart_rows(30, seed=1)
    for r in rows:
        assert set(r) == {"image", "query", "label", "human_or_machine"}
        assert isinstance(r["label"], list) and len(r["label"]) == 1
        assert r["image"].size == (128, 128)
    tallest = [r for r in rows if "tallest" in r["query"]]
    assert tallest and all(r["label"][0] in charts.COLOURS for r in tallest)


def test_alignment_rows_ask_what_the_bars_answer():
    rows = charts.alignment_rows(300, seed=3, shares=(0.3, 0.6))
    value_templates = [a for a in charts.ASKS if "{c}" in a]
    tallest_asks = {a for a in charts.ASKS if "{c}" not in a}
    value_asks = {a.format(c=c): c for a in value_templates for c in charts.COLOURS}
    captions = [r for r in rows if r["ask"] == "Describe the chart."]
    values = [r for r in rows if r["ask"] in value_asks]
    tallest = [r for r in rows if r["ask"] in tallest_asks]
    assert len(captions) + len(values) + len(tallest) == 300 and 60 < len(captions) < 120
    for r in captions:
        words = r["answer"].split()
        assert (
            words[::2]
            and set(words[::2]) <= set(charts.COLOURS)
            and all(int(v) in charts.VALUES for v in words[1::2])
        )
    assert all(int(r["answer"]) in charts.VALUES for r in values)
    assert all(r["answer"] in charts.COLOURS for r in tallest)
    # every wording is used, and none is the lessons' own (notebook 03's SFT teaches that one)
    assert len({r["ask"].replace(value_asks[r["ask"]], "{c}") for r in values}) == len(value_templates)
    assert {r["ask"] for r in tallest} == tallest_asks
    # the first builds' two wordings, as a spec can still ask for them
    two = charts.alignment_rows(100, seed=3, asks=["{c}?", "tallest?"])
    assert {r["ask"] for r in two} <= {f"{c}?" for c in charts.COLOURS} | {"tallest?", "Describe the chart."}
    lesson_queries = {r["query"] for r in charts.chart_rows(300, seed=3)}
    assert not lesson_queries & {r["ask"] for r in rows}
    assert charts.alignment_rows(5, seed=3)[0]["answer"] == rows[0]["answer"]  # seeded


def test_chart_bar_height_encodes_the_value():
    img = charts.render_bar_chart({"red": 80, "blue": 20}, size=128)
    px = img.load()

    def column_height(colour):
        xs = [x for x in range(128) for y in range(128) if px[x, y] == colour]
        x = sorted(xs)[len(xs) // 2]
        return sum(px[x, y] == colour for y in range(128))

    ratio = column_height(charts.COLOURS["red"]) / column_height(charts.COLOURS["blue"])
    assert abs(ratio - 4) < 0.3


def test_news_rows_match_ag_news_labels():
    rows = world.news_rows(100, 10)["train"]
    assert {r["label"] for r in rows} == {0, 1, 2, 3}
    for r in rows:
        assert any(w in r["text"] for w in world.NEWS_TOPICS[r["label"]][1])


def test_train_rows_carry_realistic_defects_and_test_rows_none():
    rows = world.instruction_rows(1000, 50)
    k = 1000 // 200

    def texts(split):
        return [" ".join(m["content"] for m in r["messages"]) for r in rows[split]]

    assert len(rows["train"]) == 1000 + 3 * k
    assert sum("@example.com" in t for t in texts("train")) == k
    assert sum("As an AI language model" in t for t in texts("train")) >= k
    empty = [r for r in rows["train"] if any(not m["content"].strip() for m in r["messages"])]
    assert len(empty) >= k
    assert not any("@" in t or "As an AI" in t for t in texts("test"))


def test_pretraining_text_can_leave_skills_out():
    full = " ".join(world.pretraining_text(300, seed=0))
    small = " ".join(world.pretraining_text(300, seed=0, without=("capitals", "reverse")))
    assert "Write in capitals" in full and "Reverse the letters" in full
    assert "Write in capitals" not in small and "Reverse the letters" not in small
    assert "What is the first letter" in small
    with pytest.raises(ValueError, match="unknown skills"):
        world.pretraining_text(3, without=("spelling",))
