"""helpers.budget: every lesson's GPU runs declared, their memory and time estimated, and the
README's GPU columns generated from those estimates."""

import json
import re
import sys
from dataclasses import replace

import pytest

from helpers import budget, registry
from helpers.memory import GiB, TrainSetup, plan_memory
from helpers.tiny.build import IMAGE_TOKENS


def test_every_lesson_declares_its_runs_on_both_gpu_profiles():
    notebooks = sorted(p.name[:2] for p in (registry.course_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert list(budget.LESSONS) == notebooks
    for profile in budget.PROFILES:
        for lesson in budget.LESSONS:
            for run in budget.lesson_runs(lesson, profile):
                assert run.role in registry.HUB_MODELS[profile], (lesson, run.name)
                e = budget.estimate(run, profile)
                assert e.minutes > 0, (lesson, profile, run.name)
                assert e.peak > 0 or run.on_cpu, (lesson, profile, run.name)


def test_unknown_lesson_or_profile_is_refused():
    with pytest.raises(KeyError, match="declared lessons"):
        budget.lesson_runs("99", "colab")
    with pytest.raises(
        ValueError,
        match="runs are declared for colab, full; on tiny too for lessons 02, 03, 04, 05, 06, 07, 09",
    ):
        budget.lesson_runs("08", "tiny")
    with pytest.raises(ValueError, match="declared for colab, full"):
        budget.lesson_runs("09", "laptop")


def test_training_flops_follow_6n_for_a_full_fine_tune_and_4n_with_lora():
    """One step of 8 x 512 tokens: 6N per token for full fine-tuning, 4N with LoRA, 2N more with
    checkpointing, each plus the same attention term."""
    setup = TrainSetup(method="full", precision="mixed", batch_size=8, seq_len=512)
    run = budget.Run("one step", "base", setup, steps=1)
    c = budget.text_config("colab", "base")
    active, _ = budget._decoder_params(c)
    attention = 6 * c.num_hidden_layers * 512 * c.hidden_size
    tokens = 8 * 512
    assert budget.estimate(run, "colab").flops == pytest.approx(tokens * (6 * active + attention))
    lora = replace(run, setup=replace(setup, method="lora"))
    assert budget.estimate(lora, "colab").flops == pytest.approx(tokens * (4 * active + attention))
    ckpt = replace(lora, setup=replace(lora.setup, gradient_checkpointing=True))
    assert budget.estimate(ckpt, "colab").flops == pytest.approx(tokens * (6 * active + attention))
    # SmolLM2-135M: 30 layers 576 wide and a tied 49,152-token lm_head: its published 135 M parameters
    assert 0.13e9 < active < 0.14e9


def test_time_scales_with_steps_and_repeats():
    run = budget.lesson_runs("02", "colab")[1]
    one = budget.estimate(run, "colab").minutes
    assert budget.estimate(replace(run, steps=2 * run.steps), "colab").minutes == pytest.approx(2 * one)
    assert budget.estimate(replace(run, repeats=3), "colab").minutes == pytest.approx(3 * one)


def test_the_issue_estimate_of_02s_main_run_is_reproduced():
    """500 steps x 32 rows x 1,024 tokens of LoRA with checkpointing on SmolLM2-135M: about 16 PFLOP."""
    main = next(r for r in budget.lesson_runs("02", "colab") if "main" in r.name)
    assert 14e15 < budget.estimate(replace(main, steps=500), "colab").flops < 20e15


def test_training_peak_is_the_memory_planner_s():
    main = next(r for r in budget.lesson_runs("02", "colab") if "main" in r.name)
    plan = plan_memory(budget.text_config("colab", "base"), main.setup)
    assert budget.estimate(main, "colab").peak == pytest.approx(plan.total)
    # a preference pair doubles the micro-batch; a reward model's head has no vocabulary logits
    pair = replace(main, sequences=2)
    doubled = plan_memory(budget.text_config("colab", "base"), replace(main.setup, batch_size=16))
    assert budget.estimate(pair, "colab").peak == pytest.approx(doubled.total)
    assert budget.estimate(replace(pair, lm_head=False), "colab").peak == pytest.approx(
        doubled.total - doubled.logits
    )


def test_a_vlm_run_counts_its_image_tokens_and_vision_tower():
    t3 = {r.name: r for r in budget.lesson_runs("03", "full")}
    sft = next(r for name, r in t3.items() if "SFT on charts" in name)
    # SmolVLM-Instruct: 5 tiles (2 x 2 and the global view) of 81 tokens in every sequence
    assert sft.setup.seq_len > 5 * 81
    without = budget.estimate(replace(sft, tiles=0), "full")
    assert budget.estimate(sft, "full").flops > without.flops
    assert budget.estimate(sft, "full").peak - without.peak == pytest.approx(
        2.0 * budget.vision("full").params
    )


def test_decoding_is_launch_bound_unless_reading_the_weights_is_slower(monkeypatch):
    small = budget._generate("answers", "base", 64, new_tokens=10)
    gpu, c = budget.GPUS["colab"], budget.text_config("colab", "base")
    active, total = budget._decoder_params(c)
    launch = c.num_hidden_layers * gpu.layer_s + gpu.step_s
    prefill = 64 * budget.PROMPT_TOKENS * 2 * active / gpu.flops
    assert 2.0 * total / gpu.bandwidth < launch  # 135 M parameters on a T4: launch-bound
    assert budget.estimate(small, "colab").minutes * 60 == pytest.approx(10 * launch + prefill)
    slow = replace(gpu, bandwidth=1e9)  # a GPU that reads 1 GB/s: every step reads the weights
    monkeypatch.setitem(budget.GPUS, "colab", slow)
    assert budget.estimate(small, "colab").minutes * 60 == pytest.approx(10 * 2.0 * total / 1e9 + prefill)


def test_a_run_that_fills_the_gpu_on_purpose_is_not_counted_against_it():
    probe = next(r for r in budget.lesson_runs("07", "colab") if r.to_the_limit)
    e = budget.estimate(probe, "colab")
    assert budget.fits(e, "colab")
    assert not budget.fits(budget.estimate(replace(probe, to_the_limit=False, steps=1), "full"), "full")
    others = [
        budget.estimate(r, "colab").peak for r in budget.lesson_runs("07", "colab") if not r.to_the_limit
    ]
    assert budget.lesson_estimate("07", "colab").peak == max(others)


def test_readme_gpu_columns_are_the_estimates():
    """README's colab and full columns are generated (`python -m helpers.budget --write`), never typed."""
    readme = (registry.course_root() / "README.md").read_text()
    rows = budget.README_ROW.findall(readme)
    assert [r[0] for r in rows] == list(budget.LESSONS)
    assert budget.readme_with_estimates(readme) == readme, (
        "run `make budget` to regenerate README's GPU columns"
    )
    le = budget.lesson_estimate("02", "colab")
    assert budget.column(le) == f"~{le.minutes:.0f} min, {le.peak / GiB:.1f} GiB (est.)"


def test_the_instructor_guides_gpu_columns_are_the_estimates():
    """docs/instructor_guide.md's T4 and A100 columns and totals follow the estimates (`make budget`)."""
    sys.path.insert(0, str(registry.course_root() / "scripts"))
    import instructor_guide

    guide = (registry.course_root() / "docs" / "instructor_guide.md").read_text()
    rows = instructor_guide.ROW.findall(guide)
    assert [r[0][:2] for r in rows] == list(budget.LESSONS)
    assert len(instructor_guide.TOTAL.findall(guide)) == 1
    assert instructor_guide.with_current_estimates(guide) == guide, "run `make budget` to regenerate them"
    stale = guide.replace(f"| {instructor_guide.estimate_cells(rows[5][0])} |", "| 1 | 0.1 | 1 | 0.1 |")
    assert stale != guide  # 05's row really went stale, and is rewritten
    assert instructor_guide.with_current_estimates(stale) == guide


@pytest.mark.parametrize("profile", budget.PROFILES)
def test_every_sized_lesson_fits_its_gpu_and_slot_and_the_ledger_is_current(profile):
    """A lesson fits its GPU (10% kept free) and its slot (45 min on a T4, 20 on an A100), or it is
    in NOT_YET_SIZED, and then it must still overrun: the ledger cannot go stale."""
    for le in budget.course_estimates(profile):
        over = [e.run.name for e in le.over_memory] + ([f"{le.minutes:.0f} min"] if le.over_time else [])
        if (le.lesson, profile) in budget.NOT_YET_SIZED:
            assert over, f"{le.lesson} on {profile} now fits: remove it from NOT_YET_SIZED"
        else:
            assert not over, f"{le.lesson} on {profile} overruns: {over}"
    if not any(p == profile for _, p in budget.NOT_YET_SIZED) and profile in budget.COURSE_LIMIT_MINUTES:
        total = sum(le.minutes for le in budget.course_estimates(profile))
        assert total <= budget.COURSE_LIMIT_MINUTES[profile]


@pytest.mark.parametrize("lesson", budget.PLANNED)
def test_a_planned_notebook_reads_every_keyed_run_of_its_plan_and_no_other(lesson):
    """The runs a notebook makes are the declared ones: every PLAN["key"] it reads is declared on
    every profile, and every keyed run is read (else the estimate sizes a run nobody makes)."""
    path = next((registry.course_root() / "notebooks").glob(f"{lesson}_*.ipynb"))
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    read = set(re.findall(r'PLAN\[\s*"([\w-]+)"\s*\]', code))
    assert read, f"notebook {path.name} reads nothing from its plan"
    for profile in ("tiny", *budget.PROFILES):
        plan = budget.lesson_plan(lesson, profile)
        keyed = {k for k, r in plan.items() if r.key}
        assert read == keyed, (profile, read ^ keyed)
        assert f"Runs of lesson {lesson} on {profile}" in str(plan)
        for run in plan.values():
            assert run.name in str(plan)
            if run.setup is not None:  # tiny trains in float32 on a CPU; the GPUs in half precision
                # 06's learning-rate runs and 07's memory measurements run float32 on every machine
                fp32_everywhere = lesson == "06" or run.key in ("largest", "trades")
                assert (run.setup.precision == "fp32") == (profile == "tiny" or fp32_everywhere), (
                    profile,
                    run.name,
                )


def test_a_rehearsal_plans_with_its_shrunk_sizes_and_the_gpu_shapes(monkeypatch):
    """The rehearsal shrinks steps and rows, keeps batch and length: a plan read from the profile
    must follow it, or a CPU rehearsal runs a T4's 150 SFT steps."""
    from helpers.runtime import Hardware, choose_profile

    monkeypatch.setenv("COURSE_REHEARSAL", "1")
    profile = choose_profile(Hardware(cpu_cores=2, ram_gb=8), "colab")
    assert profile.sizes.max_steps < registry.SIZES["colab"].max_steps
    plan, gpu = budget.lesson_plan("09", profile), budget.lesson_plan("09", "colab")
    assert plan["sft"].steps == min(150, profile.sizes.max_steps) < gpu["sft"].steps
    assert plan["narrow"].setup == gpu["narrow"].setup and plan["sft"].setup == gpu["sft"].setup


def test_02s_comparison_runs_train_the_same_rows_on_every_profile_and_tiny_keeps_its_steps():
    """The comparison and resume runs are sized in rows: tiny's 100 and 40 steps of 16 rows, a T4's
    50 and 20 of 32; the main run at most 200 steps."""
    for profile in ("tiny", "colab"):
        plan = budget.lesson_plan("02", profile)
        # a packed micro-batch is one sequence of batch_size rows
        rows = registry.SIZES[profile].batch_size * plan["compare"].accum
        assert plan["compare"].steps * rows == budget.COMPARE_ROWS_02
        assert plan["resume"].steps * rows == budget.RESUME_ROWS_02
        assert plan["main"].steps <= 200
    tiny = budget.lesson_plan("02", "tiny")
    assert (tiny["main"].steps, tiny["compare"].steps, tiny["resume"].steps) == (200, 100, 40)


def test_tiny_plans_count_the_shipped_tiny_vlm_s_image_tokens():
    """04's VLM run on tiny: the tokens tiny-vlm's processor puts in per chart, not a hub model's."""
    shipped = registry.course_root() / "data" / "tiny-world" / "tiny-vlm" / "processor_config.json"
    assert json.loads(shipped.read_text())["image_seq_len"] == IMAGE_TOKENS
    assert budget.image_tokens("tiny", 1) == IMAGE_TOKENS < budget.image_tokens("colab", 1)
