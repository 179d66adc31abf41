"""The exercises' check cells: blank answers wait, wrong ones fail with a hint, and every lesson's
checks are asserted by its solutions notebook (which CI runs, so right answers are covered there)."""

import re
from pathlib import Path

import nbformat
import pytest

from helpers import exercises as ex
from helpers.constitution import Rule
from helpers.lengths import recommend_max_length
from helpers.runtime import get_profile

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def profile():
    return get_profile()


def lora_ignoring_gqa(config, r, targets):
    """A plausible mistake: every projection as wide as the hidden size."""
    d, inter = config.hidden_size, config.intermediate_size
    shapes = {t: (d, d) for t in ("q_proj", "k_proj", "v_proj", "o_proj")}
    shapes |= {"gate_proj": (d, inter), "up_proj": (d, inter), "down_proj": (inter, d)}
    return config.num_hidden_layers * sum(r * sum(shapes[t]) for t in targets)


WRONG = {
    "00.1": lambda p: ex.check_00_l4(("full", "bfloat16", "flash_attention_2")),
    "00.2": lambda p: ex.check_00_batch(16),
    "01.1": lambda p: ex.check_01_max_length(recommend_max_length(ex.chat_lengths(p), 0.975) + 8, p),
    "01.2": lambda p: ex.check_01_url_rule(Rule("urls", "no URLs", "no_pattern", pattern=r"https://"), p),
    "02.1": lambda p: ex.check_02_qv_params(12_345, p),
    "02.2": lambda p: ex.check_02_lora_formula(lora_ignoring_gqa),
    "03.1": lambda p: ex.check_03_image_tokens(5 * 64),  # 2 x 2 tiles + global view: not scaled up
    "03.2": lambda p: ex.check_03_relaxed(lambda pred, target: pred.strip() == target.strip()),
    "04.1": lambda p: ex.check_04_dpo_loss(0.6931),  # log 2: the loss before any training
    "04.2": lambda p: ex.check_04_beta_weights({0.01: 0.5, 0.1: 0.5, 0.5: 0.5, 1.0: 0.5}),
    "04.3": lambda p: ex.check_04_ipo_loss(4.0),
    "05.1": lambda p: ex.check_05_temperature((0.84, 0.84)),
    "05.2": lambda p: ex.check_05_kd_loss(0.0816),  # forgot the T**2
    "06.1": lambda p: ex.check_06_zero({0: 112.0, 1: 112.0, 2: 112.0, 3: 14.0}),
    "06.2": lambda p: ex.check_06_batch((8, 2e-4 * 8)),  # linear scaling, not square root
    "07.1": lambda p: ex.check_07_padding((0.54, 0.54)),
    "07.2": lambda p: ex.check_07_adam8bit(3.4),
    "08.1": lambda p: ex.check_08_kv_cache(14.0),  # as if multi-head attention
    "08.2": lambda p: ex.check_08_moe((46.7, 46.7)),
    "09.1": lambda p: ex.check_09_pass_at_k((0.3, 1 - 0.7**5)),  # samples drawn with replacement
    "09.2": lambda p: ex.check_09_advantages([(r - 0.25) / 0.433 for r in ex.GROUP_REWARDS]),  # n, not n - 1
    "10.1": lambda p: ex.check_10_judge((0.75, 0.3)),  # consistency counted as the same letter twice
    "10.2": lambda p: ex.check_10_bits_per_weight({"Q8_0": 8.0, "Q4_0": 4.0}),  # the scales forgotten
    "10.3": lambda p: ex.check_10_fewshot(_fewshot_run(shots=0), zero_shot=0.1),
    # The exercises that change a run, given the run the lesson already made (or a plausible slip)
    "00.3": lambda p: ex.check_00_longer(ex.count_one_step(p, 64), p),
    "01.3": lambda p: ex.check_01_number_rule(  # integers only, and every role
        Rule("numbers", "no bare numbers", "no_pattern", pattern=r"^\d+$"), p
    ),
    "02.3": lambda p: ex.check_02_all_tokens(_run(assistant_only_loss=True), p),
    "03.3": lambda p: ex.check_03_shuffled(_charts(p), ["1"] * len(_charts(p)), _charts(p), after=0.5),
    "04.4": lambda p: ex.check_04_swapped(_run(global_step=0), []),
    "05.3": lambda p: ex.check_05_prompts(_model(p, "teacher"), _model(p, "student"), p),  # the other way
    "06.3": lambda p: ex.check_06_uneven([1, 3, 5, 7], {"global tokens": 1e-7, "mean of means": 0.18}, p),
    "07.3": lambda p: ex.check_07_variant({"per_device_train_batch_size": 8}, *_bench(p)),  # nothing changed
    "08.3": lambda p: ex.check_08_kv_heads(_llama(kv_heads=4), 1),  # bytes not counted from the cache
}


def _run(assistant_only_loss: bool = False, global_step: int = 1):
    """What the run checks read first from a trainer: its settings and its step."""
    from types import SimpleNamespace

    return SimpleNamespace(
        args=SimpleNamespace(assistant_only_loss=assistant_only_loss),
        state=SimpleNamespace(global_step=global_step),
    )


def _charts(profile):
    from helpers.data import load_split

    return list(load_split(profile, "charts", "test", n=8))


def _model(profile, role):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(profile.models[role])


def _bench(profile):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from helpers.data import load_split
    from helpers.training import ensure_training_template

    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(profile.models["chat"]))
    rows = load_split(profile, "chat", "train", n=64)
    return profile.models["chat"], tokenizer, Dataset.from_list([{"messages": r["messages"]} for r in rows])


def _llama(kv_heads: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        vocab_size=64,
    )
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_answer_fails_with_a_hint(name, profile):
    result = WRONG[name](profile)
    assert not result
    assert f"Exercise {name}: not yet" in repr(result) and "Hint:" in repr(result)


def test_blank_answers_wait(profile):
    blank = [
        ex.check_00_l4(None),
        ex.check_01_url_rule(None, profile),
        ex.check_02_lora_formula(lambda config, r, targets: None),
        ex.check_03_relaxed(lambda prediction, target: None),
        ex.check_06_zero(None),
        ex.check_00_longer(None, profile),
        ex.check_02_all_tokens(None, profile),
        ex.check_03_shuffled(None, None, [], after=0.5),
        ex.check_04_swapped(None, []),
        ex.check_05_prompts(None, None, profile),
        ex.check_06_uneven(None, None, profile),
        ex.check_07_variant(None, "", None, []),
        ex.check_08_kv_heads(None, None),
    ]
    assert not any(blank)
    assert all("not answered yet" in repr(b) for b in blank)


def test_lora_formula_check_accepts_peft_itself():
    from helpers.memory import lora_trainable_params

    result = ex.check_02_lora_formula(
        lambda config, r, targets: lora_trainable_params(config, r, tuple(targets))
    )
    assert result and "Same as PEFT" in repr(result)


def exercise_checks(path: Path) -> list[str]:
    """The check functions called after the lesson's "## Exercises" heading."""
    cells = nbformat.read(path, as_version=4).cells
    start = next(
        i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Exercises")
    )
    return [
        m for c in cells[start:] if c.cell_type == "code" for m in re.findall(r"\b(check_\w+)\(", c.source)
    ]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_ends_with_exercises_its_solutions_assert(lesson):
    checks = exercise_checks(lesson)
    assert len(set(checks)) >= 2, f"{lesson.name}: fewer than two exercises"
    solutions = NOTEBOOKS / "solutions" / f"{lesson.stem}_solutions.ipynb"
    source = "\n".join(
        c.source for c in nbformat.read(solutions, as_version=4).cells if c.cell_type == "code"
    )
    for check in set(checks):
        asserted = re.search(rf"^assert {check}\(", source, re.MULTILINE) or re.search(
            rf"^checked = {check}\(.*?^assert checked$", source, re.MULTILINE | re.DOTALL
        )
        assert asserted, f"{solutions.name} does not assert {check}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_has_an_exercise_that_changes_a_run(lesson):
    """At least one exercise asks the learner to change a setting, the data or the model and run
    it again; its check measures the effect (the tests above and the solutions hold it to that)."""
    cells = nbformat.read(lesson, as_version=4).cells
    headings = [c.source for c in cells if c.cell_type == "markdown" and c.source.startswith("### Exercise")]
    assert any(re.search(r"^Change (the|a) \w+:", h, re.MULTILINE) for h in headings), lesson.name


def _grpo_run(generations: int, zero_std_shares: list[float]):
    """What check_09_generations reads from a GRPOTrainer: its config and its logged steps."""
    from types import SimpleNamespace

    logs = [{"step": i, "frac_reward_zero_std": s} for i, s in enumerate(zero_std_shares)]
    return SimpleNamespace(
        args=SimpleNamespace(num_generations=generations), state=SimpleNamespace(log_history=logs)
    )


def test_generations_check_wants_fewer_generations_and_more_groups_without_signal():
    reference = _grpo_run(8, [0.4, 0.5])
    assert ex.check_09_generations(_grpo_run(2, [0.8, 0.9]), reference)
    assert not ex.check_09_generations(_grpo_run(8, [0.8, 0.9]), reference)  # nothing changed
    assert not ex.check_09_generations(_grpo_run(2, [0.3, 0.4]), reference)  # the effect is the other way
    assert "not answered" in repr(ex.check_09_generations(None, reference))
    with pytest.raises(ValueError, match="train it first"):
        ex.check_09_generations(_grpo_run(2, []), reference)


def _fewshot_run(shots: int, replies=("S", "7 "), targets=("s", "7"), reported: float = 1.0) -> dict:
    """What check_10_fewshot reads from simple_evaluate's result."""
    samples = [{"filtered_resps": [r], "target": t} for r, t in zip(replies, targets)]
    return {
        "samples": {"mine": samples},
        "n-shot": {"mine": shots},
        "results": {"mine": {"exact_match,none": reported}},
    }


def test_fewshot_check_recomputes_exact_match_from_the_samples():
    assert ex.check_10_fewshot(_fewshot_run(shots=3), zero_shot=0.0)
    assert not ex.check_10_fewshot(_fewshot_run(shots=3, reported=0.5), zero_shot=0.0)  # case counted
    assert "not answered" in repr(ex.check_10_fewshot(None, zero_shot=0.0))
