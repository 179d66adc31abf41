"""Notebook 07's throughput benchmark outside the notebook: `make bench`.

    python scripts/bench_throughput.py [--rows 240] [--rounds 3]

Trains the profile's base model for one epoch over the same chat rows under TRL's defaults,
fixed padding, each trick alone and the stacked recipe, in interleaved rounds, and prints the
median figures (real tokens/s, step ms, data wait %, peak MB) with ratios over both baselines,
plus the machine it ran on, so tables from different machines can be compared. Then where a
step's time goes (torch.profiler) under the defaults and the recipe, and whether the recipe
trains as well: held-out loss after the same rows, three seeds each (--quality-rows 0 skips it).
"""

from __future__ import annotations

import argparse
import platform
import warnings

import pandas as pd
import psutil
from datasets import Dataset
from transformers import AutoTokenizer

from helpers.budget import QUALITY_HELD_OUT_07
from helpers.data import load_split
from helpers.lengths import load_data_card, valid_rows
from helpers.registry import cache_dir
from helpers.runtime import get_profile
from helpers.throughput import (
    quality_verdict,
    sft_benchmark,
    sft_quality,
    sft_trainer,
    sft_variants,
    step_profile,
)
from helpers.training import ensure_training_template


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quality-rows", type=int, default=480)
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
    target = 3.0 if profile.device == "cpu" else 1.3
    ratio = table.loc["stacked recipe", "x TRL defaults"]
    print(
        f"stacked recipe {ratio:.2f}x TRL defaults (target {target}x): {'met' if ratio >= target else 'NOT met'}"
    )
    runs = cache_dir() / "runs" / "bench"
    shares = {
        name: step_profile(sft_trainer(model, tokenizer, dataset, variants[name], str(runs)))
        for name in ("TRL defaults", "stacked recipe")
    }
    print("\nwhere an epoch's time goes, % of wall time (torch.profiler):")
    print(pd.DataFrame(shares).round(1).to_string())
    if args.quality_rows:
        train = Dataset.from_list([{"messages": r["messages"]} for r in rows[: args.quality_rows]])
        held_out, _ = valid_rows(load_split(profile, "chat", "test", n=QUALITY_HELD_OUT_07))
        held_out = [{"messages": r["messages"]} for r in held_out]
        compared = {
            name: variants[name] for name in ("TRL defaults", "length-grouped batches", "stacked recipe")
        }
        quality = sft_quality(model, tokenizer, train, held_out, compared, output_dir=str(runs))
        print(
            f"\nheld-out loss per token after one epoch of {len(train)} rows ({len(held_out)} test rows, lr 2e-4):"
        )
        print(quality.round(3).to_string())
        for name in ("stacked recipe", "length-grouped batches"):
            print(quality_verdict(quality, name))


if __name__ == "__main__":
    main()
