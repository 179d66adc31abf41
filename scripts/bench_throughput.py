"""Notebook 07's throughput benchmark outside the notebook: `make bench`.

    python scripts/bench_throughput.py [--rows 240] [--rounds 3]

Trains the profile's base model for one epoch over the same chat rows under TRL's defaults,
fixed padding, each trick alone and the stacked recipe, in interleaved rounds, and prints the
median figures (real tokens/s, step ms, data wait %, peak MB) with ratios over both baselines,
plus the machine it ran on, so tables from different machines can be compared.
"""

from __future__ import annotations

import argparse
import platform
import warnings

import psutil
from datasets import Dataset
from transformers import AutoTokenizer

from helpers.data import load_split
from helpers.lengths import load_data_card, valid_rows
from helpers.registry import cache_dir
from helpers.runtime import get_profile
from helpers.throughput import sft_benchmark, sft_variants
from helpers.training import ensure_training_template


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6")
    profile = get_profile()
    model = profile.models["base"]
    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(model))
    card = load_data_card(profile.name)
    rows, _ = valid_rows(load_split(profile, "chat", "train", n=card["rows_measured"] if card else 2000))
    if card:
        rows = [rows[i] for i in card["kept_rows"]]
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows[: args.rows]])
    pad_to = min(tokenizer.model_max_length, 1024)
    variants, skipped = sft_variants(profile, pad_to=pad_to)
    table = sft_benchmark(
        model,
        tokenizer,
        dataset,
        variants,
        rounds=args.rounds,
        output_dir=str(cache_dir() / "runs" / "bench"),
    )
    gpu = profile.hardware.gpu_name or "no GPU"
    print(
        f"\nmachine: {platform.machine()}, {psutil.cpu_count()} cores, {gpu}; profile {profile.name}; "
        f"{args.rows} rows, {args.rounds} rounds, fixed padding to {pad_to}"
    )
    print(table.round(2).to_string())
    for trick, why in skipped.items():
        print(f"skipped {trick}: {why}")
    target = 2.5 if profile.device == "cpu" else 1.3
    ratio = table.loc["stacked recipe", "x TRL defaults"]
    print(
        f"stacked recipe {ratio:.2f}x TRL defaults (target {target}x): {'met' if ratio >= target else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
