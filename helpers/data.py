"""Load a dataset role for the current profile, and check rows before any training.

    from helpers.data import load_split, check_conversations
    train = load_split(profile, "chat", "train", n=profile.sizes.n_train)
    check_conversations(train)   # ValueError naming the first bad row, before work is lost

Used by notebooks 00-05 and 09.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets

from helpers.runtime import Profile

ROLES = ("system", "user", "assistant")
# On a hub profile every 4th chat training row is one of the course's own skill conversations
# ("What is the first letter of c a t?"), so that the held-out questions every lesson scores
# (task_set) ask for skills its training teaches, on a GPU as on a CPU. The hub's chat rows alone
# teach none of them: a SmolLM2 model would score near 0% before and after its SFT.
SKILL_ROW_EVERY = 4
HELD_OUT_MAX = 1000  # task_set(n) for any n up to this is kept out of every training row


def load_split(profile: Profile, role: str, split: str = "train", n: int | None = None) -> datasets.Dataset:
    """Rows of dataset `role` ("chat", "preference", ...) for `split` ("train" or "test").

    On `tiny` the rows come from the locally built tiny world; elsewhere from the hub, and the
    chat training rows there mix in the course's skill conversations (SKILL_ROW_EVERY). The
    first `n` rows are kept when `n` is given.
    """
    if role not in profile.datasets:
        raise KeyError(f"No dataset role {role!r}; roles are: {', '.join(profile.datasets)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    src = profile.datasets[role]
    split_name = src.train_split if split == "train" else src.test_split
    mixed = role == "chat" and split == "train" and profile.name != "tiny"  # the GPU profiles' mix
    if src.local_path is not None:
        ds = datasets.load_from_disk(src.local_path)[split_name]
    else:
        try:
            ds = _from_hub(src, split_name, n - n // SKILL_ROW_EVERY if mixed and n is not None else n)
        except Exception as err:  # offline, gated, renamed: say what to do instead
            raise RuntimeError(
                f"Could not load {src.hub_id!r} from the hub for profile {profile.name!r}: {err}\n"
                "Without hub access, run the course on its own data with COURSE_PROFILE=tiny."
            ) from err
    missing = [c for c in src.columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{src.label} lacks column(s) {missing}; it has {ds.column_names}")
    if mixed:
        ds = with_skill_conversations(ds)
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return ds


def skill_conversations(n: int) -> list[dict]:
    """`n` chat rows (`messages`) of the course's skills, as the tiny world's chat set has them (a
    system prompt in some, two exchanges in some) but without its planted defects, none of them
    asking a task_set() question."""
    from helpers.tiny import world

    rows = world.instruction_rows(n_train=n, n_test=HELD_OUT_MAX, seed=1, defects=False)["train"]
    return [{"messages": r["messages"]} for r in rows]


def with_skill_conversations(hub: datasets.Dataset) -> datasets.Dataset:
    """The hub's chat rows with one of the course's skill conversations after every
    SKILL_ROW_EVERY - 1 of them (only the `messages` column is kept)."""
    hub = hub.select_columns(["messages"])
    k = len(hub) // (SKILL_ROW_EVERY - 1)
    if k == 0:
        return hub
    skills = datasets.Dataset.from_list(skill_conversations(k)).cast(hub.features)
    both = datasets.concatenate_datasets([hub, skills])
    order, h = [], 0
    for i in range(len(hub) + k):  # hub, hub, hub, skill, ...
        if i % SKILL_ROW_EVERY == SKILL_ROW_EVERY - 1 and i // SKILL_ROW_EVERY < k:
            order.append(len(hub) + i // SKILL_ROW_EVERY)
        else:
            order.append(h)
            h += 1
    print(
        f"chat rows: {len(hub):,} from the hub and {k:,} of the course's skill conversations "
        f"(every {SKILL_ROW_EVERY}th row)"
    )
    return both.select(order)


def _from_hub(src, split_name: str, n: int | None) -> datasets.Dataset:
    """The first `n` rows of a hub split, streamed: `load_dataset(split=...)` would download and
    prepare every split of the set first (smol-smoltalk: 460,341 rows; cosmopedia-v2: tens of GB)."""
    if n is None:
        print(f"downloading all of {src.hub_id} [{split_name}]; pass n= to stream only the rows you need")
        return datasets.load_dataset(src.hub_id, src.config, split=split_name)
    stream = datasets.load_dataset(src.hub_id, src.config, split=split_name, streaming=True)
    rows = list(stream.take(n))
    print(
        f"streamed the first {len(rows):,} rows of {src.hub_id} [{split_name}] instead of downloading the set"
    )
    return datasets.Dataset.from_list(rows, features=stream.features)


def conversation_problem(row: Any) -> str | None:
    """What is wrong with one chat row (a mapping with `messages`), or None when it is fine."""
    if not isinstance(row, Mapping) or "messages" not in row:
        return "missing the 'messages' column"
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {'role', 'content'} dicts"
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            return f"message {i} is a {type(msg).__name__}, not a dict"
        for key in ("role", "content"):
            if key not in msg:
                return f"message {i} has no {key!r}"
        if msg["role"] not in ROLES:
            return f"message {i} has unknown role {msg['role']!r} (expected one of {ROLES})"
        if not isinstance(msg["content"], str):
            return f"message {i} content is {type(msg['content']).__name__}, not a string"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn, so there is nothing to train on"
    return None


def check_conversations(rows: Iterable[Any]) -> int:
    """Raise ValueError at the first malformed chat row, naming its index; return the row count."""
    count = 0
    for index, row in enumerate(rows):
        problem = conversation_problem(row)
        if problem:
            raise ValueError(f"Row {index}: {problem}. Fix or drop this row before training.")
        count += 1
    return count


def parallel_sentences() -> list[dict[str, str]]:
    """The course's own English, Thai, Vietnamese and Persian sentences (data/parallel_sentences.jsonl)."""
    import json

    from helpers.registry import course_root

    path = course_root() / "data" / "parallel_sentences.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def task_set(n: int = 200) -> list[dict]:
    """Held-out chat questions with short, checkable answers: the tiny world's test split.

    The same items on every profile, so a before/after exact match means the same thing on a
    CPU and on a GPU; no question here appears in any training split."""
    from helpers.tiny import world

    if n > HELD_OUT_MAX:
        raise ValueError(
            f"task_set holds {HELD_OUT_MAX} questions kept out of every training set; asked for {n}"
        )
    return world.instruction_rows(n_train=200, n_test=n)["test"]


def reward_prompts(n: int, skills: Sequence[str]) -> list[dict]:
    """Prompts whose answers a program can check (`prompt`, `answer`, `skill`), for GRPO.

    Drawn like the tiny world's questions, none of them one of task_set()'s held-out questions,
    so a score on task_set() after reinforcement learning is still a held-out score."""
    from helpers.tiny import world

    held_out = {r["messages"][-2]["content"] for r in task_set(1000)}
    return world.reward_rows(n, skills, exclude=held_out)
