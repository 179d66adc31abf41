"""The quiet switch: what a lesson's cells print after get_profile(), and COURSE_VERBOSE=1 undoing it.

Each case runs in a fresh interpreter: logging and warning filters are process-wide.
"""

import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import logging, sys, warnings
    from helpers.quiet import quiet
    print("quiet:", quiet())
    print("trainer imported:", "transformers.trainer" in sys.modules)  # seconds: only when a lesson trains
    import transformers
    from transformers import TrainingArguments
    logging.basicConfig(stream=sys.stdout, format="LOG %(name)s %(message)s")
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("kernels-community gemm_4bit_forward")
    logging.getLogger("DeepSpeed").warning("Setting accelerator to CPU")
    logging.getLogger("DeepSpeed").error("a real DeepSpeed error")
    transformers.utils.logging.get_logger("transformers.processing_utils").warning("Kwargs passed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        from helpers.quiet import quiet as again
        again()
        warnings.warn("`max_prompt_length` is deprecated and will be removed in v6", FutureWarning)
        warnings.warn("`label_smoothing_factor` is deprecated in `SFTTrainer`", FutureWarning)
        warnings.warn("this one a learner should see", UserWarning)
    print("warnings:", [str(w.message) for w in caught])
    print("bars:", transformers.utils.logging.is_progress_bar_enabled())
    print("disable_tqdm:", TrainingArguments(output_dir="/tmp/quiet-probe", report_to="none").disable_tqdm)
    import transformers.trainer as hf_trainer
    printer = hf_trainer.PrinterCallback()  # what Trainer adds when its bar is off
    printer.on_log(None, type("State", (), {"is_local_process_zero": True})(), None, logs={"loss": 1.25})
    from tqdm.auto import tqdm
    print("own bar off:", tqdm(range(3), disable=False).disable)  # as lm-evaluation-harness asks
    """
)


def run_probe(verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "COURSE_VERBOSE"}
    if verbose:
        env["COURSE_VERBOSE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True, timeout=300
    )
    return done.stdout + done.stderr


def test_quiet_mutes_bars_chatter_and_known_warnings_but_not_errors():
    out = run_probe(verbose=False)
    assert "quiet: True" in out
    assert "trainer imported: False" in out
    assert "gemm_4bit_forward" not in out and "Setting accelerator" not in out and "Kwargs passed" not in out
    assert "a real DeepSpeed error" in out  # errors still show
    caught = out.split("warnings:")[1].splitlines()[0]
    assert "will be removed in v6" not in caught and "label_smoothing_factor" not in caught
    assert "this one a learner should see" in out
    assert "bars: False" in out
    assert "disable_tqdm: True" in out  # Trainer's bar follows transformers' verbosity
    assert "1.25" not in out  # and its per-step log lines are dropped
    assert "own bar off: True" in out


def test_course_verbose_keeps_everything():
    out = run_probe(verbose=True)
    assert "quiet: False" in out
    assert "gemm_4bit_forward" in out and "Setting accelerator to CPU" in out
    assert "is deprecated and will be removed in v6" in out and "label_smoothing_factor" in out
    assert "bars: True" in out
    assert "disable_tqdm: False" in out
    assert "1.25" in out
    assert "own bar off: False" in out


def test_importing_helpers_mutes_what_libraries_say_while_they_are_imported():
    # bitsandbytes, imported by transformers.trainer, warns at import on a CPU with AVX512-BF16:
    # before any lesson cell calls quiet(). Importing helpers comes first in every lesson.
    probe = textwrap.dedent(
        """
        import logging
        import helpers
        print([logging.getLogger(n).getEffectiveLevel() for n in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub")])
        """
    )
    for verbose, expected in ((False, "[40, 40]"), (True, "[30, 30]")):
        env = {k: v for k, v in os.environ.items() if k != "COURSE_VERBOSE"} | (
            {"COURSE_VERBOSE": "1"} if verbose else {}
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        )
        assert done.stdout.strip() == expected, (verbose, done.stdout)
