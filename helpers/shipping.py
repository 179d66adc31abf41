"""Shipping a model to llama.cpp, for notebook 10: GGUF files made by llama.cpp's own converters,
quantised and run through llama-cpp-python.

    python -m helpers.shipping     # fetch the converters into the course cache (done by `make tiny`)

The llama-cpp-python package on the index is source only; it compiles llama.cpp when installed
(`pip install -e ".[ship]"`, a few minutes, cached by pip afterwards) but its wheel carries only the
bindings. The converters (`convert_hf_to_gguf.py`, `convert_lora_to_gguf.py`, their `conversion`
package and the `gguf-py` they are written against) come from the same source package, so they
match the compiled llama.cpp. They run in a subprocess with that vendored gguf-py first on the path:
the separately published `gguf` package is another version, and the converter fails with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from helpers.registry import cache_dir

PACKAGE = "llama_cpp_python"
INSTALL_HINT = 'install the course\'s shipping tools: pip install -e ".[ship]" (make install does it)'
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py")

# llama.cpp recognises a BPE tokenizer by a hash of the ids it gives a fixed text, one hash per
# published tokenizer. A tokenizer trained here (the tiny world's, the rehearsal's stand-ins) has
# no published hash, so the converter refuses it; `pre_tokenizer` then names the splitting rules
# llama.cpp should apply. A published tokenizer it knows keeps its own.
_RUNNER = """
import runpy, sys
tools, pre_tokenizer, script, *args = sys.argv[1:]
sys.path[:0] = [tools, tools + "/gguf-py"]
from conversion.base import TextModel
recognise = TextModel.get_vocab_base_pre
def declared(self, tokenizer):
    try:
        return recognise(self, tokenizer)
    except NotImplementedError:
        if not pre_tokenizer:
            raise
        return pre_tokenizer
TextModel.get_vocab_base_pre = declared
sys.argv = [script, *args]
runpy.run_path(f"{tools}/{script}", run_name="__main__")
"""


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"llama-cpp-python is not installed: {INSTALL_HINT}") from None


def converter_dir() -> Path:
    return cache_dir() / "llama.cpp" / f"{PACKAGE}-{llama_cpp_version()}"


def fetch_converters(log=print) -> Path:
    """The converters of the installed llama-cpp-python's llama.cpp, downloaded once (pip's own
    cache keeps the source package) and unpacked into the course cache."""
    tools = converter_dir()
    if all((tools / part).exists() for part in CONVERTER_PARTS):
        return tools
    version = llama_cpp_version()
    log(f"fetching llama.cpp's converters from the llama-cpp-python {version} source package ...")
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            + ["--dest", tmp, f"llama-cpp-python=={version}"],
            capture_output=True,
            text=True,
            check=False,
        )
        archives = list(Path(tmp).glob("*.tar.gz"))
        if got.returncode != 0 or not archives:
            raise RuntimeError(
                f"could not download the llama-cpp-python {version} source package, which holds llama.cpp's "
                f"converters: {got.stderr.strip()[-400:]}\nThis needs the package index once; run "
                "`python -m helpers.shipping` where there is a network, then work offline."
            )
        prefix = f"{archives[0].name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        staging = Path(tmp) / "tools"
        with tarfile.open(archives[0]) as archive:
            members = [
                m
                for m in archive.getmembers()
                if m.name.startswith(prefix) and m.name[len(prefix) :].split("/")[0] in CONVERTER_PARTS
            ]
            for m in members:
                m.name = m.name[len(prefix) :]
            # The "data" filter refuses links and paths out of the folder (Python 3.10.12+, 3.11.4+).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            archive.extractall(staging, members=members, **safe)
        # Copied beside its place, then renamed: a copy cut short is never taken for the converters.
        partial = tools.with_name(tools.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.move(str(staging), partial)
        shutil.rmtree(tools, ignore_errors=True)
        partial.rename(tools)
    return tools


def _convert(script: str, args: Sequence[str], pre_tokenizer: str | None) -> None:
    tools = fetch_converters()
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(tools), pre_tokenizer or "", script, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"},
    )
    if done.returncode != 0:
        hint = ""
        if "pre-tokenizer was not recognized" in done.stderr:
            hint = (
                "\nllama.cpp does not know this tokenizer's pre-tokenizer (it knows published ones by a hash). "
                "Name the rules it splits text by, e.g. pre_tokenizer='smollm' (digits one by one, then GPT-2's "
                "byte-level rules), 'gpt-2' or 'llama-bpe', and check the token ids against the tokenizer's."
            )
        raise RuntimeError(f"{script} failed (exit {done.returncode}):\n{done.stderr.strip()[-1500:]}{hint}")


def to_gguf(
    model_dir: str | Path, out: str | Path, outtype: str = "f32", pre_tokenizer: str | None = None
) -> Path:
    """A saved transformers model (config, safetensors, tokenizer) as one GGUF file."""
    _convert("convert_hf_to_gguf.py", [model_dir, "--outfile", out, "--outtype", outtype], pre_tokenizer)
    return Path(out)


def lora_to_gguf(
    adapter_dir: str | Path, base_dir: str | Path, out: str | Path, outtype: str = "f32"
) -> Path:
    """A PEFT LoRA adapter as a GGUF adapter, applied to the base model's GGUF at load time."""
    _convert(
        "convert_lora_to_gguf.py",
        [adapter_dir, "--base", base_dir, "--outfile", out, "--outtype", outtype],
        None,
    )
    return Path(out)


@contextlib.contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """llama.cpp's messages, kept for an error: llama-cpp-python passes them to Python's stderr,
    and C code without its log callback writes to the process's."""
    caught = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+b") as raw, contextlib.redirect_stderr(caught):
        os.dup2(raw.fileno(), 2)
        try:
            yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            raw.seek(0)
            caught.write(raw.read().decode(errors="replace"))


def quantize(src: str | Path, out: str | Path, kind: str) -> Path:
    """`src` (an f32 or f16 GGUF) quantised to `kind` ("Q8_0", "Q4_0", "Q4_K_M", ...) by llama.cpp."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}", None)
    if ftype is None:
        known = sorted(
            n.removeprefix("LLAMA_FTYPE_MOSTLY_")
            for n in dir(llama_cpp)
            if n.startswith("LLAMA_FTYPE_MOSTLY_")
        )
        raise ValueError(f"unknown quantisation type {kind!r}; llama.cpp knows {', '.join(known)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    with _captured_stderr() as log:
        failed = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if failed:
        raise RuntimeError(f"quantising {src} to {kind} failed:\n{log.getvalue()[-2000:]}")
    return Path(out)


def load_gguf(
    path: str | Path,
    lora: str | Path | None = None,
    n_ctx: int = 512,
    logits_all: bool = False,
    f32_cache: bool = False,
):
    """A llama.cpp model on the CPU, quiet, on as many threads as torch uses. llama.cpp keeps the
    attention's keys and values in 16-bit floats (half the memory a token); `f32_cache` keeps
    them in 32, for comparing logits with transformers in float32."""
    import llama_cpp
    import torch

    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: convert the model first (to_gguf)")
    cache = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if f32_cache else {}
    return llama_cpp.Llama(
        model_path=str(path),
        lora_path=str(lora) if lora else None,
        n_ctx=n_ctx,
        n_threads=torch.get_num_threads(),
        logits_all=logits_all,
        verbose=False,
        seed=0,
        **cache,
    )


def greedy_replies(llm, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy continuations of already-templated prompts, to the end-of-turn token, stripped as
    helpers.generation strips transformers' replies."""
    replies = []
    stop = {llm.token_eos()}
    for prompt in prompts:
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        out: list[int] = []
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if token in stop or len(out) >= max_new_tokens:
                break
            out.append(token)
        replies.append(llm.detokenize(out).decode("utf-8", errors="replace").strip())
    return replies


def prompt_logits(llm, ids: Sequence[int]):
    """llama.cpp's logits at every position of `ids` (the model needs logits_all=True)."""
    import numpy as np

    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


if __name__ == "__main__":
    print(f"llama.cpp's converters in {fetch_converters()}")
