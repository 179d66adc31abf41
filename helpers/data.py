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


def load_split(profile: Profile, role: str, split: str = "train", n: int | None = None) -> datasets.Dataset:
    """Rows of dataset `role` ("chat", "preference", ...) for `split` ("train" or "test").

    On `tiny` the rows come from the locally built tiny world; elsewhere from the hub. The
    first `n` rows are kept when `n` is given.
    """
    if role not in profile.datasets:
        raise KeyError(f"No dataset role {role!r}; roles are: {', '.join(profile.datasets)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    src = profile.datasets[role]
    split_name = src.train_split if split == "train" else src.test_split
    if src.local_path is not None:
        ds = datasets.load_from_disk(src.local_path)[split_name]
    else:
        try:
            ds = _from_hub(src, split_name, n)
        except Exception as err:  # offline, gated, renamed: say what to do instead
            raise RuntimeError(
                f"Could not load {src.hub_id!r} from the hub for profile {profile.name!r}: {err}\n"
                "Without hub access, run the course on its own data with COURSE_PROFILE=tiny."
            ) from err
    missing = [c for c in src.columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{src.label} lacks column(s) {missing}; it has {ds.column_names}")
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return ds


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

    return world.instruction_rows(n_train=200, n_test=n)["test"]


def reward_prompts(n: int, skills: Sequence[str]) -> list[dict]:
    """Prompts whose answers a program can check (`prompt`, `answer`, `skill`), for GRPO.

    Drawn like the tiny world's questions, none of them one of task_set()'s held-out questions,
    so a score on task_set() after reinforcement learning is still a held-out score."""
    from helpers.tiny import world

    held_out = {r["messages"][-2]["content"] for r in task_set(1000)}
    return world.reward_rows(n, skills, exclude=held_out)
