"""Every run a lesson makes on the GPU profiles, declared once as data, and what each costs in GPU
memory and minutes, estimated before anything runs.

    python -m helpers.budget                 # every lesson on `colab` (a T4) and `full` (an A100)
    python -m helpers.budget --write         # and put the estimates into README.md's GPU columns
    runs = lesson_runs("02", "colab")        # the runs notebook 02 makes on a T4
    plan = lesson_plan("09", profile)        # what notebook 09 reads: its runs by key, printed as a table
    estimate(run, "colab")                   # its peak memory (the memory planner) and minutes

A run is one training run, or one batch of generation or scoring, with the shapes the notebook
gives it on that profile: model role, method and precision (a helpers.memory.TrainSetup), batch,
accumulation, sequence length, image tiles, steps, and what it generates or scores.

**Memory** is the planner's peak for training (helpers.memory.plan_memory on the published
configuration in data/hub/models.json), plus a VLM's frozen vision tower and a second copy of the
weights where a trainer keeps a reference model; for generation, the weights plus the KV cache and
one step's logits; for scoring, the weights plus the batch's logits in half and full precision.

**Time** counts FLOPs over an effective rate: per trained token 6N for a full fine-tune and 4N
with LoRA (the frozen weights get no gradient), 2N more under gradient checkpointing, 2N for a
reference model's forward, and causal attention's 6 x layers x sequence x width; a vision tower's
forward per image tile; generation one decode step per new token per batch, at whichever is
slower, reading the weights from memory or eager PyTorch's per-layer launch overhead. Every
sequence counts at its full length (padding included): the estimates are upper bounds. The
rates in GPUS are assumptions, stated, until a GPU measures them; the CPU rates (llama.cpp on
Colab's two cores) too, except the llama.cpp build, measured on a 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass, replace
from functools import cache

from transformers import LlamaConfig

from helpers import registry
from helpers.memory import GPUS_GIB, HEADROOM, GiB, TrainSetup, kv_cache_bytes, plan_memory

PROFILES = ("colab", "full")
LESSONS = ("00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10")


@dataclass(frozen=True)
class Gpu:
    name: str
    memory: float  # bytes usable (helpers.memory.GPUS_GIB)
    flops: float  # effective training and prefill rate for models of 0.1-2 B parameters
    bandwidth: float  # bytes/s read from GPU memory
    layer_s: float  # eager PyTorch's launch overhead per decoder layer per decode step
    step_s: float  # and per decode step (sampling, stopping criteria)


# Assumptions until measured: a T4 (65 TFLOPS fp16 peak) gives models this small 8-12 TFLOPS; an
# A100 (312 bf16 peak) about a quarter of its peak. Decoding a 30-layer model with HF generate is
# launch-bound: some 8-10 ms a step.
GPUS = {
    "colab": Gpu("T4 (16 GB)", GPUS_GIB["T4 (16 GB)"] * GiB, 10e12, 300e9, 2.5e-4, 2e-3),
    "full": Gpu("A100 40 GB", GPUS_GIB["A100 40 GB"] * GiB, 80e12, 1.5e12, 1.5e-4, 1.5e-3),
}
LIMIT_MINUTES = {"colab": 45, "full": 20}  # a lesson, in a workshop slot
COURSE_LIMIT_MINUTES = {"colab": 240}  # the whole course on a T4
SETUP_MINUTES = 2.0  # a lesson's installs, downloads and model loading, assumed
CPU_FLOPS, CPU_BANDWIDTH = 50e9, 10e9  # llama.cpp on Colab's 2 vCPUs: prompt and decode, assumed
LLAMA_CPP_BUILD_MINUTES = 3.5  # llama-cpp-python built from source: 3.2-3.4 min on 2 cores here
GGUF_BYTES_PER_WEIGHT = {"F32": 4.0, "Q8_0": 34 / 32, "Q4_K_M": 0.6, "Q4_0": 18 / 32}
PROMPT_TOKENS = 48  # a held-out skill question in the chat template


@dataclass(frozen=True)
class Run:
    """One run of a lesson on a profile, with the shapes the notebook gives it."""

    name: str
    role: str  # a model role of helpers.registry
    setup: TrainSetup | None = None  # None: nothing trained
    steps: int = 0  # optimizer steps
    accum: int = 1  # micro-batches per optimizer step
    sequences: int = 1  # sequences per row: 2 for a preference pair
    reference: bool = False  # a frozen reference forward of every sequence (DPO, GRPO with KL)
    reference_copy: bool = False  # ... held as a second copy of the weights (no adapter to switch off)
    tiles: int = 0  # image tiles per sequence, through the frozen vision tower
    generated: int = 0  # sequences generated
    new_tokens: int = 0
    gen_batch: int = 64
    scored: int = 0  # sequences run forward only (log-probabilities, logits)
    score_len: int = 0
    score_batch: int = 8
    on_cpu: bool = False  # llama.cpp on the machine's CPU (GGUF)
    gguf: str = "F32"
    repeats: int = 1  # the same run again: seeds, sweep points
    lm_head: bool = True  # False: a reward model's one-number head instead of the vocabulary
    to_the_limit: bool = False  # grows until the GPU is full, on purpose (07's largest batch)
    key: str = ""  # how a notebook that reads its plan names the run (lesson_plan)

    def describe(self) -> str:
        """One line: what runs, in which shapes."""
        parts = []
        if self.setup is not None:
            s = self.setup
            parts.append(
                f"{s.method} {s.precision}, batch {s.batch_size}"
                + (f" x {self.sequences}" if self.sequences > 1 else "")
                + f" x {s.seq_len} tokens"
                + (f", accumulate {self.accum}" if self.accum > 1 else "")
                + (", checkpointing" if s.gradient_checkpointing else "")
                + f", {self.steps} steps"
                + (", reference model" if self.reference else "")
            )
        if self.generated:
            parts.append(f"generates {self.generated:,} x {self.new_tokens} tokens")
        if self.scored:
            parts.append(f"scores {self.scored:,} x {self.score_len} tokens")
        times = f" (x{self.repeats})" if self.repeats > 1 else ""
        return f"{self.name}{times}: {'; '.join(parts) or 'no GPU work'}"

    @property
    def train_tokens(self) -> int:
        if self.setup is None:
            return 0
        rows = self.steps * self.accum * self.setup.batch_size * self.sequences
        return self.repeats * rows * self.setup.seq_len


@dataclass(frozen=True)
class Estimate:
    run: Run
    minutes: float
    peak: float  # bytes on the GPU (0 for a CPU run)
    flops: float


# --- the published shapes ----------------------------------------------------------------------------


@cache
def _published(profile: str, role: str) -> dict:
    hub_id = registry.HUB_MODELS[profile][role]
    return json.loads((registry.course_root() / "data" / "hub" / "models.json").read_text())["models"][hub_id]


@cache
def text_config(profile: str, role: str) -> LlamaConfig:
    config = dict(_published(profile, role)["config"])
    fields = config.get("text_config", config)
    return LlamaConfig(**{k: v for k, v in fields.items() if k not in ("architectures", "model_type")})


def _decoder_params(c: LlamaConfig) -> tuple[int, int]:
    """(parameters a token's matmuls touch: decoder layers and lm_head; all, embeddings included)."""
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    body = c.num_hidden_layers * layer
    embed = c.vocab_size * c.hidden_size
    return body + embed, body + embed * (1 if c.tie_word_embeddings else 2)


@dataclass(frozen=True)
class _Vision:
    params: int
    patches: int  # per tile
    width: int
    layers: int
    tokens: int  # image tokens per tile in the language model's sequence


@cache
def vision(profile: str) -> _Vision:
    spec = _published(profile, "vlm")
    v = spec["config"]["vision_config"]
    params = v["num_hidden_layers"] * (
        4 * v["hidden_size"] ** 2 + 2 * v["hidden_size"] * v["intermediate_size"]
    )
    patches = (v["image_size"] // v["patch_size"]) ** 2
    return _Vision(
        params, patches, v["hidden_size"], v["num_hidden_layers"], spec["processor"]["image_seq_len"]
    )


def image_tokens(profile: str, tiles: int) -> int:
    if profile == "tiny":
        from helpers.tiny.build import IMAGE_TOKENS

        return tiles * IMAGE_TOKENS
    return tiles * vision(profile).tokens


# --- one run -----------------------------------------------------------------------------------------


def estimate(run: Run, profile: str) -> Estimate:
    gpu = GPUS[profile]
    c = text_config(profile, run.role)
    active, total = _decoder_params(c)
    if not run.lm_head:  # a sequence classifier: no vocabulary-wide matmul, no vocabulary logits
        active -= c.vocab_size * c.hidden_size
    width = c.num_attention_heads * (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    seconds, flops, peak = 0.0, 0.0, 0.0
    vis = vision(profile) if run.tiles else None
    weights_16 = 2.0 * total + (2.0 * vis.params if vis else 0.0)

    if run.on_cpu:  # llama.cpp: prompts compute-bound, decoding bandwidth-bound, one sequence at a time
        prompt = run.repeats * run.generated * PROMPT_TOKENS * 2 * active
        decode = (
            run.repeats
            * run.generated
            * run.new_tokens
            * total
            * GGUF_BYTES_PER_WEIGHT[run.gguf]
            / CPU_BANDWIDTH
        )
        return Estimate(run, (prompt / CPU_FLOPS + decode) / 60, 0.0, prompt)

    if run.setup is not None:
        s = run.setup
        per_token = (6 if s.method == "full" else 4) * active
        per_token += 2 * active if s.gradient_checkpointing else 0
        per_token += 6 * c.num_hidden_layers * s.seq_len * width  # causal attention, forward and backward
        per_token += (2 * active + 2 * c.num_hidden_layers * s.seq_len * width) if run.reference else 0
        flops += run.train_tokens * per_token
        if vis:  # the frozen tower's forward, once per tile of every sequence
            sequences = run.repeats * run.steps * run.accum * s.batch_size * run.sequences
            flops += sequences * run.tiles * _tile_flops(vis)
        micro = replace(s, batch_size=s.batch_size * run.sequences)  # TRL stacks chosen over rejected
        plan = plan_memory(c, micro)
        logits = 0.0 if run.lm_head else plan.logits
        peak = (
            plan.total
            - logits
            + (2.0 * vis.params if vis else 0.0)
            + (weights_16 if run.reference_copy else 0.0)
        )
        states = plan.weights + plan.gradients + plan.optimizer
    else:
        states = weights_16

    if run.generated:
        prompt_len = PROMPT_TOKENS + (image_tokens(profile, run.tiles) if run.tiles else 0)
        flops += run.repeats * run.generated * prompt_len * 2 * active
        steps = run.repeats * math.ceil(run.generated / run.gen_batch) * run.new_tokens
        step_s = max(weights_16 / gpu.bandwidth, c.num_hidden_layers * gpu.layer_s + gpu.step_s)
        seconds += steps * step_s
        kv = kv_cache_bytes(c, run.gen_batch, prompt_len + run.new_tokens)
        peak = max(peak, states + kv + run.gen_batch * c.vocab_size * 4.0)
    if run.scored:
        flops += (
            run.repeats
            * run.scored
            * run.score_len
            * (2 * active + 2 * c.num_hidden_layers * run.score_len * width)
        )
        logits = run.score_batch * run.score_len * c.vocab_size * (2 + 4)  # half, then fp32 log-softmax
        peak = max(peak, states + logits)
    seconds += flops / gpu.flops
    return Estimate(run, seconds / 60, peak, flops)


def _tile_flops(v: _Vision) -> float:
    return 2.0 * v.params * v.patches + 4.0 * v.layers * v.patches**2 * v.width


def fits(e: Estimate, profile: str) -> bool:
    """The planner's peak fits the profile's GPU with HEADROOM (10%) to spare (a run that fills
    the GPU on purpose fits by definition)."""
    return e.run.to_the_limit or e.peak <= GPUS[profile].memory * (1 - HEADROOM)


# --- every lesson's runs -----------------------------------------------------------------------------


def _precision(profile: str) -> str:
    # a T4 trains in fp16 autocast; `tiny`, on a CPU, in float32
    return {"full": "bf16", "tiny": "fp32"}.get(profile, "mixed")


# Lessons whose notebooks read their runs from here (lesson_plan), so declared on `tiny` too.
PLANNED = ("02", "03", "04", "05", "06", "07", "09", "10")


def lesson_runs(lesson: str, profile: str, sizes: registry.Sizes | None = None) -> list[Run]:
    """The runs notebook `lesson` makes on `profile` ("colab" or "full"; "tiny" too for the lessons
    in PLANNED), from the same sizes (helpers.registry.SIZES, or `sizes`: a rehearsal's, shrunk)
    and lesson constants the notebook uses."""
    if lesson not in _LESSONS:
        raise KeyError(f"lesson {lesson!r}: declared lessons are {', '.join(LESSONS)}")
    if profile not in PROFILES and not (profile == "tiny" and lesson in PLANNED):
        raise ValueError(
            f"profile {profile!r}: lesson {lesson}'s runs are declared for {', '.join(PROFILES)}"
            + (f"; on tiny too for lessons {', '.join(PLANNED)}" if profile == "tiny" else "")
        )
    return _LESSONS[lesson](profile, sizes or registry.SIZES[profile])


class Plan(dict):
    """A lesson's runs on a profile, by key; printed, one line a run."""

    def __init__(self, lesson: str, profile: str, runs: list[Run]) -> None:
        super().__init__((r.key or r.name, r) for r in runs)
        self.lesson, self.profile = lesson, profile

    def __str__(self) -> str:
        lines = [f"Runs of lesson {self.lesson} on {self.profile} (helpers.budget):"]
        return "\n".join(lines + [f"  {r.describe()}" for r in self.values()])


def lesson_plan(lesson: str, profile) -> Plan:
    """What a notebook reads: its runs on `profile` (a helpers.runtime.Profile, whose sizes a
    rehearsal shrinks, or a profile's name), by key (Run.key), and a printable table."""
    if isinstance(profile, str):
        return Plan(lesson, profile, lesson_runs(lesson, profile))
    return Plan(lesson, profile.name, lesson_runs(lesson, profile.name, profile.sizes))


def _generate(name: str, role: str, n: int, new_tokens: int = 32, **kw) -> Run:
    return Run(name, role, generated=n, new_tokens=new_tokens, **kw)


def _runs_00(p: str, s: registry.Sizes) -> list[Run]:
    return [
        _generate("base model answers the held-out questions", "base", s.n_eval),
        _generate("chat model answers them", "chat", s.n_eval),
        _generate("base model completes them in its own format", "base", s.n_eval),
    ]


def _runs_01(p: str, s: registry.Sizes) -> list[Run]:
    return []  # tokenizers only


def _lora(p: str, s: registry.Sizes, **kw) -> TrainSetup:
    return TrainSetup(
        method="lora", precision=_precision(p), batch_size=s.batch_size, seq_len=s.max_length, **kw
    )


# Notebook 02's comparison and resume runs train on a fixed number of rows, whatever the batch: on
# `tiny` (16 rows a step) 100 and 40 steps; on a T4 (32 rows a step) 50 and 20, so that eight
# comparison runs fit a workshop slot beside the main run.
COMPARE_ROWS_02, RESUME_ROWS_02 = 1_600, 640


# On `full` the main run trains the 1.7B for 40 steps (1,280 conversations), and the comparison and
# resume runs train the profile's smaller model (the 360M) on 960 rows, in micro-batches of 4 rows:
# the 1.7B at 16 rows of 2,048 tokens packed into one micro-batch needs 133 GiB, and ten such runs
# take 1.5 hours.
MAIN_STEPS_02 = {"full": 40}
COMPARE_ROWS_BY_PROFILE_02 = {"full": 960}
COMPARE_ROLE_02 = {"full": "student"}
COMPARE_MICRO_ROWS_02 = {"full": 4}


def _runs_02(p: str, s: registry.Sizes) -> list[Run]:
    # Notebook 02 reads these (lesson_plan). The main run at notebook 01's max_length, at most the
    # profile's cap.
    main = replace(_lora(p, s, gradient_checkpointing=True), seq_len=s.max_length_cap)
    # Padding-free comparison runs: a micro-batch is its rows concatenated into one sequence, so the
    # notebook reads the rows a micro-batch packs as this seq_len over the main run's.
    micro_rows = COMPARE_MICRO_ROWS_02.get(p, s.batch_size)
    packed = replace(main, batch_size=1, seq_len=micro_rows * s.max_length_cap, gradient_checkpointing=False)
    rows_a_step = s.batch_size * s.grad_accum
    accum = max(1, rows_a_step // micro_rows)  # the same rows a step as the main run
    compare = max(1, min(s.max_steps // 2, COMPARE_ROWS_BY_PROFILE_02.get(p, COMPARE_ROWS_02) // rows_a_step))
    resume = max(4, min(4 * s.max_steps, RESUME_ROWS_02 // rows_a_step))  # two checkpoints and a stop
    role = COMPARE_ROLE_02.get(p, "base")
    main_steps = min(MAIN_STEPS_02.get(p, 200), s.max_steps)
    return [
        _generate("base model before SFT", "base", s.n_eval),
        Run("LoRA SFT (main run)", "base", main, key="main", steps=main_steps, accum=s.grad_accum),
        # its held-out loss, 8 times in the run: the held-out questions with their short answers
        Run("held-out loss during the main run", "base", scored=8 * s.n_eval, score_len=128),
        _generate("after SFT, and merged", "base", s.n_eval, repeats=2),
        Run(
            "comparison: LoRA x2 seeds, NEFTune, 8-bit AdamW, label smoothing",
            role,
            packed,
            key="compare",
            steps=compare,
            accum=accum,
            repeats=5,
        ),
        Run(
            "comparison: QLoRA 4-bit",
            role,
            replace(packed, method="qlora", quant_bits=4),
            steps=compare,
            accum=accum,
        ),
        Run(
            "comparison: QLoRA 8-bit",
            role,
            replace(packed, method="qlora", quant_bits=8),
            steps=compare,
            accum=accum,
        ),
        Run(
            "comparison: prefix tuning (padded)",
            role,
            replace(main, batch_size=micro_rows, gradient_checkpointing=False),
            steps=compare,
            accum=accum,
        ),
        _generate("comparison runs scored", role, s.n_eval, repeats=8),
        # straight through, then stopped halfway and resumed: twice the steps in all
        Run(
            "resume: straight, stopped, resumed",
            role,
            packed,
            key="resume",
            steps=resume,
            accum=accum,
            repeats=2,
        ),
        _generate("resume runs scored", role, s.n_eval, repeats=2),
    ]


def _vlm_setup(p: str, s: registry.Sizes, tiles: int, **kw) -> TrainSetup:
    text = 40  # a ChartQA question and its short answer in the chat template
    return TrainSetup(
        precision=_precision(p), batch_size=s.batch_size, seq_len=text + image_tokens(p, tiles), **kw
    )


TILES = {"colab": 1, "full": 5}  # helpers.vlm.TILES_PER_SIDE: one tile, or 2 x 2 and the global view
LANGUAGE_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# On `full`, 200 steps of 32 charts (6,400 charts, 5 tiles each): three times the profile's steps, as on
# the other profiles, would take over two hours.
SFT_STEPS_03 = {"full": 200}


def _runs_03(p: str, s: registry.Sizes) -> list[Run]:
    # Notebook 03 reads these (lesson_plan).
    t, n_test = TILES.get(p, 1), min(s.n_eval, 100)
    method = "lora" if p == "tiny" else "qlora"  # 4-bit loading on the GPU profiles only
    label = method.replace("q", "Q").replace("lora", "LoRA")
    # Checkpointing where memory is short; tiny-vlm's 0.9 M parameters leave nothing to save
    qlora = _vlm_setup(p, s, t, method=method, gradient_checkpointing=p != "tiny")
    return [
        _generate("VLM before SFT", "vlm", n_test, new_tokens=16, tiles=t),
        Run(
            "memory: one step of a full fine-tune",
            "vlm",
            _vlm_setup(p, s, t, method="full"),
            steps=1,
            tiles=t,
        ),
        Run(
            f"memory: one step of {label}, without and with checkpointing",
            "vlm",
            replace(qlora, gradient_checkpointing=False),
            steps=1,
            tiles=t,
            repeats=2,
        ),
        Run(
            f"{label} SFT on charts",
            "vlm",
            qlora,
            key="sft",
            steps=min(SFT_STEPS_03.get(p, 3 * s.max_steps), 3 * s.max_steps),
            accum=s.grad_accum,
            tiles=t,
        ),
        _generate(
            "after SFT, with charts and with blank images", "vlm", n_test, new_tokens=16, tiles=t, repeats=2
        ),
    ]


# On `full`, the 1.7B's four DPO runs at 16 pairs of 2,048 tokens a micro-batch need 38 GiB and over
# three hours: there, 8 pairs a micro-batch, cut at 1,024 tokens, for 25 steps (400 pairs a run).
DPO_SHAPE_04 = {"full": {"batch_size": 8, "seq_len": 1_024}}
DPO_STEPS_04 = {"tiny": 150, "colab": 120, "full": 25}
# tiny-vlm's chart pairs: 120 steps gained 2-5 points of reward accuracy over 60 in two worlds.
VLM_DPO_STEPS_04 = {"tiny": 120}


def _runs_04(p: str, s: registry.Sizes) -> list[Run]:
    # Notebook 04 reads these (lesson_plan). Four DPO runs of the same length (the main run and the
    # sweep): 150 steps on `tiny`; 120 on a T4 (1,920 pairs), so that all four fit its slot.
    steps = min(DPO_STEPS_04[p], int(0.75 * s.max_steps))
    dpo = replace(  # a GPU's pairs run to 1,024 tokens and more
        _lora(p, s, gradient_checkpointing=p != "tiny"), **DPO_SHAPE_04.get(p, {})
    )
    pairs = {"sequences": 2, "reference": True}
    vlm_dpo = replace(
        _vlm_setup(p, s, TILES.get(p, 1), method="lora", lora_targets=LANGUAGE_LINEAR[:4]), batch_size=8
    )
    return [
        Run(
            "SFT stage, when notebook 02 has not run",
            "base",
            _lora(p, s, gradient_checkpointing=p == "full"),  # the 1.7B at 16 x 2,048 tokens
            key="sft",
            steps=min(MAIN_STEPS_02.get(p, 100), s.max_steps),  # on `full`, as long as 02's main run
        ),
        Run(  # at most 200 held-out pairs, cut as DPO trains on them
            "held-out pairs scored (before, after, 3 sweep runs)",
            "base",
            scored=2 * min(s.n_eval, 200) * 5,
            score_len=dpo.seq_len,
        ),
        _generate("held-out questions, before and after", "base", s.n_eval, repeats=2),
        Run("DPO beta 0.5 (main run)", "base", dpo, key="dpo", steps=steps, accum=2, **pairs),
        # its held-out loss, 6 times in the run: 100 pairs, policy and reference, chosen and rejected
        Run(
            "held-out pairs' loss during the main run", "base", scored=6 * 100 * 2 * 2, score_len=dpo.seq_len
        ),
        Run("sweep: beta 0.1, beta 2.0, IPO", "base", dpo, steps=steps, accum=2, repeats=3, **pairs),
        Run(
            "DPO on the VLM with chart pairs",
            "vlm",
            vlm_dpo,
            key="vlm-dpo",
            steps=min(VLM_DPO_STEPS_04.get(p, 60), s.max_steps),
            tiles=TILES.get(p, 1),
            **pairs,
        ),
        Run(
            "chart pairs scored, with charts and blank", "vlm", scored=2 * 100 * 2, score_len=vlm_dpo.seq_len
        ),
    ]


# Notebook 05's teacher, where it answers under half the held-out questions (a hub Instruct model
# never saw the course's skills): LoRA on the chat rows, 100 steps of 32 rows on a T4 (half of 02's
# main run: the teacher already chats) and 40 on an A100, within the lessons' slots.
TEACHER_STEPS_05 = {"colab": 100, "full": 40}
STUDENT_BATCH_05 = 8  # rows a step; 8 a step for at most 150 steps are the training prompts


def _runs_05(p: str, s: registry.Sizes) -> list[Run]:
    # Notebook 05 reads these (lesson_plan). On tiny the 0.6 M-parameter student needs four passes
    # over the prompts and three seeds; on a GPU one pass and one seed. Six students a seed: three
    # methods, and on the first seed the reference and the temperatures 2 and 4.
    prompts = min(150, s.max_steps) * STUDENT_BATCH_05
    passes, seeds = (4, 3) if p == "tiny" else (1, 1)
    # float32 weights with the profile's autocast, as the notebook loads its students
    precision = "fp32" if p == "tiny" else "mixed"
    student = TrainSetup(
        method="full", precision=precision, batch_size=STUDENT_BATCH_05, seq_len=s.max_length_cap
    )
    teacher = replace(_lora(p, s, gradient_checkpointing=True), seq_len=s.max_length_cap)
    return [
        _generate("teacher answers the held-out questions", "teacher", s.n_eval),
        Run(
            "teacher taught the chat rows (LoRA, merged) if it answers under half of them",
            "teacher",
            teacher,
            key="teacher-sft",
            steps=min(TEACHER_STEPS_05.get(p, 100), s.max_steps),
            accum=s.grad_accum,
        ),
        _generate("taught teacher answers them again", "teacher", s.n_eval),
        _generate("teacher answers the training prompts", "teacher", prompts, new_tokens=48, key="prompts"),
        Run("teacher's top-k logits over its answers", "teacher", scored=prompts, score_len=s.max_length_cap),
        Run(
            "students: labels, logits, text, every label; T = 2 and 4",
            "student",
            student,
            key="students",
            steps=passes * prompts // STUDENT_BATCH_05,
            repeats=3 * seeds + 3,
        ),
        _generate("students scored", "student", s.n_eval, repeats=3 * seeds + 3),
        Run("students' held-out loss", "student", scored=(3 * seeds + 3) * s.n_eval, score_len=s.max_length),
    ]


def _runs_06(p: str, s: registry.Sizes) -> list[Run]:
    # Notebook 06 reads this (lesson_plan); its launches need two GPUs, and on one GPU they run on
    # two CPU processes with the tiny models. A batch of 64 rows in float32 would fill a T4 and an
    # A100: there it is accumulated micro-batches, the same gradient (its section 3 checks it).
    rows = min(1024, s.n_train)
    micro = {"tiny": 64, "colab": 16, "full": 8}[p]
    fp32 = TrainSetup(method="full", precision="fp32", batch_size=micro, seq_len=128)
    return [
        Run(
            "learning-rate scaling: 7 runs over the same rows (largest batch 64)",
            "base",
            fp32,
            key="lr-scaling",
            steps=math.ceil(rows / 64),
            accum=64 // micro,
            repeats=7,
        ),
    ]


QUALITY_HELD_OUT_07 = 64  # held-out chat rows scored after each of 07's quality runs


def _runs_07(p: str, s: registry.Sizes) -> list[Run]:
    # Notebook 07 reads these (lesson_plan). Its model is the profile's smallest: on `full` the
    # 360M student, as full fine-tuning of the 1.7B in eight variants overruns an A100's slot and
    # its float32 trades overrun its memory. 30 steps of 8 rows a variant on `tiny`, 50 on a GPU.
    role = "student" if p == "full" else "base"
    rows = 240 if p == "tiny" else min(400, s.n_train)
    # Enough steps at lr 2e-4 for the held-out loss to move well past its seed spread on tiny
    quality_rows = 480 if p == "tiny" else rows
    monitor_rows = 720 if p == "tiny" else min(6 * rows, s.n_train)
    seq = 512 if p == "tiny" else 1024
    trl = TrainSetup(
        method="full", precision=_precision(p), batch_size=8, seq_len=seq, gradient_checkpointing=True
    )
    fast = replace(trl, gradient_checkpointing=False)
    # float32 at 8 rows of 1,024 tokens would fill a T4: 4 rows on a GPU
    trades = replace(fast, precision="fp32", batch_size=8 if p == "tiny" else 4)
    return [
        Run(
            "benchmark: TRL defaults and up to 9 variants, 3 rounds, an epoch each",
            role,
            fast,
            key="benchmark",
            steps=rows // 8,
            repeats=10 * 3,
        ),
        Run(
            "profile: TRL defaults and the stacked recipe, 12 steps each under torch.profiler",
            role,
            fast,
            key="profile",
            # 12 steps give the shares of 30 within 3 points (tiny, measured) at half the time: the
            # profiler's bookkeeping of every op costs more than the steps
            steps=min(12, rows // 8),
            repeats=2,
        ),
        Run(
            "quality: TRL defaults, length-grouped batches and the stacked recipe, 3 seeds each",
            role,
            fast,
            key="quality",
            steps=quality_rows // 8,
            repeats=3 * 3,
            scored=3 * 3 * QUALITY_HELD_OUT_07,
            score_len=seq,
            score_batch=4096 // seq,  # helpers.throughput.chat_loss: 4,096 tokens a batch
        ),
        Run(
            "utilisation monitor: the stacked recipe for an epoch",
            role,
            fast,
            key="monitor",
            steps=monitor_rows // 8,
        ),
        Run(
            "largest batch by trying: one step a try, up to the GPU's memory by design",
            role,
            replace(fast, precision="fp32"),
            key="largest",
            steps=1,
            repeats=8,
            to_the_limit=True,
        ),
        Run(
            "checkpointing x 8-bit AdamW trades, 6 steps each", role, trades, key="trades", steps=6, repeats=4
        ),
    ]


def _runs_08(p: str, s: registry.Sizes) -> list[Run]:
    return [
        Run("eager vs SDPA forward over 1-4k tokens", "base", scored=3 * 2 * 3, score_len=4096, score_batch=1)
    ]


SEQ_09 = 512


def _runs_09(p: str, s: registry.Sizes) -> list[Run]:
    # Notebook 09 reads these (lesson_plan): change a shape here and the lesson runs it. It trains
    # the profile's small base model ("student": SmolLM2-360M on `full`, as the 1.7B's full
    # fine-tuning and GRPO's generations overrun an A100's 20-minute slot), in float32 with autocast.
    precision = "fp32" if p == "tiny" else "mixed"
    # Rows cut at 512 tokens: the SFT stage teaches the answer format, the pairs are short answers.
    seq = min(s.max_length, SEQ_09)
    sft = TrainSetup(method="full", precision=precision, batch_size=s.batch_size, seq_len=seq)
    # GRPO: a batch counts completions, 8 per prompt; a prompt and an 8-token answer
    grpo = TrainSetup(method="full", precision=precision, batch_size=64, seq_len=PROMPT_TOKENS + 8)
    # The anchored runs are longer than the narrow ones: their trained skills get half the prompts.
    narrow, anchored = min(160, s.max_steps), min(200, s.max_steps)
    k, q = 8, s.n_eval
    return [
        Run("short SFT stage", "student", sft, key="sft", steps=min(150, s.max_steps), accum=s.grad_accum),
        _generate(
            "scored with samples: greedy and 8 samples a question, a model", "student", q * (1 + k), repeats=5
        ),
        _generate("scored greedy, a model", "student", q, repeats=5),
        Run(
            "GRPO narrow, 2 seeds",
            "student",
            grpo,
            key="narrow",
            steps=narrow,
            repeats=2,
            generated=64 * narrow,
            new_tokens=8,
        ),
        Run(
            "GRPO anchored with KL, 2 seeds (4 prompts and 4 anchors a step)",
            "student",
            grpo,
            key="anchored",
            steps=anchored,
            repeats=2,
            reference=True,
            reference_copy=True,
            generated=64 * anchored,
            new_tokens=8,
        ),
        Run(
            "reward model (a pair a row)",
            "student",
            replace(sft, batch_size=2 * s.batch_size, gradient_checkpointing=True),
            key="reward-model",
            steps=min(100, s.max_steps),
            sequences=2,
            lm_head=False,
        ),
        Run(
            "GRPO on the reward model",
            "student",
            grpo,
            key="reward-model-grpo",
            steps=min(40, s.max_steps),
            generated=64 * min(40, s.max_steps),
            new_tokens=8,
        ),
        Run(
            "DPO stage",
            "student",
            replace(_lora(p, s), precision=precision, seq_len=seq, gradient_checkpointing=True),
            key="dpo",
            steps=min(60, s.max_steps),
            accum=2,
            sequences=2,
            reference=True,
        ),
        Run(
            "GRPO after DPO (the chain's last stage)",
            "student",
            grpo,
            key="chain",
            steps=min(60, s.max_steps),
            generated=64 * min(60, s.max_steps),
            new_tokens=8,
        ),
        Run(
            "drift and preference on held-out pairs, a model",
            "student",
            key="pairs",
            scored=2 * q,
            score_len=seq,
            repeats=8,
        ),
    ]


# The held-out questions notebook 10's llama.cpp sections answer, one at a time on the CPU (on a
# GPU profile too: Colab's 2 vCPUs, 4 bytes a weight read per token in F32). On `full` the 360M in
# F32 would take about 44 minutes for 500 questions; 40 fit the A100's slot.
GGUF_QUESTIONS_10 = {"full": 40}


def _runs_10(p: str, s: registry.Sizes) -> list[Run]:
    # The chain is notebook 09's, on 09's model; where 09 has not run, its SFT and DPO runs here.
    q, nine = s.n_eval, {r.key: r for r in _runs_09(p, s)}
    m = nine["sft"].role
    ship = min(q, GGUF_QUESTIONS_10.get(p, 100))  # llama.cpp answers these, one at a time on the CPU
    return [
        replace(nine["sft"], name="short SFT, when notebook 09 has not run", key=""),
        replace(nine["dpo"], name="short DPO (LoRA), when notebook 09 has not run", key=""),
        _generate("lm-eval generation task and the course's scorer (4 stages)", m, q, repeats=8),
        Run(
            "lm-eval multiple choice, 4 choices (4 stages)",
            m,
            scored=4 * 4 * q,
            score_len=128,
            score_batch=32,
        ),
        Run("judge: answer pairs in both orders", "teacher", scored=2 * q, score_len=160, score_batch=32),
        *[
            _generate(
                f"GGUF {kind} on the CPU (llama.cpp)",
                m,
                ship,
                on_cpu=True,
                gguf=kind,
                key="gguf" if kind == "F32" else "",
            )
            for kind in GGUF_BYTES_PER_WEIGHT
        ],
        _generate("GGUF F32 with the DPO adapter's GGUF, on the CPU", m, ship, on_cpu=True, gguf="F32"),
    ]


_LESSONS = {
    "00": _runs_00, "01": _runs_01, "02": _runs_02, "03": _runs_03, "04": _runs_04, "05": _runs_05,
    "06": _runs_06, "07": _runs_07, "08": _runs_08, "09": _runs_09, "10": _runs_10,
}  # fmt: skip
EXTRA_MINUTES = {"10": LLAMA_CPP_BUILD_MINUTES}  # work outside the runs: building llama.cpp

# Lessons whose runs, as configured today, overrun their profile's slot or GPU memory, and what
# overruns. tests/test_budget.py checks both ways: every other lesson fits, and every lesson here
# still overruns (remove it once resized).
NOT_YET_SIZED: dict[tuple[str, str], str] = {}


# --- per lesson ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LessonEstimate:
    lesson: str
    profile: str
    runs: tuple[Estimate, ...]

    @property
    def minutes(self) -> float:
        return SETUP_MINUTES + EXTRA_MINUTES.get(self.lesson, 0.0) + sum(e.minutes for e in self.runs)

    @property
    def peak(self) -> float:
        """The largest planned peak, leaving out a run that fills the GPU on purpose."""
        return max((e.peak for e in self.runs if not e.run.to_the_limit), default=0.0)

    @property
    def over_memory(self) -> list[Estimate]:
        return [e for e in self.runs if not fits(e, self.profile)]

    @property
    def over_time(self) -> bool:
        return self.minutes > LIMIT_MINUTES[self.profile]


def lesson_estimate(lesson: str, profile: str) -> LessonEstimate:
    return LessonEstimate(lesson, profile, tuple(estimate(r, profile) for r in lesson_runs(lesson, profile)))


def course_estimates(profile: str) -> list[LessonEstimate]:
    return [lesson_estimate(lesson, profile) for lesson in LESSONS]


def column(e: LessonEstimate) -> str:
    """A README cell: estimated minutes and peak GPU memory."""
    peak = f", {e.peak / GiB:.1f} GiB" if e.peak else ""
    return f"~{e.minutes:.0f} min{peak} (est.)"


def report(profile: str) -> str:
    gpu = GPUS[profile]
    lines = [
        f"## {profile}: {gpu.name}, {gpu.memory / GiB:.1f} GiB usable, {gpu.flops / 1e12:.0f} TFLOPS effective (assumed)",
        "",
        "| lesson | run | minutes | peak GiB | fits |",
        "|---|---|---|---|---|",
    ]
    total = 0.0
    for le in course_estimates(profile):
        total += le.minutes
        for e in le.runs:
            fit = "CPU" if e.run.on_cpu else ("yes" if fits(e, profile) else "**no**")
            lines.append(f"| {le.lesson} | {e.run.name} | {e.minutes:.1f} | {e.peak / GiB:.2f} | {fit} |")
        flag = " **over**" if le.over_time else ""
        flag += " (not yet sized)" if (le.lesson, profile) in NOT_YET_SIZED else ""
        lines.append(
            f"| **{le.lesson}** | **lesson, set-up included** | **{le.minutes:.0f}**{flag} | **{le.peak / GiB:.1f}** | |"
        )
    limit = COURSE_LIMIT_MINUTES.get(profile)
    lines.append(
        f"\nWhole course: {total:.0f} min"
        + (f" (limit {limit})" if limit else "")
        + f"; a lesson's limit: {LIMIT_MINUTES[profile]} min. Every sequence counted at full length: upper bounds."
    )
    return "\n".join(lines)


README_ROW = re.compile(
    r"^\| (\d\d) \| (\[[^\]]+\]\([^)]+\)) \| (.*?) \| (.*?) \| (.*?) \| (.*?) \|$", re.MULTILINE
)


def readme_with_estimates(text: str) -> str:
    """README.md's notebook table with its colab and full columns set from the estimates."""
    cells = {p: {le.lesson: column(le) for le in course_estimates(p)} for p in PROFILES}

    def row(m: re.Match) -> str:
        lesson = m.group(1)
        colab = cells["colab"].get(lesson, m.group(5))
        full = cells["full"].get(lesson, m.group(6))
        if lesson == "06":  # its launches need two GPUs: one T4 runs them on CPU processes
            colab = f"{colab}; launches on CPU processes"
        return f"| {lesson} | {m.group(2)} | {m.group(3)} | {m.group(4)} | {colab} | {full} |"

    return README_ROW.sub(row, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="set README.md's GPU columns from the estimates")
    args = parser.parse_args()
    for profile in PROFILES:
        print(report(profile) + "\n")
    if args.write:
        path = registry.course_root() / "README.md"
        path.write_text(readme_with_estimates(path.read_text()))
        print(f"wrote the estimates into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
