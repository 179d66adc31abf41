"""Check cells for the exercises at the end of each lesson.

Each `check_*` takes the learner's answer, works out the right one itself (with the same helpers
and libraries the lesson uses) and returns a `Checked`: true when the answer holds, shown in the
notebook as a line that says so, with a hint if not. An answer left as None reads "not answered
yet": a lesson notebook runs top to bottom before anyone has tried. The solutions notebooks
(notebooks/solutions/) assert each check.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from helpers.runtime import Profile

# A hand computation carried to three significant figures is right: 0.598 for 0.59814.
HAND = 5e-3

# --- reporting --------------------------------------------------------------------------------------


def _close(answer: Any, expected: Any, rel: float) -> bool:
    if isinstance(expected, dict):
        return (
            isinstance(answer, dict)
            and answer.keys() == expected.keys()
            and all(_close(answer[k], expected[k], rel) for k in expected)
        )
    if isinstance(expected, (tuple, list)):
        return (
            isinstance(answer, (tuple, list))
            and len(answer) == len(expected)
            and all(_close(a, e, rel) for a, e in zip(answer, expected))
        )
    if isinstance(expected, float) or (isinstance(expected, int) and rel > 0):
        return isinstance(answer, (int, float)) and math.isclose(answer, expected, rel_tol=rel, abs_tol=1e-12)
    return answer == expected


@dataclass(frozen=True)
class Checked:
    """A check's verdict: true when the answer holds; shown in a notebook as its message."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.message


def _report(name: str, ok: bool, hint: str, detail: str = "") -> Checked:
    if ok:
        return Checked(True, f"✓ Exercise {name}: right. {detail}".rstrip())
    return Checked(False, f"✗ Exercise {name}: not yet. {detail} Hint: {hint}".replace("  ", " "))


def _effect(name: str, ok: bool, hint: str, detail: str) -> Checked:
    """A verdict on what a changed run measured: in a rehearsal of a GPU profile the stand-in models
    have random weights and show no effect, so a miss there is reported, not failed."""
    from helpers import rehearsal

    if not ok and rehearsal.active():
        return Checked(
            True,
            f"- Exercise {name}: not judged in a rehearsal (stand-in models with random weights and a few "
            f"rows: an effect need not show). {detail}",
        )
    return _report(name, ok, hint, detail)


def _not_answered(name: str, what: str) -> Checked:
    return Checked(False, f"· Exercise {name}: not answered yet ({what}).")


def _check(name: str, answer: Any, expected: Any, hint: str, what: str, rel: float = 0.0) -> Checked:
    if answer is None:
        return _not_answered(name, what)
    return _report(name, _close(answer, expected, rel), hint, f"Your answer: {answer!r}.")


# --- 00 setup ---------------------------------------------------------------------------------------


def l4_hardware():
    from helpers.runtime import Hardware

    return Hardware(
        cuda=True, gpu_name="NVIDIA L4", vram_gb=24.0, compute_capability=(8, 9), flash_attn_installed=True
    )


def check_00_l4(answer: tuple[str, str, str] | None) -> Checked:
    from helpers.runtime import choose_profile

    p = choose_profile(l4_hardware())
    return _check(
        "00.1",
        answer,
        (p.name, p.dtype, p.attn_implementation),
        "bf16 follows the compute capability (8.0 or newer); the profile follows the GPU's memory; "
        "flash attention comes with the `full` profile only.",
        "a tuple (profile, dtype, attention implementation)",
    )


def largest_fitting_batch(model: str, gib: float, **setup) -> int:
    from helpers.memory import GiB, TrainSetup, plan_memory, reference_configs

    config, best = reference_configs()[model], 0
    for batch in (1, 2, 4, 8, 16, 32, 64):
        if plan_memory(config, TrainSetup(batch_size=batch, **setup)).total <= gib * GiB:
            best = batch
    return best


def check_00_batch(answer: int | None) -> Checked:
    expected = largest_fitting_batch(
        "Llama-3.2-1B", 15.0, method="lora", precision="mixed", seq_len=1024, gradient_checkpointing=True
    )
    return _check(
        "00.2",
        answer,
        expected,
        "try each batch size with plan_memory(...).total and compare with 15 * GiB.",
        "the largest batch size, an int",
    )


def count_one_step(profile: Profile, seq_len: int, batch_size: int = 8) -> dict[str, int]:
    """Section 6's count: bytes of each part of memory in one AdamW step of the chat model."""
    from transformers import AutoModelForCausalLM

    from helpers.memory import counted_model_states, counted_saved_activations

    model = AutoModelForCausalLM.from_pretrained(profile.models["chat"], dtype=profile.torch_dtype)
    model = model.to(profile.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(4, model.config.vocab_size, (batch_size, seq_len)).to(profile.device)
    saved, loss = counted_saved_activations(model, {"input_ids": ids, "labels": ids})
    loss.backward()
    optimizer.step()
    return counted_model_states(model, optimizer) | {"activations": saved}


def check_00_longer(counted: dict[str, int] | None, profile: Profile, lesson_seq_len: int = 64) -> Checked:
    """`counted`: section 6's counted bytes by part, from a step at twice the lesson's sequence length."""
    if counted is None:
        return _not_answered("00.3", "the counted dict of a step at seq_len 128")
    short, long = count_one_step(profile, lesson_seq_len), count_one_step(profile, 2 * lesson_seq_len)
    if not isinstance(counted, dict) or counted.keys() != long.keys():
        return _report("00.3", False, f"pass section 6's `counted` dict, with the keys {sorted(long)}.")
    growth = ", ".join(f"{part} x{long[part] / short[part]:.2f}" for part in long)
    return _report(
        "00.3",
        all(math.isclose(counted[part], long[part], rel_tol=0.01) for part in long),
        f"set seq_len={2 * lesson_seq_len} in the TrainSetup of section 6's count and run that cell "
        "again: your bytes do not match a step at that length.",
        f"From {lesson_seq_len} to {2 * lesson_seq_len} tokens a row: {growth}.",
    )


# --- 01 token lengths -------------------------------------------------------------------------------


def chat_lengths(profile: Profile, n: int = 5_000) -> list[int]:
    from transformers import AutoTokenizer

    from helpers.data import load_split
    from helpers.lengths import token_lengths

    tokenizer = AutoTokenizer.from_pretrained(profile.models["chat"])
    return token_lengths(load_split(profile, "chat", "train", n=n), tokenizer)["total"].tolist()


def check_01_max_length(answer: int | None, profile: Profile) -> Checked:
    from helpers.lengths import recommend_max_length

    if answer is None:
        return _not_answered("01.1", "max_length, an int")
    lengths = chat_lengths(profile)
    kept = sum(n <= answer for n in lengths) / len(lengths)
    return _report(
        "01.1",
        answer == recommend_max_length(lengths, 0.975),
        "sort the lengths (column `total`), take the one at 97.5%, round it up to a multiple of 8.",
        f"max_length {answer} keeps {kept:.1%} of the rows whole.",
    )


URL_ROWS = {  # text -> whether a no-URL rule must drop it
    "Read https://example.com/guide for more.": True,
    "See http://example.org.": True,
    "Visit www.example.net today.": True,
    "Write to ana@example.com.": False,
    "The answer is 3.14.": False,
    "Use the web browser.": False,
}


def check_01_url_rule(rule, profile: Profile) -> Checked:
    from helpers.constitution import Rule, violates

    if rule is None:
        return _not_answered("01.2", "a helpers.constitution.Rule")
    if not isinstance(rule, Rule):
        return _report("01.2", False, "build it with Rule(name=..., rule=..., check=..., pattern=...).")
    wrong = [
        text
        for text, drop in URL_ROWS.items()
        if violates(rule, {"messages": [{"role": "user", "content": text}]}) != drop
    ]
    from helpers.data import load_split

    rows = load_split(profile, "chat", "train", n=5_000)
    dropped = sum(violates(rule, row) for row in rows)
    return _report(
        "01.2",
        not wrong,
        "check='no_pattern' with a regular expression for http://, https:// and www.",
        f"Misjudged: {wrong}." if wrong else f"It drops {dropped:,} of {len(rows):,} train rows.",
    )


BARE_NUMBER = r"^\s*-?\d+(\.\d+)?\s*$"
NUMBER_ROWS = {  # an answer -> whether a bare-number rule must drop its row
    "133": True,
    "-4": True,
    "3.5": True,
    "12 apples": False,
    "The answer is 7.": False,
    "blue": False,
}


def _any_bare_number(row: dict) -> bool:
    return any(re.search(BARE_NUMBER, m["content"]) for m in row["messages"] if m["role"] == "assistant")


def check_01_number_rule(rule, profile: Profile) -> Checked:
    """`rule`: a constitution Rule that drops every row with an answer that is a number alone."""
    from helpers.constitution import Rule, violates
    from helpers.data import load_split

    if rule is None:
        return _not_answered("01.3", "a helpers.constitution.Rule")
    if not isinstance(rule, Rule):
        return _report("01.3", False, "build it with Rule(name=..., rule=..., check=..., pattern=...).")
    samples = [
        {"messages": [{"role": "user", "content": "a question"}, {"role": "assistant", "content": answer}]}
        for answer in NUMBER_ROWS
    ] + [{"messages": [{"role": "user", "content": "42"}, {"role": "assistant", "content": "forty-two"}]}]
    rows = list(load_split(profile, "chat", "train", n=5_000))
    wrong = [
        " -> ".join(m["content"] for m in s["messages"])
        for s in samples
        if violates(rule, s) != _any_bare_number(s)
    ]
    wrong_rows = sum(violates(rule, r) != _any_bare_number(r) for r in rows)
    hint = (
        "check='no_pattern', roles=['assistant'], and a pattern anchored at both ends (^ and $) that "
        "takes an optional minus sign and decimals; a question may be a number too."
    )
    if wrong or wrong_rows:
        return _report(
            "01.3",
            False,
            hint,
            f"Misjudged (question -> answer): {wrong}; train rows misjudged: {wrong_rows}.",
        )
    dropped = [r for r in rows if violates(rule, r)]
    skills = {}
    for r in rows:
        kept_total = skills.setdefault(r.get("skill", "chat"), [0, 0])
        kept_total[1] += 1
        kept_total[0] += not violates(rule, r)
    lost = ", ".join(f"{k} {kept}/{total}" for k, (kept, total) in sorted(skills.items()) if kept < total)
    return _report(
        "01.3",
        True,
        hint,
        f"It drops {len(dropped):,} of {len(rows):,} train rows"
        + (f"; rows kept by skill, where some went: {lost}." if lost else "."),
    )


# --- 02 LoRA ----------------------------------------------------------------------------------------


def check_02_qv_params(answer: int | None, profile: Profile) -> Checked:
    from transformers import AutoConfig

    from helpers.memory import lora_trainable_params

    config = AutoConfig.from_pretrained(profile.models["chat"])
    expected = lora_trainable_params(config, r=8, target_modules=["q_proj", "v_proj"])
    return _check(
        "02.1",
        answer,
        expected,
        "wrap the chat model with LoraConfig(r=8, target_modules=['q_proj', 'v_proj']) and count "
        "parameters with requires_grad (or model.print_trainable_parameters()).",
        "the number of trainable parameters, an int",
    )


def check_02_lora_formula(lora_params: Callable | None) -> Checked:
    """lora_params(config, r, targets) must match PEFT on real architectures, GQA included."""
    from helpers.memory import LINEAR_TARGETS, lora_trainable_params, reference_configs

    configs = reference_configs()
    if lora_params is None or lora_params(configs["SmolLM2-135M"], 8, ["q_proj"]) is None:
        return _not_answered("02.2", "the function lora_params(config, r, targets) returns None")
    cases = [
        (name, r, targets)
        for name in ("SmolLM2-135M", "Llama-3.1-8B")
        for r, targets in ((8, ("q_proj", "v_proj")), (16, LINEAR_TARGETS))
    ]
    misses = []
    for name, r, targets in cases:
        got, want = (
            lora_params(configs[name], r, list(targets)),
            lora_trainable_params(configs[name], r, targets),
        )
        if got != want:
            misses.append(f"{name} r={r} {len(targets)} targets: {got:,} vs PEFT's {want:,}")
    return _report(
        "02.2",
        not misses,
        "a Linear(in, out) gains r * (in + out); k_proj and v_proj are narrower under grouped-query "
        "attention (num_key_value_heads * head_dim outputs); count every layer.",
        "; ".join(misses) + "." if misses else "Same as PEFT on SmolLM2-135M and Llama-3.1-8B.",
    )


def check_02_all_tokens(run: Any, profile: Profile) -> Checked:
    """`run`: an SFTTrainer like the lesson's, trained with assistant_only_loss=False."""
    from helpers.data import task_set
    from helpers.generation import generate_replies
    from helpers.metrics import binomial_interval, exact_match

    if run is None:
        return _not_answered("02.3", "an SFTTrainer trained with assistant_only_loss=False")
    if run.args.assistant_only_loss:
        return _report("02.3", False, "pass assistant_only_loss=False in the SFTConfig.")
    if run.state.global_step == 0:
        return _report("02.3", False, "train it: run.train().")
    tokenizer = run.processing_class
    row = run.train_dataset[0]
    labels = run.data_collator([row])["labels"][0]
    trained, total = int((labels != -100).sum()), len(row["input_ids"])
    answers_only = sum(
        tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )["assistant_masks"]
    )
    tasks = task_set(profile.sizes.n_eval)
    replies = generate_replies(run.model, tokenizer, [t["messages"][:-1] for t in tasks], max_new_tokens=32)
    em = exact_match(replies, [t["messages"][-1]["content"] for t in tasks])
    low, high = binomial_interval(em, len(tasks))
    return _report(
        "02.3",
        trained > answers_only,
        "the first training row should carry loss on its prompt tokens too.",
        f"The first training row trains {trained} of its {total} tokens (assistant-only: {answers_only}). "
        f"Held-out exact match after {run.state.global_step} steps: {em:.1%} (95% interval {low:.0%} to "
        f"{high:.0%}); compare it with the LoRA r=16 row of section 9's table.",
    )


# --- 03 VLM -----------------------------------------------------------------------------------------


def _colab_vlm_processor() -> dict:
    """The image-processor settings published with the VLM `colab` loads (data/hub/models.json)."""
    from helpers import registry
    from helpers.rehearsal import published

    settings = published()["models"][registry.HUB_MODELS["colab"]["vlm"]]["processor"]
    return {
        "longest_edge": settings["size"]["longest_edge"],
        "tile": settings["max_image_size"]["longest_edge"],
        "tokens_per_tile": settings["image_seq_len"],
    }


SMOLVLM_PROCESSOR = _colab_vlm_processor()  # SmolVLM-256M's: longest edge, tile size, tokens a tile
CHART_SIZE = (800, 557)  # a ChartQA-sized chart: width, height in pixels


def smolvlm_image_tokens(size: tuple[int, int] = CHART_SIZE) -> int:
    """Image tokens SmolVLM-256M's processor gives an image of `size`: transformers' own image
    processor, built from the published settings (no download), counts the tiles."""
    from PIL import Image
    from transformers import Idefics3ImageProcessorPil

    processor = Idefics3ImageProcessorPil(
        size={"longest_edge": SMOLVLM_PROCESSOR["longest_edge"]},
        max_image_size={"longest_edge": SMOLVLM_PROCESSOR["tile"]},
        do_image_splitting=True,
    )
    pixels = processor(images=[[Image.new("RGB", size, "white")]], return_tensors="pt")["pixel_values"]
    return pixels.shape[1] * SMOLVLM_PROCESSOR["tokens_per_tile"]


def check_03_image_tokens(answer: int | None) -> Checked:
    return _check(
        "03.1",
        answer,
        smolvlm_image_tokens(),
        "the processor first scales the image so that its longest edge is 2,048 px (up, for a small "
        "chart), rounds each side up to a multiple of 512 px and cuts it into 512-px tiles; one more "
        "tile is the whole image scaled down. Each tile is 64 tokens.",
        "the number of image tokens, an int",
    )


RELAXED_CASES = [
    ("12.5", "13"),
    ("13.7", "13"),
    ("13.65", "13"),
    ("0", "0"),
    ("0.01", "0"),
    ("Blue", "blue "),
]


def check_03_relaxed(is_right: Callable | None) -> Checked:
    from helpers.metrics import relaxed_accuracy

    if is_right is None or is_right("1", "1") is None:
        return _not_answered("03.2", "the function is_right(prediction, target) returns None")
    wrong = [(p, t) for p, t in RELAXED_CASES if bool(is_right(p, t)) != relaxed_accuracy(p, t)]
    return _report(
        "03.2",
        not wrong,
        "numbers: within 5% of the target (inclusive), exactly when the target is 0; text: equal "
        "ignoring case and surrounding spaces.",
        f"Misjudged (prediction, target): {wrong}." if wrong else "",
    )


def check_03_shuffled(
    shuffled_rows: Sequence[dict] | None, predictions: Sequence[str] | None, test_rows, after: float
) -> Checked:
    """`shuffled_rows`: the held-out rows, each with another row's chart; `predictions`: the trained
    model's answers on them; `after`: its relaxed accuracy on the right charts."""
    from helpers.metrics import binomial_interval, relaxed_accuracy_batch

    if shuffled_rows is None or predictions is None:
        return _not_answered("03.3", "the shuffled rows and the predictions on them")
    n = len(test_rows)
    if len(shuffled_rows) != n or len(predictions) != n:
        return _report("03.3", False, f"one shuffled row and one prediction per held-out row ({n}).")
    same_question = all(
        s["query"] == r["query"] and list(s["label"]) == list(r["label"])
        for s, r in zip(shuffled_rows, test_rows)
    )
    own_chart = sum(s["image"].tobytes() == r["image"].tobytes() for s, r in zip(shuffled_rows, test_rows))
    if not same_question or own_chart:
        return _report(
            "03.3",
            False,
            "keep each row's question and answer and give it another row's image, e.g. "
            "dict(row, image=test_rows[(i + 1) % n]['image']).",
            f"{own_chart} rows kept their own chart." if same_question else "Questions or answers changed.",
        )
    shuffled = relaxed_accuracy_batch(predictions, [r["label"] for r in test_rows])
    low, high = binomial_interval(shuffled, n)
    return _effect(
        "03.3",
        shuffled < after,
        "the model's answers on other charts should score below its answers on the right ones: "
        "are the predictions from the trained model, on the shuffled rows?",
        f"Relaxed accuracy with the right charts {after:.1%}, with another row's chart {shuffled:.1%} "
        f"(95% interval {low:.0%} to {high:.0%}).",
    )


# --- 04 DPO -----------------------------------------------------------------------------------------

# Sequence log-probabilities of one pair under the policy and the frozen reference.
PAIR = {"policy_chosen": -12.0, "policy_rejected": -15.0, "ref_chosen": -13.0, "ref_rejected": -14.0}


def _margin(pair: dict[str, float]) -> float:
    return (pair["policy_chosen"] - pair["ref_chosen"]) - (pair["policy_rejected"] - pair["ref_rejected"])


def check_04_dpo_loss(answer: float | None) -> Checked:
    expected = -F.logsigmoid(torch.tensor(0.1 * _margin(PAIR))).item()
    return _check(
        "04.1",
        answer,
        expected,
        "loss = -log sigmoid(beta * ((pc - rc) - (pr - rr))).",
        "the loss, a float",
        rel=HAND,
    )


def check_04_beta_weights(answer: dict[float, float] | None) -> Checked:
    expected = {
        beta: torch.sigmoid(torch.tensor(-beta * _margin(PAIR))).item() for beta in (0.01, 0.1, 0.5, 1.0)
    }
    return _check(
        "04.2",
        answer,
        expected,
        "the gradient of -log sigmoid(z) is -sigmoid(-z) times dz; the pair's weight is sigmoid(-beta * margin).",
        "a dict {beta: weight} for beta 0.01, 0.1, 0.5, 1.0",
        rel=HAND,
    )


def check_04_ipo_loss(answer: float | None) -> Checked:
    expected = (_margin(PAIR) - 1 / (2 * 0.1)) ** 2
    return _check(
        "04.3",
        answer,
        expected,
        "IPO regresses the margin of log-ratios onto 1 / (2 * tau): loss = (margin - 1 / (2 tau))^2.",
        "the IPO loss, a float",
        rel=HAND,
    )


def check_04_swapped(run: Any, test_pairs: Sequence[dict]) -> Checked:
    """`run`: a DPOTrainer like the lesson's, trained on pairs with chosen and rejected swapped;
    scored on the held-out pairs as they are."""
    from helpers.preference import pair_logps, preference_metrics

    if run is None:
        return _not_answered("04.4", "a DPOTrainer trained on swapped pairs")
    if run.state.global_step == 0:
        return _report("04.4", False, "train it: run.train().")
    model, tokenizer = run.model, run.processing_class
    chosen, rejected = pair_logps(model, tokenizer, test_pairs, max_length=run.args.max_length)
    if hasattr(model, "disable_adapter"):  # LoRA: the reference is the same model, adapter off
        with model.disable_adapter():
            ref = pair_logps(model, tokenizer, test_pairs, max_length=run.args.max_length)
    else:
        ref = pair_logps(run.ref_model, tokenizer, test_pairs, max_length=run.args.max_length)
    m = preference_metrics(chosen, rejected, *ref, run.args.beta)
    before = (ref[0] > ref[1]).float().mean().item()
    return _effect(
        "04.4",
        m["reward accuracy"] < 0.5 and m["prefers chosen"] < before,
        "swap the two columns in the training pairs (rename chosen to rejected and back), not in the "
        "held-out ones.",
        f"Held-out pairs, as labelled: prefers chosen {before:.1%} -> {m['prefers chosen']:.1%}; reward "
        f"accuracy {m['reward accuracy']:.1%}.",
    )


# --- 05 distillation --------------------------------------------------------------------------------

TEACHER_LOGITS = [4.0, 2.0, 1.0, -1.0]
STUDENT_LOGITS = [2.5, 2.0, 0.5, 0.0]


def check_05_temperature(answer: tuple[float, float] | None) -> Checked:
    t = torch.tensor(TEACHER_LOGITS)
    expected = tuple((t / temp).softmax(-1)[0].item() for temp in (1.0, 4.0))
    return _check(
        "05.1",
        answer,
        expected,
        "divide the logits by T before the softmax.",
        "(top probability at T=1, at T=4)",
        rel=HAND,
    )


def check_05_kd_loss(answer: float | None) -> Checked:
    from trl.experimental.gkd import GKDTrainer

    # TRL's generalized JSD at beta=0 is the forward KL(teacher || student) on softened logits.
    temp = 2.0
    kl = GKDTrainer.generalized_jsd_loss(
        torch.tensor([[STUDENT_LOGITS]]),
        torch.tensor([[TEACHER_LOGITS]]),
        beta=0,
        temperature=temp,
        reduction="sum",
    )
    expected = temp**2 * kl.item()
    return _check(
        "05.2",
        answer,
        expected,
        "forward KL(teacher || student) = sum p_t (log p_t - log p_s), both softened by T = 2, then times T^2.",
        "the loss, a float",
        rel=HAND,
    )


@torch.no_grad()
def held_out_loss(model, features: Sequence[dict], pad_id: int | None) -> float:
    """Mean cross-entropy of the trained tokens of `features` (the held-out answers), per token."""
    from helpers.distill import pad_batch, trained_positions
    from helpers.training import token_batches

    total, positions = 0.0, 0
    for rows in token_batches(features, [len(f["input_ids"]) for f in features], 8192):
        batch = {k: v.to(model.device) for k, v in pad_batch(rows, pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        mask = trained_positions(batch["labels"])
        total += F.cross_entropy(logits[mask].float(), batch["labels"][:, 1:][mask], reduction="sum").item()
        positions += int(mask.sum())
    return total / positions


def check_05_prompts(fewer, distilled, profile: Profile) -> Checked:
    """`fewer`: a student distilled from an eighth of the prompts; `distilled`: one from all of them,
    with the same steps and seed."""
    from transformers import AutoTokenizer

    from helpers.data import task_set
    from helpers.distill import chat_features
    from helpers.training import ensure_training_template

    if fewer is None or distilled is None:
        return _not_answered("05.3", "two trained students: from fewer prompts and from all of them")

    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(profile.models["student"]))
    features = chat_features(
        tokenizer, [r["messages"] for r in task_set(profile.sizes.n_eval)], max_length=256
    )
    loss = {name: held_out_loss(m.eval(), features, tokenizer.pad_token_id) for name, m in
            (("fewer", fewer), ("all", distilled))}  # fmt: skip
    return _effect(
        "05.3",
        loss["fewer"] > loss["all"],
        "train both students alike (the same steps and seed) but for the prompts: an eighth of them "
        "for one, all of them for the other.",
        f"Held-out loss: from fewer prompts {loss['fewer']:.3f}, from all of them {loss['all']:.3f} nats a token.",
    )


# --- 06 several GPUs --------------------------------------------------------------------------------


def check_06_zero(answer: dict[int, float] | None) -> Checked:
    from helpers.memory import zero_model_states

    expected = {stage: zero_model_states(7_000_000_000, 8, stage) / 1e9 for stage in (0, 1, 2, 3)}
    return _check(
        "06.1",
        answer,
        expected,
        "2 + 2 + 12 bytes per parameter; stage 1 splits the 12 across GPUs, stage 2 also the "
        "gradients' 2, stage 3 also the weights' 2.",
        "a dict {stage: GB per GPU} for stages 0-3",
        rel=HAND,
    )


def check_06_batch(answer: tuple[int, float] | None) -> Checked:
    per_device, gpus, target, base_lr, base_batch = 4, 8, 256, 2e-4, 32
    expected = (target // (per_device * gpus), base_lr * math.sqrt(target / base_batch))
    return _check(
        "06.2",
        answer,
        expected,
        "global batch = per-device batch x GPUs x accumulation steps; square-root scaling multiplies "
        "the rate by sqrt(new batch / old batch).",
        "(accumulation steps, learning rate)",
        rel=HAND,
    )


def accumulated_gradient(model, micro_batches: Sequence[dict], normalise: str) -> torch.Tensor:
    """Section 3's `gradients` (notebook 06), the model passed in: the gradient over micro-batches: summed token losses over the whole batch's trained
    tokens ("global tokens"), or each micro-batch's mean loss, averaged ("mean of means")."""
    model.zero_grad()
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
    for b in micro_batches:
        b = {k: v.to(model.device) for k, v in b.items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
        labels = b["labels"][:, 1:]
        summed = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum")
        n = int((labels != -100).sum())
        loss = summed / total if normalise == "global tokens" else summed / n / len(micro_batches)
        loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def check_06_uneven(
    sizes: Sequence[int] | None, differences: dict[str, float] | None, profile: Profile
) -> Checked:
    """`sizes`: uneven micro-batch sizes adding up to the lesson's 16 rows; `differences`: the
    relative gradient difference from one batch of 16 under each normalisation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.data import load_split
    from helpers.distill import chat_features, pad_batch
    from helpers.lengths import valid_rows
    from helpers.training import ensure_training_template

    if sizes is None or differences is None:
        return _not_answered("06.3", "the micro-batch sizes and the two relative differences")
    if sum(sizes) != 16 or len(set(sizes)) < 2:
        return _report(
            "06.3", False, "split the 16 rows unevenly, e.g. [1, 3, 5, 7].", f"Sizes: {list(sizes)}."
        )
    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(profile.models["base"]))
    rows, _ = valid_rows(load_split(profile, "chat", "train", n=200))
    rows16 = chat_features(tokenizer, [r["messages"] for r in rows], max_length=128)[:16]
    torch.manual_seed(profile.seed)
    model = AutoModelForCausalLM.from_pretrained(profile.models["base"], dtype=torch.float32).to(
        profile.device
    )
    one = accumulated_gradient(model, [pad_batch(rows16, tokenizer.pad_token_id)], "global tokens")
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    micro = [pad_batch(rows16[s : s + n], tokenizer.pad_token_id) for s, n in zip(starts, sizes)]
    expected = {
        rule: ((accumulated_gradient(model, micro, rule) - one).norm() / one.norm()).item()
        for rule in ("global tokens", "mean of means")
    }
    ok = (
        isinstance(differences, dict)
        and differences.keys() == expected.keys()
        and differences["global tokens"] < 1e-4
        and math.isclose(differences["mean of means"], expected["mean of means"], rel_tol=0.05)
    )
    return _report(
        "06.3",
        ok,
        "run section 3's `gradients` on your micro-batches with both normalisations; answer "
        '{"global tokens": ..., "mean of means": ...}, each rel(...) of the result.',
        f"Micro-batches of {list(sizes)} rows: global tokens {expected['global tokens']:.1e}, mean of means "
        f"{expected['mean of means']:.1e}.",
    )


# --- 07 GPU tuning ----------------------------------------------------------------------------------

LENGTHS = [12, 40, 33, 7, 90, 64, 20, 15]


def real_token_share(lengths: Sequence[int], batch_size: int) -> float:
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    return sum(lengths) / sum(max(b) * len(b) for b in batches)


def check_07_padding(answer: tuple[float, float] | None) -> Checked:
    expected = (real_token_share(LENGTHS, 4), real_token_share(sorted(LENGTHS), 4))
    return _check(
        "07.1",
        answer,
        expected,
        "each batch pads to its longest row: real tokens / (longest x rows), summed over batches.",
        "(share in this order, share sorted by length)",
        rel=HAND,
    )


def check_07_adam8bit(answer: float | None) -> Checked:
    from helpers.memory import TrainSetup, plan_memory, reference_configs

    config = reference_configs()["SmolLM2-1.7B"]
    plans = [plan_memory(config, TrainSetup(method="full", optimizer=o)) for o in ("adamw", "adamw_8bit")]
    expected = (plans[0].optimizer - plans[1].optimizer) / 1e9
    return _check(
        "07.2",
        answer,
        expected,
        "AdamW keeps two fp32 moments (8 bytes) per trainable parameter, 8-bit AdamW two bytes.",
        "GB saved, a float",
        rel=0.01,
    )


def check_07_variant(changes: dict | None, model: str, tokenizer, rows) -> Checked:
    """`changes`: SFTConfig settings, neither padding-free nor packing, under which the batches of
    `rows` compute fewer padded positions than with TRL's defaults."""
    from trl import SFTConfig, SFTTrainer

    from helpers.throughput import real_token_share_of

    if changes is None:
        return _not_answered("07.3", "a dict of SFTConfig changes")
    if changes.get("padding_free") or changes.get("packing"):
        return _report("07.3", False, "find one without padding_free or packing: batches of whole rows.")
    shares = {}
    for name, variant in (("TRL defaults", {}), ("yours", changes)):
        settings = {
            "per_device_train_batch_size": 8,
            "report_to": "none",
            "use_cpu": not torch.cuda.is_available(),
        }
        with tempfile.TemporaryDirectory() as out:  # nothing is trained or saved: batches only
            args = SFTConfig(output_dir=out, **(settings | variant))
            trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
            shares[name] = real_token_share_of(trainer)
    return _effect(
        "07.3",
        shares["yours"] > shares["TRL defaults"] + 0.02,
        "batches pad to their longest row: put rows of similar length together "
        '({"train_sampling_strategy": "group_by_length"}), or fewer rows in each batch.',
        f"Real tokens among the positions computed: TRL defaults {shares['TRL defaults']:.1%}, yours "
        f"{shares['yours']:.1%}.",
    )


# --- 08 efficient architectures ---------------------------------------------------------------------


def check_08_kv_cache(answer: float | None) -> Checked:
    from helpers.memory import kv_cache_bytes, reference_configs

    expected = kv_cache_bytes(reference_configs()["Llama-3.2-3B"], batch_size=1, seq_len=32_768) / 2**30
    return _check(
        "08.1",
        answer,
        expected,
        "2 (key and value) x layers x kv heads x head_dim x tokens x 2 bytes.",
        "GiB, a float",
        rel=HAND,
    )


def mixtral_like():
    from transformers import MixtralConfig

    return MixtralConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        num_local_experts=8,
        num_experts_per_tok=2,
        vocab_size=32000,
    )


def check_08_moe(answer: tuple[float, float] | None) -> Checked:
    from helpers.memory import meta_model

    model = meta_model(mixtral_like())
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    expected = (total / 1e9, (total - experts * 6 / 8) / 1e9)
    return _check(
        "08.2",
        answer,
        expected,
        "every expert is stored; a token uses 2 of the 8 experts per layer and every other weight.",
        "(billions stored, billions used per token)",
        rel=0.01,
    )


def check_08_kv_heads(model: Any, counted: int | None, tokens: int = 1_024) -> Checked:
    """`model`: section 1's Llama with 4 key/value heads; `counted`: the bytes of its cache after
    `tokens` tokens, counted from the cache's tensors."""
    from helpers.memory import kv_cache_bytes

    if model is None or counted is None:
        return _not_answered("08.3", "the model and its counted cache bytes")
    config = model.config
    if config.num_key_value_heads != 4:
        return _report("08.3", False, "set num_key_value_heads=4.", f"Yours: {config.num_key_value_heads}.")
    device = next(model.parameters()).device
    with torch.no_grad():
        cache = model(
            input_ids=torch.randint(0, config.vocab_size, (1, tokens), device=device), use_cache=True
        ).past_key_values
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    width = next(model.parameters()).element_size()
    multi_head = kv_cache_bytes(
        type(config)(**(config.to_dict() | {"num_key_value_heads": config.num_attention_heads})),
        batch_size=1,
        seq_len=tokens,
        bytes_per_value=width,
    )
    return _report(
        "08.3",
        counted == measured,
        f"count the keys and values of its cache after {tokens:,} tokens, as section 1 does.",
        f"4 kv heads: {measured / 1024:,.0f} KB at {tokens:,} tokens, {measured / multi_head:.0%} of "
        f"multi-head's {multi_head / 1024:,.0f} KB.",
    )


# --- 09 reward models and GRPO ----------------------------------------------------------------------

# One question sampled n = 10 times, 3 of the samples right.
PASS_SAMPLES = {"n": 10, "correct": 3}
# The rewards of one GRPO group: 8 completions of one prompt, 2 of them right.
GROUP_REWARDS = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def check_09_pass_at_k(answer: tuple[float, float] | None) -> Checked:
    n, c = PASS_SAMPLES["n"], PASS_SAMPLES["correct"]
    expected = tuple(1 - math.comb(n - c, k) / math.comb(n, k) for k in (1, 5))
    return _check(
        "09.1",
        answer,
        expected,
        "pass@k = 1 - C(n - c, k) / C(n, k): one minus the chance that k samples drawn from the n "
        "are all wrong.",
        "a tuple (pass@1, pass@5)",
        rel=HAND,
    )


def check_09_advantages(answer: Sequence[float] | None) -> Checked:
    rewards = torch.tensor(GROUP_REWARDS)
    expected = ((rewards - rewards.mean()) / (rewards.std() + 1e-4)).tolist()  # TRL: Bessel's std
    return _check(
        "09.2",
        None if answer is None else list(answer),
        expected,
        "advantage = (reward - group mean) / (group standard deviation + 1e-4), the standard "
        "deviation with n - 1 in the denominator, as torch.std computes it.",
        "a list of 8 floats, one per completion",
        rel=HAND,
    )


def _zero_std_shares(trainer: Any) -> list[float]:
    shares = [h["frac_reward_zero_std"] for h in trainer.state.log_history if "frac_reward_zero_std" in h]
    if not shares:
        raise ValueError("this trainer logged no frac_reward_zero_std: train it first (logging_steps >= 1)")
    return shares


def check_09_generations(run: Any, reference: Any) -> Checked:
    """`run`: the learner's GRPOTrainer with fewer generations; `reference`: one as the lesson's."""
    if run is None:
        return _not_answered("09.3", "a trained GRPOTrainer with fewer generations per prompt")
    g, g_ref = run.args.num_generations, reference.args.num_generations
    if g >= g_ref:
        return _report("09.3", False, f"set num_generations below the lesson's {g_ref}.", f"Yours: {g}.")
    # Over the same steps of both: later in a run more groups are all right, so all alike too.
    shares = _zero_std_shares(run)
    shares_ref = _zero_std_shares(reference)[: len(shares)]
    share, share_ref = sum(shares) / len(shares), sum(shares_ref) / len(shares_ref)
    detail = (
        f"Groups with no learning signal (all completions rewarded alike), over the first "
        f"{len(shares_ref)} logged steps: {share:.0%} with {g} generations, {share_ref:.0%} with {g_ref}."
    )
    if share_ref == 1.0:  # the reward never varied in either run (an untrained model): nothing to compare
        return _report("09.3", share == 1.0, "", detail + " Neither run had any signal to compare.")
    return _report(
        "09.3",
        share > share_ref,
        "with fewer completions per prompt, all of them are more often equally right or wrong, so "
        "their advantages are all 0 and the prompt teaches nothing.",
        detail,
    )


# --- 10 evaluate and ship ---------------------------------------------------------------------------

# Ten pairs, each judged twice: (the letter picked with answer X shown first, with Y shown first).
SWAPPED_VERDICTS = [
    ("A", "B"), ("A", "A"), ("A", "A"), ("B", "A"), ("A", "A"),
    ("A", "B"), ("A", "A"), ("B", "B"), ("A", "A"), ("A", "B"),
]  # fmt: skip


def check_10_judge(answer: tuple[float, float] | None) -> Checked:
    letters = [v for pair in SWAPPED_VERDICTS for v in pair]
    first = letters.count("A") / len(letters)
    # The same answer wins in both orders when the letter flips with the swap.
    consistent = sum(x != y for x, y in SWAPPED_VERDICTS) / len(SWAPPED_VERDICTS)
    return _check(
        "10.1",
        answer,
        (first, consistent),
        "'A' is always the answer shown first, so position bias is the share of A among all twenty "
        "letters. X wins in both orders as ('A', 'B'), Y as ('B', 'A'): consistent pairs are those "
        "whose two letters differ.",
        "a tuple (share for the first position, share consistent)",
        rel=1e-6,
    )


def check_10_bits_per_weight(answer: dict[str, float] | None) -> Checked:
    block = 32  # weights a block; each block has one 16-bit scale
    expected = {"Q8_0": (block * 8 + 16) / block, "Q4_0": (block * 4 + 16) / block}
    detail = ""
    if isinstance(answer, dict) and _close(answer, expected, 1e-6):
        detail = (
            "A 1.7B model: "
            + ", ".join(f"{k} {1.7e9 * b / 8 / 1e9:.2f} GB" for k, b in expected.items())
            + "."
        )
    checked = _check(
        "10.2",
        answer,
        expected,
        "bits a block / weights a block: 32 weights x 8 (or 4) bits, plus 16 bits of scale, over 32.",
        'a dict {"Q8_0": bits, "Q4_0": bits}',
        rel=1e-6,
    )
    return Checked(checked.ok, f"{checked.message} {detail}".rstrip())


def check_10_fewshot(run: dict | None, zero_shot: float) -> Checked:
    """`run`: simple_evaluate's result for a few-shot generation task scored by exact match."""
    if run is None:
        return _not_answered("10.3", "the dict simple_evaluate returned for your few-shot task")
    from helpers.metrics import normalise

    tasks = list(run.get("samples", {}))
    if len(tasks) != 1:
        return _report("10.3", False, "run one task, with log_samples=True.", f"Samples for: {tasks}.")
    task = tasks[0]
    shots = run.get("n-shot", {}).get(task, 0)
    if shots < 1:
        return _report(
            "10.3", False, "set num_fewshot: 3 and a fewshot_split in the YAML.", f"{task} ran {shots}-shot."
        )
    samples = run["samples"][task]
    recomputed = sum(normalise(s["filtered_resps"][0]) == normalise(s["target"]) for s in samples) / len(
        samples
    )
    reported = run["results"][task].get("exact_match,none")
    if reported is None:
        return _report("10.3", False, "score the task with exact_match, as course_skills does.", "")
    detail = (
        f"{task}, {shots}-shot: exact match {reported:.1%} (recomputed from the samples, case and "
        f"spaces ignored: {recomputed:.1%}); zero-shot {zero_shot:.1%}."
    )
    return _report(
        "10.3",
        abs(recomputed - reported) < 1e-9,
        "the harness's exact match and the course's disagree on your samples: set ignore_case: true and "
        'stop at the end-of-turn token (until: ["<|im_end|>"]), as course_skills does.',
        detail,
    )
