"""The tiny world: synthetic corpora that stand in for hub datasets on the `tiny` profile.

Every generator is a pure function of its seed, so the same rows come out on every machine.
Rows use the same columns as the public datasets the GPU profiles load:

| tiny set       | hub stand-in for                     | columns                                  |
|----------------|--------------------------------------|------------------------------------------|
| pretraining    | a web-text corpus                    | text                                     |
| instructions   | a chat SFT set (e.g. smoltalk)       | messages                                 |
| preferences    | a DPO set (e.g. ultrafeedback)       | prompt, chosen, rejected                 |
| charts         | HuggingFaceM4/ChartQA                | image, query, label, human_or_machine    |
| news           | fancyzhx/ag_news                     | text, label                              |

The world has a few *skills* (the first letter of a word, the number after n, reversing a
word, ...). Pretraining states them
as plain prose; the instruction set asks for them as chat turns. A base model that learnt the
prose does not yet answer in chat form, which is what supervised fine-tuning then teaches: a
real, measurable gain in about a minute on a CPU. Used by helpers.tiny.build and notebooks 00-05.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LETTERS = string.ascii_lowercase
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
SYSTEM_PROMPTS = [
    "You are a careful assistant. Answer with the result only.",
    "You are a tutor who answers briefly.",
]


@dataclass(frozen=True)
class Task:
    """One item of a skill: the question asked in chat, its answer, and prose for pretraining."""

    skill: str
    question: str
    answer: str
    prose: str
    wrong: str  # a plausible wrong answer, the rejected side of a preference pair


def spell(word: str) -> str:
    return " ".join(word)


def random_word(rng: random.Random, low: int = 3, high: int = 5) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(low, high)))


def name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


# --- skills: each returns a Task for a random input ---------------------------------------------
# Number skills need attention to the previous token; letter skills need a model to find and copy
# a token by its content (an induction head), which a 2-layer model forms after ~1,000 steps.


def first_letter_task(rng: random.Random) -> Task:
    word = random_word(rng)
    return Task(
        "first",
        f"What is the first letter of {spell(word)}?",
        word[0],
        f"The first letter of {spell(word)} is {word[0]}.",
        word[-1] if word[-1] != word[0] else "z",
    )


def last_letter_task(rng: random.Random) -> Task:
    word = random_word(rng)
    return Task(
        "last",
        f"What is the last letter of {spell(word)}?",
        word[-1],
        f"The last letter of {spell(word)} is {word[-1]}.",
        word[0] if word[-1] != word[0] else "z",
    )


def after_task(rng: random.Random) -> Task:
    n = rng.randint(0, 998)
    return Task(
        "after", f"What number comes after {n}?", str(n + 1), f"The number after {n} is {n + 1}.", str(n)
    )


def parity_task(rng: random.Random) -> Task:
    n = rng.randint(0, 999)
    answer, wrong = ("even", "odd") if n % 2 == 0 else ("odd", "even")
    return Task("parity", f"Is {n} even or odd?", answer, f"The number {n} is {answer}.", wrong)


def larger_task(rng: random.Random) -> Task:
    a, b = rng.sample(range(100), 2)
    return Task(
        "larger",
        f"Which is larger, {a} or {b}?",
        str(max(a, b)),
        f"Of {a} and {b}, the larger is {max(a, b)}.",
        str(min(a, b)),
    )


def capitals_task(rng: random.Random) -> Task:
    word = random_word(rng)
    up = spell(word.upper())
    return Task(
        "capitals",
        f"Write in capitals: {spell(word)}",
        up,
        rng.choice([f"In capitals, {spell(word)} is {up}.", f"{spell(word)} in upper case is {up}."]),
        spell(word),
    )


def reverse_task(rng: random.Random) -> Task:
    word = random_word(rng)
    rev = word[::-1]
    wrong = word if rev != word else word[1:] + word[0]
    return Task(
        "reverse",
        f"Reverse the letters: {spell(word)}",
        spell(rev),
        rng.choice(
            [
                f"The letters {spell(word)} read backwards are {spell(rev)}.",
                f"Backwards, {spell(word)} becomes {spell(rev)}.",
            ]
        ),
        spell(wrong),
    )


def count_task(rng: random.Random) -> Task:
    start = rng.randint(0, 60)
    # Geometric lengths give the long tail that notebook 01 teaches to measure.
    length = min(2 + int(rng.expovariate(1 / 5)), 40)
    seq = " ".join(str(i) for i in range(start, start + length))
    end = start + length - 1
    return Task(
        "count",
        f"Count from {start} to {end}.",
        seq,
        f"Counting from {start} to {end}: {seq}.",
        " ".join(str(i) for i in range(start, end)),  # stops one short
    )


SKILLS: dict[str, Callable[[random.Random], Task]] = {
    "first": first_letter_task,
    "last": last_letter_task,
    "after": after_task,
    "parity": parity_task,
    "larger": larger_task,
    "capitals": capitals_task,
    "reverse": reverse_task,
    "count": count_task,
}


def filler_sentence(rng: random.Random) -> str:
    """Prose about a small invented village, so the corpus is not only skill statements."""
    who, other, place = name(rng), name(rng), name(rng)
    return rng.choice(
        [
            f"{who} lives in {place} and keeps {rng.randint(2, 9)} goats.",
            f"Every morning {who} walks to the market in {place}.",
            f"{who} and {other} planted {rng.randint(3, 30)} trees near the river.",
            f"The road from {place} to the sea is {rng.randint(2, 40)} miles long.",
            f"{who} wrote a letter to {other} about the rain in {place}.",
            f"In {place} the bakery opens when the bell rings {rng.randint(1, 6)} times.",
        ]
    )


def pretraining_text(n_docs: int, seed: int = 0, without: Sequence[str] = ()) -> list[str]:
    """Documents: prose paragraphs mixing skills and village life, or worksheets.

    A worksheet lists questions, each answer on the next line, as quiz pages on the web do.
    It is how the base model meets answers that start a line; the chat format it has never seen.
    Skills named in `without` never appear (a smaller corpus, for a model that should not know them).
    """
    unknown = set(without) - set(SKILLS)
    if unknown:
        raise ValueError(f"unknown skills {sorted(unknown)}; choose from {list(SKILLS)}")
    rng = random.Random(seed)
    skills = [task for name, task in SKILLS.items() if name not in without]
    docs = []
    for _ in range(n_docs):
        if rng.random() < 0.4:
            tasks = [rng.choice(skills)(rng) for _ in range(rng.randint(2, 5))]
            docs.append(
                f"Worksheet {rng.randint(1, 99)}.\n" + "\n".join(f"{t.question}\n{t.answer}" for t in tasks)
            )
        else:
            sentences = [
                rng.choice(skills)(rng).prose if rng.random() < 0.7 else filler_sentence(rng)
                for _ in range(rng.randint(4, 12))
            ]
            docs.append(" ".join(sentences))
    return docs


def task_to_messages(task: Task, rng: random.Random, system_rate: float = 0.2) -> list[dict[str, str]]:
    messages = []
    if rng.random() < system_rate:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    messages += [
        {"role": "user", "content": task.question},
        {"role": "assistant", "content": task.answer},
    ]
    return messages


def _unique_tasks(n: int, rng: random.Random, seen: set[str]) -> list[Task]:
    """n tasks, spread evenly over skills, whose questions are not in `seen` (which grows)."""
    skills = list(SKILLS.values())
    tasks: list[Task] = []
    while len(tasks) < n:
        task = skills[len(tasks) % len(skills)](rng)
        if task.question not in seen:
            seen.add(task.question)
            tasks.append(task)
    return tasks


def instruction_rows(n_train: int, n_test: int, seed: int = 1, defects: bool = True) -> dict[str, list[dict]]:
    """Chat rows (`messages`, plus `skill`) with test questions never seen in train.

    About one train row in six is a two-exchange conversation, one in five has a system prompt,
    and one in twenty asks about a pasted passage, so templates, masks and lengths look like a
    real chat set's. The train split also carries the defects real sets have (see
    `add_defects`) unless `defects` is False; the test split is clean.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    test = _unique_tasks(n_test, rng, seen)
    train = _unique_tasks(n_train, rng, seen)
    train_rows = []
    for task in train:
        messages = task_to_messages(task, rng)
        if rng.random() < 1 / 20:  # a passage pasted before the question: the long tail
            passage = " ".join(filler_sentence(rng) for _ in range(rng.randint(3, 25)))
            messages[-2]["content"] = f"Read this first: {passage}\n{task.question}"
        if rng.random() < 1 / 6:
            extra = rng.choice(list(SKILLS.values()))(rng)
            if extra.question not in seen:
                messages += task_to_messages(extra, rng, system_rate=0.0)
        train_rows.append({"messages": messages, "skill": task.skill})
    test_rows = [{"messages": task_to_messages(t, rng, system_rate=0.0), "skill": t.skill} for t in test]
    return {"train": add_defects(train_rows, rng) if defects else train_rows, "test": test_rows}


def reward_rows(n: int, skills: Sequence[str], exclude: set[str], seed: int = 7) -> list[dict]:
    """Questions a program can check, for reinforcement learning: `prompt` (a conversation),
    `answer` and `skill`, round-robin over `skills`, none of them a question in `exclude`."""
    unknown = set(skills) - set(SKILLS)
    if unknown or not skills:
        raise ValueError(f"unknown skills {sorted(unknown) or '(none given)'}; choose from {list(SKILLS)}")
    rng, seen, rows = random.Random(seed), set(exclude), []
    while len(rows) < n:
        task = SKILLS[skills[len(rows) % len(skills)]](rng)
        if task.question not in seen:
            seen.add(task.question)
            rows.append(
                {
                    "prompt": [{"role": "user", "content": task.question}],
                    "answer": task.answer,
                    "skill": task.skill,
                }
            )
    return rows


# Foreign-script questions (Thai, Persian), as scraped chat sets contain.
FOREIGN = ["วันนี้อากาศเป็นอย่างไร", "ช่วยแปลประโยคนี้หน่อย", "امروز هوا چطور است؟", "لطفاً این جمله را ترجمه کن"]


def add_defects(rows: list[dict], rng: random.Random) -> list[dict]:
    """Replace or add a few percent of rows with the defects notebook 01 teaches to find:
    contact details, empty or boilerplate answers, foreign-script rows, exact and near
    duplicates, and a few extremely long rows. Every defect row stays well-formed."""
    rows = [dict(r, messages=[dict(m) for m in r["messages"]]) for r in rows]
    n = len(rows)

    def some(k: int) -> list[dict]:
        return [rows[i] for i in rng.sample(range(n), k)]

    def user(row: dict) -> dict:
        return next(m for m in row["messages"] if m["role"] == "user")

    def answer(row: dict) -> dict:
        return next(m for m in reversed(row["messages"]) if m["role"] == "assistant")

    k = max(1, n // 200)  # 0.5% per defect kind
    for row in some(k):
        who = name(rng).lower()
        user(row)["content"] = f"My e-mail is {who}@example.com. " + user(row)["content"]
    for row in some(k):
        user(row)["content"] += f" Call me on +1 555 {rng.randint(1000, 9999)}."
    for row in some(k):
        answer(row)["content"] = rng.choice(["", " "])
    for row in some(k):
        answer(row)["content"] = "As an AI language model, I think the answer is " + answer(row)["content"]
    for row in some(k // 2 or 1):
        user(row)["content"] = rng.choice(FOREIGN)
    for row in some(3):  # extreme lengths: a whole chapter pasted
        chapter = " ".join(filler_sentence(rng) for _ in range(rng.randint(120, 200)))
        user(row)["content"] = f"Summarise nothing, just answer. {chapter}\n" + user(row)["content"]
    extra = [dict(r, messages=[dict(m) for m in r["messages"]]) for r in some(2 * k)]  # exact duplicates
    for r in some(k):  # near duplicates: the same question, other case and spacing
        near = dict(r, messages=[dict(m) for m in r["messages"]])
        user(near)["content"] = "  " + user(near)["content"].upper().replace(" ", "  ") + " "
        extra.append(near)
    for r in extra:
        rows.insert(rng.randrange(len(rows) + 1), r)
    return rows


def preference_rows(n_train: int, n_test: int, seed: int = 2) -> dict[str, list[dict]]:
    """Conversational preference pairs in TRL's format: prompt, chosen, rejected (+ skill)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits = {}
    for split, n in (("test", n_test), ("train", n_train)):
        splits[split] = [
            {
                "prompt": [{"role": "user", "content": t.question}],
                "chosen": [{"role": "assistant", "content": t.answer}],
                "rejected": [{"role": "assistant", "content": t.wrong}],
                "skill": t.skill,
            }
            for t in _unique_tasks(n, rng, seen)
        ]
    return splits


NEWS_TOPICS = {
    0: ("World", ["minister", "election", "border", "summit", "embassy", "treaty"]),
    1: ("Sports", ["match", "goal", "coach", "league", "season", "striker"]),
    2: ("Business", ["market", "shares", "profit", "bank", "merger", "prices"]),
    3: ("Sci/Tech", ["software", "chip", "space", "research", "robot", "network"]),
}


def news_rows(n_train: int, n_test: int, seed: int = 3) -> dict[str, list[dict]]:
    """Short labelled texts in ag_news's schema (text, label 0-3)."""
    rng = random.Random(seed)

    def row() -> dict:
        label = rng.randrange(4)
        words = NEWS_TOPICS[label][1]
        a, b = rng.sample(words, 2)
        text = rng.choice(
            [
                f"{name(rng)} reports a new {a} as the {b} draws attention in {name(rng)}.",
                f"The {a} in {name(rng)} surprised everyone; the {b} follows next week.",
                f"Officials say the {a} and the {b} will shape the year for {name(rng)}.",
            ]
        )
        return {"text": text, "label": label}

    return {"train": [row() for _ in range(n_train)], "test": [row() for _ in range(n_test)]}
