"""Training throughput, measured: real tokens per second, step time, data wait, peak memory.

    result = measure_trainer(make_trainer(), warmup=3)    # any HF / TRL Trainer
    table = interleaved({"defaults": run_a, "padding-free": run_b}, rounds=3)

Only real (non-pad) tokens count, so padding never looks like speed. Warm-up steps are dropped,
and configurations are run in interleaved rounds and reported as medians: on a shared or small
machine single runs vary by 20-30%. Peak memory is CUDA's allocator peak on a GPU; on a CPU it
is the process's resident memory above where the run started, sampled by UtilisationMonitor.
Used by notebook 07 and `make bench` (scripts/bench_throughput.py).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd
import psutil
import torch
from transformers import Trainer, TrainerCallback


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass
class StepTimes:
    """Per optimizer step: seconds waiting for data, seconds computing, real tokens."""

    data_s: list[float] = field(default_factory=list)
    compute_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    peak_bytes: int = 0

    def summary(self, warmup: int) -> dict[str, float]:
        if len(self.tokens) <= warmup:
            raise ValueError(
                f"{len(self.tokens)} steps measured, all of them warm-up ({warmup}): run more steps"
            )
        data, compute, tokens = self.data_s[warmup:], self.compute_s[warmup:], self.tokens[warmup:]
        total = [d + c for d, c in zip(data, compute)]
        return {
            "tokens/s": sum(tokens) / sum(total),
            "step ms": 1000 * statistics.median(total),
            "data wait %": 100 * sum(data) / sum(total),
            "peak MB": self.peak_bytes / 1e6,
        }


class UtilisationMonitor:
    """Samples utilisation and memory in a background thread while a block runs.

    On a GPU (NVML, from nvidia-ml-py): GPU utilisation %, memory MB and power W of device 0.
    Always: CPU utilisation % of the whole machine and this process's resident memory MB."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._nvml = None
        if torch.cuda.is_available():
            try:
                import pynvml  # nvidia-ml-py

                pynvml.nvmlInit()
                self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(0))
            except (ImportError, OSError) as err:  # no nvidia-ml-py: CPU figures only
                print(f"UtilisationMonitor: no GPU figures ({err}); `pip install nvidia-ml-py` adds them")
            except Exception as err:  # noqa: BLE001 -- pynvml.NVMLError: no driver access
                print(f"UtilisationMonitor: NVML unavailable ({err}); CPU figures only")

    def _sample(self, start: float) -> dict[str, float]:
        row = {
            "t": time.perf_counter() - start,
            "cpu %": psutil.cpu_percent(interval=None),
            "rss MB": self._process.memory_info().rss / 1e6,
        }
        if self._nvml:
            nv, handle = self._nvml
            row["gpu %"] = float(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
            row["gpu MB"] = nv.nvmlDeviceGetMemoryInfo(handle).used / 1e6
            row["power W"] = nv.nvmlDeviceGetPowerUsage(handle) / 1000
        return row

    def _run(self) -> None:
        start = time.perf_counter()
        psutil.cpu_percent(interval=None)  # the first call only starts the clock
        while not self._stop.is_set():
            self.samples.append(self._sample(start))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> UtilisationMonitor:  # noqa: PYI034 (typing.Self needs Python 3.11)
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.samples)

    def rss_growth_bytes(self) -> int:
        rss = [s["rss MB"] for s in self.samples]
        return int((max(rss) - rss[0]) * 1e6) if rss else 0

    def plot(self, ax=None, title: str = "utilisation during training"):
        import matplotlib.pyplot as plt

        df = self.frame()
        ax = ax or plt.subplots(figsize=(9, 3))[1]
        busy = "gpu %" if "gpu %" in df else "cpu %"
        ax.plot(df["t"], df[busy], label=busy)
        ax.axhline(80, color="red", linestyle="--", label="80% target")
        ax.set(xlabel="seconds", ylabel="utilisation %", ylim=(0, 105), title=title)
        memory = "gpu MB" if "gpu MB" in df else "rss MB"
        twin = ax.twinx()
        twin.plot(df["t"], df[memory], color="grey", alpha=0.6, label=memory)
        twin.set_ylabel(memory)
        if "power W" in df:
            twin.plot(df["t"], df["power W"], color="green", alpha=0.6, label="power W")
        lines = ax.get_legend_handles_labels()
        lines2 = twin.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
        return ax


class _StepClock(TrainerCallback):
    """Times each optimizer step of a Trainer: the Trainer fetches a step's batches between the
    previous on_step_end and this on_step_begin, so that gap is data wait."""

    def __init__(self, times: StepTimes):
        self.times = times
        self._last_end = self._begin = 0.0
        self._tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        _sync()
        self._last_end = time.perf_counter()
        self._tokens = state.num_input_tokens_seen

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._begin = time.perf_counter()
        self.times.data_s.append(self._begin - self._last_end)

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self._last_end = time.perf_counter()
        self.times.compute_s.append(self._last_end - self._begin)
        seen = int(state.num_input_tokens_seen)
        self.times.tokens.append(seen - self._tokens)
        self._tokens = seen


def measure_trainer(trainer: Trainer, warmup: int = 3) -> dict[str, float]:
    """Train (the Trainer's own max_steps) and return tokens/s, step ms, data wait % and peak MB.

    The Trainer must count real tokens: TrainingArguments(include_num_input_tokens_seen="non_padding")."""
    if trainer.args.include_num_input_tokens_seen != "non_padding":
        raise ValueError(
            'set include_num_input_tokens_seen="non_padding" in the training arguments, so that only '
            "real tokens count (padding is not speed)"
        )
    times = StepTimes()
    trainer.add_callback(_StepClock(times))
    cuda = torch.cuda.is_available() and trainer.args.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with UtilisationMonitor() as monitor:
        trainer.train()
    times.peak_bytes = torch.cuda.max_memory_allocated() if cuda else monitor.rss_growth_bytes()
    return times.summary(warmup)


def measure_loop(
    batches: Iterable, step: Callable[[object], int], n_steps: int, warmup: int = 3
) -> dict[str, float]:
    """The same figures for a plain PyTorch loop: `step(batch)` trains on one batch and returns
    how many items (tokens, images) it held."""
    times = StepTimes()
    iterator = iter(batches)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with UtilisationMonitor() as monitor:
        for _ in range(n_steps):
            t0 = time.perf_counter()
            batch = next(iterator)
            _sync()
            t1 = time.perf_counter()
            n = step(batch)
            _sync()
            times.data_s.append(t1 - t0)
            times.compute_s.append(time.perf_counter() - t1)
            times.tokens.append(n)
    times.peak_bytes = torch.cuda.max_memory_allocated() if cuda else monitor.rss_growth_bytes()
    return times.summary(warmup)


def interleaved(runs: dict[str, Callable[[], dict[str, float]]], rounds: int = 3) -> pd.DataFrame:
    """Run every configuration once per round, rounds times, and report each figure's median.
    Interleaving spreads slow moments (another process, thermal throttling) over all of them.
    The first configuration runs once more beforehand, untimed, to warm the process up."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    next(iter(runs.values()))()
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
    return pd.DataFrame(
        {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    ).T


def largest_batch(fits: Callable[[int], bool], limit: int = 4096) -> int:
    """The largest batch size b <= limit with fits(b), by doubling then bisecting.

    `fits` tries one training step at batch b and says whether it ran within memory (on a GPU:
    no torch.cuda.OutOfMemoryError). Assumes that if b fits, every smaller batch fits too."""
    if not fits(1):
        return 0
    low, high = 1, 2
    while high <= limit and fits(high):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:  # low fits, high does not (or is past the limit)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


# --- the SFT tricks of notebook 07, as SFTConfig changes -----------------------------------------------

BASELINES = ("TRL defaults", "pad every row to max_length")


def sft_variants(profile, pad_to: int = 1024) -> tuple[dict[str, dict], dict[str, str]]:
    """(variants, skipped): SFTConfig keyword changes to measure on this profile's device, each
    alone and stacked, and the tricks this device cannot use, with the reason. The second
    baseline pads every row to `pad_to` tokens, a newcomer's fixed max_length. Variants that
    attend per sequence (helpers.packed_attention) are registered with transformers here."""
    from helpers import packed_attention

    gpu = profile.device == "cuda"
    # TRL turns bf16 on. A GPU before Ampere (a T4: compute capability 7.5) only emulates it, slowly,
    # though torch.cuda.is_bf16_supported() says True there: every variant runs fp16 instead, so
    # each trick is measured against a sane base.
    base = {"bf16": False, "fp16": True} if gpu and not profile.bf16 else {}
    variants: dict[str, dict] = {
        "TRL defaults": {},
        # Every batch of this one has the same shape (8 x pad_to), so a few steps give its rate;
        # a whole epoch of it was most of the benchmark's time on a slow CPU.
        "pad every row to max_length": {
            "pad_to_multiple_of": pad_to,
            "max_length": pad_to,
            "max_steps": 4,
        },
    }
    skipped: dict[str, str] = {}
    if not gpu:
        variants["bf16 off"] = {"bf16": False}
        # TRL's bf16 stays on where the CPU has bf16 units; elsewhere it is emulated, and slower
        precision = {} if profile.hardware.cpu_bf16 else {"bf16": False}
    elif profile.bf16:
        precision = {}
        skipped["bf16"] = "already on: TRL's default on a bf16 GPU"
    else:
        precision = base
        skipped["bf16"] = (
            "TRL's default, but emulated on a GPU before Ampere (compute capability 8.0): "
            "every variant here runs fp16 mixed precision instead"
        )
    variants["checkpointing off"] = {"gradient_checkpointing": False}
    padding_free = {"padding_free": True, "max_length": None}
    variants["padding-free"] = padding_free
    stacked = {**precision, "gradient_checkpointing": False, **padding_free}
    if profile.attn_implementation == "flash_attention_2":
        fa2 = {"model_init_kwargs": {"attn_implementation": "flash_attention_2"}}
        variants["FlashAttention 2"] = fa2
        stacked.update(fa2)
        skipped["attention per sequence"] = "FlashAttention 2 attends within each sequence already"
    else:
        per_sequence = {"model_init_kwargs": {"attn_implementation": packed_attention.register()}}
        variants["padding-free, attention per sequence"] = padding_free | per_sequence
        stacked.update(per_sequence)
        skipped["FlashAttention 2"] = (
            "needs an Ampere or newer GPU and flash-attn; SDPA (the default) runs instead"
        )
    # Length grouping cuts padding but orders the rows by length, and that costs held-out loss
    # (section 3 measures it); padding-free has no padding left to cut, so the recipe leaves it out.
    variants["length-grouped batches"] = {"train_sampling_strategy": "group_by_length"}
    variants["packing (bfd, 512 x batch 2)"] = {
        "packing": True,
        "max_length": 512,
        "per_device_train_batch_size": 2,
    }
    if gpu:
        variants["2 DataLoader workers, pinned memory"] = {
            "dataloader_num_workers": 2,
            "dataloader_pin_memory": True,
        }
        variants["torch.compile"] = {"torch_compile": True}
        stacked["dataloader_num_workers"] = 2
    else:
        skipped["DataLoader workers"] = (
            "text batches are cheap to build, and on a CPU workers take cores from the model; "
            "the image pipeline below measures them"
        )
        skipped["torch.compile"] = (
            "needs gcc and ~45 s to compile here, then recompiles as batch shapes change (no gain "
            'measured on this CPU); to try it, add a variant with {"torch_compile": True}'
        )
    variants["stacked recipe"] = stacked
    return {name: {**base, **changes} for name, changes in variants.items()}, skipped


def sft_trainer(
    model: str, tokenizer, dataset, changes: dict, output_dir: str, batch_size: int = 8, **settings
):
    """A quiet SFTTrainer for one epoch over `dataset` in batches of `batch_size` rows, under one
    variant's `changes` (and any further SFTConfig `settings`), saving nothing."""
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    args = {
        "output_dir": output_dir,
        "num_train_epochs": 1,
        "per_device_train_batch_size": batch_size,
        "use_cpu": not torch.cuda.is_available(),
        "include_num_input_tokens_seen": "non_padding",
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        **settings,
        **changes,
    }
    trainer = SFTTrainer(
        model=model, args=SFTConfig(**args), train_dataset=dataset, processing_class=tokenizer
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def sft_benchmark(
    model: str,
    tokenizer,
    dataset,
    variants: dict[str, dict],
    rounds: int = 3,
    batch_size: int = 8,
    output_dir: str = "runs/bench",
) -> pd.DataFrame:
    """Median figures of each variant (SFTTrainer on `model`, a path or hub id), interleaved,
    with each variant's real tokens per second as a ratio over both baselines.

    Every variant trains one epoch over the same rows, every step counted: a few steps of a
    length-grouped sampler would see only some lengths (it puts the longest batch first). The
    padded baseline, whose batches all have one shape, may set max_steps instead. A rehearsal of
    a GPU profile (helpers.rehearsal) runs one round of one step a variant: its figures mean
    nothing, and each variant's code path runs (on a CPU, a stand-in's step at 1,024 tokens takes
    seconds)."""
    from functools import partial

    from helpers import rehearsal

    if rehearsal.active():
        rounds = 1
        dataset = dataset.select(range(min(len(dataset), batch_size)))
        variants = {name: changes | {"max_steps": 1} for name, changes in variants.items()}

    def run(changes: dict) -> dict[str, float]:
        return measure_trainer(
            sft_trainer(model, tokenizer, dataset, changes, output_dir, batch_size), warmup=0
        )

    table = interleaved({name: partial(run, changes) for name, changes in variants.items()}, rounds)
    for base in BASELINES:
        if base in table.index:
            table[f"x {base}"] = table["tokens/s"] / table.loc[base, "tokens/s"]
    return table


def real_token_share_of(trainer: Trainer) -> float:
    """Share of real (not padding) tokens in the positions a trainer's batches compute, one epoch."""
    real = computed = 0
    for batch in trainer.get_train_dataloader():
        mask = batch.get("attention_mask")
        computed += batch["input_ids"].numel()
        real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
    return real / computed


@torch.no_grad()
def chat_loss(model, tokenizer, rows: list[dict], max_tokens: int = 4096) -> float:
    """Mean cross-entropy per token over every token of chat `rows` (dicts with "messages"), the
    tokens SFT trains on by default. Batches hold at most `max_tokens` padded positions: a hub
    set's long rows times a 49,152-token vocabulary would otherwise fill a GPU with logits."""
    from helpers.training import token_batches

    was_training = model.training
    model.eval()
    encoded = [tokenizer.apply_chat_template(r["messages"], return_dict=True)["input_ids"] for r in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    for batch in token_batches(encoded, [len(ids) for ids in encoded], max_tokens):
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch], device=model.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch], device=model.device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]  # padded on the right
        targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum"
        ).item()
        count += int((targets != -100).sum())
    model.train(was_training)
    return total / count


def sft_quality(
    model: str,
    tokenizer,
    dataset,
    held_out: list[dict],
    variants: dict[str, dict],
    seeds: tuple[int, ...] = (0, 1, 2),
    learning_rate: float = 2e-4,
    batch_size: int = 8,
    output_dir: str = "runs/quality",
) -> pd.DataFrame:
    """Held-out loss (chat_loss on `held_out`) after one epoch over `dataset` under each variant,
    one row per variant and a column per seed: the same rows, the same tokens, the same learning
    rate, so a variant that trains faster but worse shows it against the seed spread."""
    from helpers import rehearsal
    from helpers.training import trained_model

    if rehearsal.active():  # stand-ins with random weights: each variant's code path, one step a seed
        dataset, seeds, held_out = (
            dataset.select(range(min(len(dataset), batch_size))),
            seeds[:2],
            held_out[:2],
        )
    table = {}
    for name, changes in variants.items():
        losses = {}
        for seed in seeds:
            epoch = {k: v for k, v in changes.items() if k != "max_steps"}
            trainer = sft_trainer(
                model,
                tokenizer,
                dataset,
                epoch,
                output_dir,
                batch_size,
                learning_rate=learning_rate,
                seed=seed,
            )
            trainer.train()
            # without accelerate's autocast wrapper: every model scored in the same precision
            losses[f"seed {seed}"] = chat_loss(trained_model(trainer), tokenizer, held_out)
        table[name] = losses
    table = pd.DataFrame(table).T
    table["mean"] = table.mean(axis=1)
    table["seed spread"] = table.drop(columns="mean").max(axis=1) - table.drop(columns="mean").min(axis=1)
    return table


def quality_verdict(table: pd.DataFrame, name: str, reference: str = "TRL defaults") -> str:
    """Whether `name`'s mean held-out loss (a sft_quality table) is within the seed spread of the
    reference's, or worse or better beyond it."""
    gap = table.loc[name, "mean"] - table.loc[reference, "mean"]
    noise = max(table.loc[name, "seed spread"], table.loc[reference, "seed spread"])
    verdict = "within the seed spread" if abs(gap) <= noise else ("worse" if gap > 0 else "better")
    return f"{name}: held-out loss {gap:+.3f} vs {reference} (seed spread {noise:.3f}): {verdict}"


# --- where a step's time goes ------------------------------------------------------------------------

PROFILE_PARTS = (
    "matrix multiplies",
    "attention",
    "other tensor ops",
    "optimizer",
    "data loading",
    "Python and framework",
)


def _part(name: str) -> str:
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if name.split("::")[-1].lstrip("_") in {"mm", "addmm", "addmm_", "bmm", "baddbmm", "linear"}:
        return "matrix multiplies"
    return "other tensor ops"


def _span(event) -> str | None:
    """The PROFILE_PARTS span an event is, or runs inside, if any."""
    while event is not None:
        if event.name.startswith("Optimizer."):
            return "optimizer"
        if event.name.startswith("enumerate(DataLoader)"):
            return "data loading"
        event = event.cpu_parent
    return None


class _ProfiledSteps(TrainerCallback):
    """torch.profiler from the start of training to the end of its last step: the Trainer's set-up
    before and its clean-up after (a garbage collection of ~0.3 s) are not steps."""

    def __init__(self, cuda: bool):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        self.profiler = profile(activities=activities)
        self.wall = self._start = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        _sync()
        with _c_stderr_silenced():
            self.profiler.__enter__()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            _sync()
            self.wall = time.perf_counter() - self._start
            with _c_stderr_silenced():
                self.profiler.__exit__(None, None, None)


@contextlib.contextmanager
def _c_stderr_silenced():
    """The profiler's C++ side writes a line at each start and stop straight to file descriptor 2,
    which a notebook shows; for those moments only, it goes nowhere."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def step_profile(trainer: Trainer) -> pd.Series:
    """Train under torch.profiler and split the steps' wall time into PROFILE_PARTS, in % of it.

    On a CPU: the optimizer's step and zero_grad, and fetching batches, count whole (their Python
    included); every other tensor op counts by its own (self) time; "Python and framework" is the
    rest of the wall time: the Trainer, the model's Python, autograd's bookkeeping, each op's
    dispatch. On a GPU, ops count by the time their kernels ran, and "Python and framework" is the
    time the GPU sat idle, waiting for the host. The profiler's own overhead lands in that last
    part too: read it as an upper bound."""
    from helpers import rehearsal

    if rehearsal.active():  # a stand-in's step takes seconds on a CPU: one step shows the code path
        trainer.args.max_steps = 1
    cuda = torch.cuda.is_available() and trainer.args.device.type == "cuda"
    steps = _ProfiledSteps(cuda)
    trainer.add_callback(steps)
    trainer.train()
    return _split_wall(steps.profiler.events(), steps.wall, cuda)


def _split_wall(events, wall: float, cuda: bool) -> pd.Series:
    """step_profile's arithmetic over the profiler's events (FunctionEvent: name, cpu_parent and
    times in microseconds), `wall` seconds of steps."""
    parts = dict.fromkeys(PROFILE_PARTS, 0.0)
    for event in events:
        span = _span(event)
        if cuda:
            if event.name.startswith("aten::"):
                parts[span or _part(event.name)] += event.self_device_time_total / 1e6
        elif span is not None:
            if event.name.startswith(("Optimizer.", "enumerate(DataLoader)")):
                parts[span] += event.cpu_time_total / 1e6
        elif event.name.startswith("aten::"):
            parts[_part(event.name)] += event.self_cpu_time_total / 1e6
    parts["Python and framework"] = max(wall - sum(parts.values()), 0.0)
    return pd.Series({k: 100 * v / wall for k, v in parts.items()}, name="% of wall time")
