"""Token-length statistics for choosing max_length and a batching strategy (notebook 01).

    lengths = token_lengths(rows, tokenizer)        # one row per example, tokens per role
    truncation_table(lengths["total"], [128, 256, 512])
    padding_waste(lengths["total"].tolist(), batch_size=16, max_length=256)

Every function takes plain lists or a pandas Series, so it serves the tiny world and hub data alike.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import conversation_problem
from helpers.registry import cache_dir

PERCENTILES = (50, 90, 95, 99)


def token_lengths(rows: Iterable[dict], tokenizer) -> pd.DataFrame:
    """Per chat row: tokens after the chat template (`total`), tokens of the message contents
    alone per role, and the template's overhead (special tokens, role names, newlines).

    Raises ValueError naming the first malformed row (see helpers.data.conversation_problem)."""
    records = []
    for index, row in enumerate(rows):
        problem = conversation_problem(row)
        if problem:
            raise ValueError(f"Row {index}: {problem}. Drop it (helpers.lengths.valid_rows) or fix it first.")
        messages = row["messages"]
        total = len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
        per_role = {"system": 0, "user": 0, "assistant": 0}
        for m in messages:
            per_role[m["role"]] += len(tokenizer(m["content"], add_special_tokens=False)["input_ids"])
        content = sum(per_role.values())
        records.append({"total": total, **per_role, "template": total - content, "turns": len(messages)})
    return pd.DataFrame.from_records(records)


def valid_rows(rows: Iterable[dict]) -> tuple[list[dict], list[tuple[int, str]]]:
    """Split rows into well-formed ones and (index, problem) for the rest."""
    good, bad = [], []
    for index, row in enumerate(rows):
        problem = conversation_problem(row)
        if problem:
            bad.append((index, problem))
        else:
            good.append(row)
    return good, bad


def text_lengths(texts: Iterable[str], tokenizer) -> pd.Series:
    """Tokens per plain text (classification data such as ag_news)."""
    return pd.Series([len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts], name="tokens")


def percentiles(lengths: Sequence[int], qs: Sequence[int] = PERCENTILES) -> dict[str, int]:
    """The q-th percentiles: the shortest length that q% of the examples do not exceed."""
    arr = np.asarray(lengths)
    return {f"p{q}": int(np.percentile(arr, q, method="inverted_cdf")) for q in qs}


def truncation_table(lengths: Sequence[int], candidates: Sequence[int]) -> pd.DataFrame:
    """For each candidate max_length: share of examples truncated and of all tokens cut off."""
    arr = np.asarray(lengths)
    rows = []
    for cut in candidates:
        over = arr > cut
        rows.append(
            {
                "max_length": cut,
                "examples truncated": over.mean(),
                "tokens lost": np.clip(arr - cut, 0, None).sum() / arr.sum(),
            }
        )
    return pd.DataFrame(rows).set_index("max_length")


def recommend_max_length(lengths: Sequence[int], coverage: float, multiple: int = 8) -> int:
    """The shortest max_length, a multiple of `multiple` (GPU-friendly shapes), that leaves at
    least `coverage` of the examples untruncated."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], not {coverage}")
    arr = np.sort(np.asarray(lengths))
    need = arr[max(0, math.ceil(coverage * len(arr)) - 1)]  # the length the coverage-th example has
    return int(math.ceil(need / multiple) * multiple)


# --- padding waste ----------------------------------------------------------------------------------

STRATEGIES = ("pad to max_length", "pad to longest", "length-grouped", "packed (TRL bfd)")


def _batches(lengths: list[int], batch_size: int, grouped: bool, seed: int) -> list[list[int]]:
    """Random batches, or the Trainer's own length-grouped order (`group_by_length`)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    if grouped:
        order = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    else:
        order = list(range(len(lengths)))
        random.Random(seed).shuffle(order)
    return [[lengths[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]


def padding_waste(lengths: Sequence[int], batch_size: int, max_length: int, seed: int = 0) -> pd.DataFrame:
    """Share of real (non-pad) tokens in the batches each strategy builds from the same examples,
    every example first truncated to max_length. Packing uses TRL's own `pack_dataset` (best-fit
    decreasing into rows of max_length); its batches are padded to their longest packed row."""
    from datasets import Dataset
    from trl import pack_dataset

    cut = [min(int(n), max_length) for n in lengths]
    real = sum(cut)
    packed = pack_dataset(
        Dataset.from_dict({"input_ids": [[1] * n for n in cut]}), max_length, strategy="bfd"
    )
    packed_lengths = [len(ids) for ids in packed["input_ids"]]
    batches = {
        STRATEGIES[1]: _batches(cut, batch_size, False, seed),
        STRATEGIES[2]: _batches(cut, batch_size, True, seed),
        STRATEGIES[3]: _batches(packed_lengths, batch_size, False, seed),
    }
    slots = {STRATEGIES[0]: math.ceil(len(cut) / batch_size) * batch_size * max_length}
    slots |= {name: sum(len(b) * max(b) for b in bs) for name, bs in batches.items()}
    n_batches = {STRATEGIES[0]: math.ceil(len(cut) / batch_size)} | {
        name: len(bs) for name, bs in batches.items()
    }
    return pd.DataFrame(
        {
            "real tokens": {k: real / v for k, v in slots.items()},
            "tokens computed": slots,
            "batches": n_batches,
        }
    )


# --- outliers ---------------------------------------------------------------------------------------


def _normalised(row: dict) -> str:
    text = " ".join(m["content"] for m in row["messages"]).lower()
    return " ".join("".join(c for c in text if c.isalnum() or c.isspace()).split())


def outliers(rows: Sequence[dict], lengths: Sequence[int], min_chars: int = 1) -> dict[str, list[int]]:
    """Row indices of: turns with less than `min_chars` of text, extreme lengths (beyond
    Q3 + 3 x IQR), exact duplicates and near duplicates (equal once case, spacing and punctuation
    are dropped) of an earlier row."""
    arr = np.asarray(lengths)
    q1, q3 = np.percentile(arr, [25, 75])
    found: dict[str, list[int]] = {
        "empty or near-empty turn": [],
        "extreme length": [],
        "exact duplicate": [],
        "near duplicate": [],
    }
    exact, near = set(), set()
    for i, row in enumerate(rows):
        if any(len(m["content"].strip()) < min_chars for m in row["messages"]):
            found["empty or near-empty turn"].append(i)
        if arr[i] > q3 + 3 * (q3 - q1):
            found["extreme length"].append(i)
        key = json.dumps(row["messages"], sort_keys=True, ensure_ascii=False)
        if key in exact:
            found["exact duplicate"].append(i)
        elif _normalised(row) in near:
            found["near duplicate"].append(i)
        exact.add(key)
        near.add(_normalised(row))
    return found


# --- the data card notebook 02 reads ----------------------------------------------------------------


def data_card_path(profile_name: str, role: str = "chat") -> Path:
    return cache_dir() / "data_cards" / f"{profile_name}-{role}.json"


def save_data_card(card: dict, profile_name: str, role: str = "chat") -> Path:
    path = data_card_path(profile_name, role)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2))
    return path


def load_data_card(profile_name: str, role: str = "chat") -> dict | None:
    """The card notebook 01 saved for this profile, or None when 01 has not been run."""
    path = data_card_path(profile_name, role)
    return json.loads(path.read_text()) if path.exists() else None


# --- tokenizer fertility across languages -----------------------------------------------------------


def fertility(sentences: Sequence[dict[str, str]], tokenizer, languages: Sequence[str]) -> pd.DataFrame:
    """Tokens per character and per whitespace word for each language's version of the same
    sentences, and tokens relative to English: what a language pays in context length.
    (Thai writes no spaces between words, so its 'words' are phrases.)"""
    rows = {}
    for lang in languages:
        texts = [s[lang] for s in sentences]
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        chars = sum(len(t) for t in texts)
        words = sum(len(t.split()) for t in texts)
        rows[lang] = {"tokens": tokens, "tokens per char": tokens / chars, "tokens per word": tokens / words}
    table = pd.DataFrame(rows).T
    if "en" in rows:
        table["x English"] = table["tokens"] / rows["en"]["tokens"]
    return table
