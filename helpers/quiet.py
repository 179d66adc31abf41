"""Quiet lessons: each cell ends on its result, not on progress bars, banners and repeated warnings.

`get_profile()` calls `quiet()` at the top of every lesson. Set `COURSE_VERBOSE=1` before starting
Jupyter (or before the first cell) to see everything the libraries print, for instance to debug a
run that misbehaves. Errors always show: only progress bars, information and warnings are muted.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Callable
from types import ModuleType

VERBOSE_ENV = "COURSE_VERBOSE"

# Warnings that say nothing a learner can act on, as (message, category): notices of renamed or
# retiring arguments (TRL and PEFT still pass old names to transformers; TRL retires some the
# lessons use). They are for the course's maintainers: COURSE_VERBOSE=1 shows them.
_NOISE = (
    (".*is deprecated and will be removed in v6", Warning),
    (".*deprecated", FutureWarning),
    (".*Both `past_key_values` and `cache` are set", FutureWarning),
    (".*torch.utils.checkpoint: the use_reentrant parameter", Warning),
)


class _ErrorsOnly(logging.Filter):
    """Kept on a logger that resets its own level on import (DeepSpeed's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _silence_printer(hf_trainer) -> None:
    """Trainer prints a dict per logging step when its bar is off; lessons plot log_history instead."""
    from transformers import PrinterCallback

    class SilentPrinter(PrinterCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass  # the history stays in trainer.state.log_history

    if hf_trainer.PrinterCallback is PrinterCallback:
        hf_trainer.PrinterCallback = SilentPrinter


class _OnImport(importlib.abc.MetaPathFinder):
    """Calls `then(module)` right after `name` is imported, and leaves the import to Python."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]):
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once, and out of the way of the real lookup
        spec = importlib.util.find_spec(fullname)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec  # nothing to wrap: the import goes on (or fails) as it would have
        run, then = spec.loader.exec_module, self.then
        spec.loader.exec_module = lambda module: (run(module), then(module))[0]
        return spec


def _silent_trainer_log() -> None:
    # transformers.trainer takes seconds to import (peft and bitsandbytes come with it): patch it
    # when a lesson imports it, so that lessons and processes that never train do not pay for it.
    name = "transformers.trainer"
    if name in sys.modules:
        _silence_printer(sys.modules[name])
    elif not any(isinstance(f, _OnImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _OnImport(name, _silence_printer))


def _no_bars() -> None:
    """Every tqdm bar off, even where a library passes its own `disable=False` (lm-evaluation-harness
    does, for each request type)."""
    from tqdm import std

    draw = std.tqdm.__init__
    if getattr(draw, "course_quiet", False):
        return

    def silent(self, *args, **kwargs):
        kwargs["disable"] = True
        draw(self, *args, **kwargs)

    silent.course_quiet = True
    std.tqdm.__init__ = silent


# Libraries that warn while they are imported, before any lesson code runs: bitsandbytes on a CPU
# with AVX512-BF16 looks for a kernel on the hub ("Failed to load CPU gemm_4bit_forward"), through
# the `kernels` package ("Skipping publisher trust check"); the CPU path works without it.
_IMPORT_TIME = ("bitsandbytes", "kernels")


def mute_import_warnings() -> None:
    """Run when `helpers` is imported, ahead of the libraries; unless COURSE_VERBOSE is set."""
    if not verbose():
        for name in _IMPORT_TIME:
            logging.getLogger(name).setLevel(logging.ERROR)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes"}


def quiet() -> bool:
    """Mute progress bars, library banners and known-harmless warnings; False when COURSE_VERBOSE is set.

    Trainer follows the same switch: with transformers' verbosity at "error", TrainingArguments
    defaults to `disable_tqdm=True`, and the loss dicts Trainer would then print at every
    `logging_steps` are dropped too; `trainer.state.log_history` keeps them for the lesson's plots.
    """
    if verbose():
        return False
    # Loggers first: bitsandbytes warns while it is imported, and transformers.trainer imports it.
    for name in (
        *_IMPORT_TIME,
        "accelerate",
        "peft",
        "trl",
        "torch.distributed.elastic",
        "lm_eval",
        "llama-cpp-python",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    deepspeed = logging.getLogger("DeepSpeed")  # "Setting accelerator to CPU" on every CPU import
    if not any(isinstance(f, _ErrorsOnly) for f in deepspeed.filters):
        deepspeed.addFilter(_ErrorsOnly())
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    _silent_trainer_log()
    _no_bars()
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    except ImportError:  # datasets is optional for a few helpers
        pass
    for message, category in _NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
    return True
