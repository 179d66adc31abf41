"""Build the tiny world: its data, tokenizer, and the models the `tiny` profile loads.

    python -m helpers.tiny build            # all but the teacher, in seconds (prebuilt models)
    python -m helpers.tiny build --only tiny-teacher    # notebook 05's teacher
    python -m helpers.tiny build --force    # rebuild even if the cache is current
    python -m helpers.tiny build --from-scratch --force   # retrain every model (tens of minutes)
    python -m helpers.tiny freeze           # make the cache's models the repository's prebuilt ones

The models (and the tokenizer they were trained with) are trained once and shipped in the
repository (data/tiny-world/, ~11 MB of safetensors), so that `make lab` is ready in a minute or
two and every machine starts from the same tiny world: trained from scratch, the world lands
somewhere else on every CPU, because float results differ between CPU kernels. A prebuilt part is
used only when it was trained from today's data, spec and seed, and its files match their hashes;
otherwise the part is trained here. The data is always generated here (seconds, the same rows on
every machine).

Parts, each saved under the tiny cache (helpers.registry.tiny_dir()) with safetensors weights:
  data       DatasetDicts in the hub datasets' columns (chat, preference, charts, news, pretraining)
  tokenizer  byte-level BPE with a ChatML template that marks assistant tokens for the loss
  tiny-base  a small Llama pretrained from scratch on the tiny corpus
  tiny-chat  tiny-base after supervised fine-tuning on the tiny instructions (exact match
             before/after is written to report.json)
  tiny-teacher  a larger Llama, pretrained longer, then fine-tuned the same way
  tiny-vlm   an Idefics3 (SmolVLM) model with a small vision tower and tiny-base's text weights
Called on first use by helpers.runtime.get_profile() on the `tiny` profile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

try:
    import fcntl  # POSIX; on Windows the build runs unlocked (use WSL for two notebooks at once)
except ImportError:  # pragma: no cover
    fcntl = None

import datasets
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)

from helpers.registry import course_root, course_seed, tiny_dir
from helpers.tiny import charts, world
from helpers.tiny.tokenizer import train_tokenizer

# Bump when a generator or a spec changes, so stale caches rebuild themselves.
WORLD_VERSION = 7
PARTS = ("data", "tokenizer", "tiny-base", "tiny-chat", "tiny-vlm", "tiny-teacher")  # build order
# What get_profile() and `make tiny` build; the teacher only when a lesson asks for it.
DEFAULT_PARTS = ("data", "tokenizer", "tiny-base", "tiny-chat", "tiny-vlm")


@dataclass(frozen=True)
class TinySpec:
    """Size and pretraining budget of a tiny Llama."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    pretrain_steps: int  # a 2-layer model needs ~1,000 steps before it learns to copy a token
    batch_size: int  # blocks per step
    block_size: int  # tokens per block
    lr: float
    sft_steps: int  # full fine-tuning steps on the instructions
    sft_lr: float = 1e-3  # high for SFT, right for a 0.5 M-parameter model
    seed: int = 0  # training seed; spec_for() sets it from COURSE_SEED
    unseen_skills: str = ""  # comma-separated skills its pretraining corpus leaves out


# tiny-base never reads two of the eight skills, so tiny-chat cannot know them and the teacher
# (which reads them all) leads it on every machine. Trained from scratch, a skill appears suddenly
# at a step that moves with the seed and the CPU's kernels: at 2,000 steps tiny-chat scored 40-74.5%
# held-out exact match across four such builds, whole skills present in one and absent in another.
# At 4,000 steps every skill it reads is in place (see CPU-NOTES.md for the builds measured).
BASE = TinySpec(
    128,
    2,
    4,
    384,
    pretrain_steps=4000,
    batch_size=32,
    block_size=64,
    lr=3e-3,
    sft_steps=500,
    unseen_skills="capitals,reverse",
)
# Notebook 05's teacher: ~2.5x the compute of tiny-base per step. Its SFT must run long enough to
# learn where a count stops and to copy letters one by one: measured on one pretrained teacher,
# 1,000 steps at 5e-4 gave 74% held-out exact match (another build of the same spec 64%, counting
# past the end), 1,000 at 1e-3 76%, 2,000 at 1e-3 89%, 3,000 at 1e-3 88%, 2,000 at 2e-3 83%.
# Pretrained 4,000 steps, as tiny-base: at 2,000 the teacher had capitals and reversing in two of
# four builds (98% exact match) and barely in the others (74%, 84.5%).
TEACHER = TinySpec(
    192, 3, 6, 512, pretrain_steps=4000, batch_size=32, block_size=64, lr=2e-3, sft_steps=2000, sft_lr=1e-3
)


@dataclass(frozen=True)
class VlmSpec:
    """tiny-vlm's alignment stage: every weight trained on captions and short questions of charts."""

    align_steps: int
    batch_size: int
    lr: float
    caption_share: float  # of the rows: captions; then one bar's value; the rest the tallest bar
    value_share: float
    # Its questions' wordings (helpers.tiny.charts.ASKS), " | " between them; the default is the
    # first builds' two, so a manifest from before this field reads as built with those.
    asks: str = "{c}? | tallest?"
    vision_lr_scale: float = 1.0  # the vision tower's and connector's learning rate, over `lr`
    seed: int = 0  # spec_for() sets it from COURSE_SEED


# Measured on one build: after 2,000 steps (half captions) tiny-vlm read the value of a named bar
# 19% of the time (blank images 14%); after 4,000 steps with 60% value questions, 65% (the value
# questions' loss drops suddenly near step 2,400), the tallest bar 92%, 85% of caption values.
# That build, asked only "red?", ranked a bar's true value above a random other 85% of the time in
# its own wording but 61% in the lessons' (so 04's DPO on chart pairs found little to sharpen), and
# in some worlds the reading came late or not at all. Hence several wordings, 6,000 steps, and the
# vision tower and connector at 3x the rate: in five worlds 04's chart pairs then reached 71-87%.
VLM = VlmSpec(
    align_steps=6000,
    batch_size=16,
    lr=1e-3,
    caption_share=0.3,
    value_share=0.6,
    asks=" | ".join(charts.ASKS),
    vision_lr_scale=3.0,
)
SPECS = {"tiny-base": BASE, "tiny-chat": BASE, "tiny-teacher": TEACHER, "tiny-vlm": VLM}
VOCAB_SIZE = 1024
N_PRETRAIN_DOCS = 15_000


def _log(msg: str) -> None:
    print(f"[tiny] {msg}", flush=True)


# --- data ------------------------------------------------------------------------------------------


def build_data(out: Path) -> None:
    chat = world.instruction_rows(n_train=3000, n_test=200)
    prefs = world.preference_rows(n_train=2000, n_test=200)
    news = world.news_rows(n_train=2000, n_test=200)
    text = {
        "train": world.pretraining_text(N_PRETRAIN_DOCS, seed=0),
        "test": world.pretraining_text(300, seed=99),
    }
    chart_features = datasets.Features(
        {
            "image": datasets.Image(),
            "query": datasets.Value("string"),
            "label": datasets.List(datasets.Value("string")),
            "human_or_machine": datasets.ClassLabel(names=["human", "machine"]),
        }
    )
    news_features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=[world.NEWS_TOPICS[i][0] for i in range(4)]),
        }
    )
    sets = {
        "chat": datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in chat.items()}),
        "preference": datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in prefs.items()}),
        "news": datasets.DatasetDict(
            {k: datasets.Dataset.from_list(v, features=news_features) for k, v in news.items()}
        ),
        "pretraining": datasets.DatasetDict(
            {k: datasets.Dataset.from_dict({"text": v}) for k, v in text.items()}
        ),
        "charts": datasets.DatasetDict(
            {
                split: datasets.Dataset.from_list(charts.chart_rows(n, seed), features=chart_features)
                for split, n, seed in (("train", 3000, 4), ("test", 100, 5))
            }
        ),
    }
    for role, dsd in sets.items():
        dsd.save_to_disk(str(out / role))


# --- language models -------------------------------------------------------------------------------


def llama_config(spec: TinySpec, tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=tokenizer.model_max_length,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def pack_blocks(tokenizer, texts: Iterable[str], block_size: int) -> torch.Tensor:
    """Concatenate documents, separated by the bos token, into (n_blocks, block_size) ids."""
    ids: list[int] = []
    for doc in tokenizer(list(texts))["input_ids"]:
        ids += doc + [tokenizer.bos_token_id]
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size]).view(n, block_size)


def pretrain(
    spec: TinySpec, tokenizer, texts: list[str], log: Callable[[str], None] = _log
) -> LlamaForCausalLM:
    """Next-token pretraining from random weights; returns the model and logs the loss."""
    torch.manual_seed(spec.seed)
    blocks = pack_blocks(tokenizer, texts, spec.block_size)  # (n_blocks, block_size)
    model = LlamaForCausalLM(llama_config(spec, tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.01)
    gen = torch.Generator().manual_seed(spec.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"pretraining {n_params / 1e6:.2f} M parameters on {blocks.numel() / 1e6:.2f} M tokens")

    def loss_at(step: int) -> torch.Tensor:
        batch = blocks[torch.randint(0, len(blocks), (spec.batch_size,), generator=gen)]
        return model(input_ids=batch, labels=batch).loss

    optimise(model, opt, spec.pretrain_steps, loss_at, log, every=250)
    return model


def optimise(model, opt, steps: int, loss_at: Callable[[int], torch.Tensor], log, every: int) -> None:
    """The build's training loop: a one-cycle learning rate, gradients clipped at norm 1, the loss
    logged every `every` steps; leaves the model in eval mode."""
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, opt.defaults["lr"], total_steps=steps, pct_start=0.05)
    model.train()
    for step in range(steps):
        loss = loss_at(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % every == 0 or step == steps - 1:
            log(f"  step {step:>5}  loss {loss.item():.3f}")
    model.eval()


def chat_scores(model, tokenizer, rows) -> dict[str, float]:
    """Exact match of greedy replies on held-out chat rows, per skill and overall."""
    from helpers.generation import generate_replies
    from helpers.metrics import exact_match_by_group

    prompts = [r["messages"][:-1] for r in rows]
    targets = [r["messages"][-1]["content"] for r in rows]
    replies = generate_replies(model, tokenizer, prompts, max_new_tokens=64)
    return exact_match_by_group(replies, targets, [r["skill"] for r in rows])


def sft(model, tokenizer, train_rows, spec: TinySpec, workdir: Path, log: Callable[[str], None] = _log):
    """Full fine-tuning on chat rows with TRL, loss on assistant tokens only."""
    # Here, not at the top: the Trainer's modules take seconds to import, and every lesson imports
    # this module (get_profile checks the world) while only a build trains.
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class LossLine(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if (
                logs
                and "loss" in logs
                and (state.global_step % 250 == 0 or state.global_step == state.max_steps)
            ):
                log(f"  sft step {state.global_step:>5}  loss {float(logs['loss']):.3f}")

    args = SFTConfig(
        output_dir=str(workdir),
        max_steps=spec.sft_steps,
        per_device_train_batch_size=16,
        learning_rate=spec.sft_lr,
        lr_scheduler_type="cosine",
        warmup_steps=10,
        assistant_only_loss=True,  # the template's {% generation %} marks what is trained
        max_length=None,
        padding_free=True,  # no pad tokens at all: rows are concatenated (CPU-NOTES: 1.9x)
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        disable_tqdm=True,
        seed=spec.seed,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=tokenizer)
    # One short line per 250 steps, as pretrain() logs, instead of the Trainer's dict per log step.
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LossLine())
    trainer.train()
    return trainer.model.eval()


# --- vision-language model -------------------------------------------------------------------------


IMAGE_TOKENS = 16  # tiny-vlm's tokens per chart: (64 px / 8 px patches)^2 = 64, pixel shuffle 2 -> 16


def build_vlm(base_dir: Path, out: Path, spec: VlmSpec, log: Callable[[str], None] = _log) -> dict:
    """An Idefics3 (SmolVLM) model: a small vision tower and tiny-base's text model, aligned as
    real VLMs are before their task SFT: trained on captions and short questions of charts."""
    from importlib import resources

    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.eos_token = "<end_of_utterance>"  # SmolVLM ends each turn with it
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(course_seed())  # the vision tower's random start
    config = Idefics3Config(
        text_config=base.config.to_dict(),
        vision_config=Idefics3VisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
        ).to_dict(),
        # Pixel shuffle: (64/8)^2 = 64 patches -> 16 image tokens. With 4 tokens (patch 16) a
        # LoRA-tuned tiny-vlm scored no better with the charts than with blank images.
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    vlm = Idefics3ForConditionalGeneration(config)
    vlm.model.text_model.load_state_dict(base.model.state_dict())
    vlm.lm_head.weight = vlm.model.text_model.embed_tokens.weight
    # TRL's SmolVLM training template: SmolVLM's own, plus {% generation %} markers.
    template = (resources.files("trl") / "chat_templates" / "smolvlm_training.jinja").read_text()
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": 64}, max_image_size={"longest_edge": 64}, do_image_splitting=False
        ),
        tokenizer=tokenizer,
        image_seq_len=IMAGE_TOKENS,
        chat_template=template,
    )
    report = {"spec": asdict(spec), **align_vlm(vlm, processor, spec, log)}
    vlm.save_pretrained(out)
    processor.save_pretrained(out)
    return report


def align_vlm(vlm, processor, spec: VlmSpec, log: Callable[[str], None] = _log) -> dict[str, float]:
    """Train every weight of `vlm` on alignment rows (helpers.tiny.charts.alignment_rows), the loss
    on the answers only; return its held-out accuracy with the charts and with blank images."""
    from transformers.utils import logging as hf_logging

    # The processor warns about its keyword arguments at every call: one line a step otherwise.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return _align(vlm, processor, spec, log)
    finally:
        hf_logging.set_verbosity(verbosity)


def _align(vlm, processor, spec: VlmSpec, log: Callable[[str], None]) -> dict[str, float]:
    from PIL import Image

    def chat(row, answer=True):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["ask"]}]}]
        if answer:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]})
        return messages

    def batch_of(rows, answer=True, images=None):
        batch = processor.apply_chat_template(
            [chat(r, answer) for r in rows],
            images=[[image] for image in images or [r["image"] for r in rows]],
            add_generation_prompt=not answer,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            padding=True,
            return_assistant_tokens_mask=answer,
        )
        if answer:
            trained = batch.pop("assistant_masks").bool() & batch["attention_mask"].bool()
            batch["labels"] = batch["input_ids"].masked_fill(~trained, -100)
        return batch

    shares = (spec.caption_share, spec.value_share)
    asks = spec.asks.split(" | ")
    train = charts.alignment_rows(4000, seed=100 + spec.seed, shares=shares, asks=asks)
    test = charts.alignment_rows(200, seed=200 + spec.seed, shares=(0.0, 0.6), asks=asks)  # questions only
    torch.manual_seed(spec.seed)
    seeing = [p for n, p in vlm.named_parameters() if ".vision_model." in n or ".connector." in n]
    ids = {id(p) for p in seeing}
    rest = [p for p in vlm.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW(
        [{"params": rest}, {"params": seeing, "lr": spec.lr * spec.vision_lr_scale}], lr=spec.lr
    )
    gen = torch.Generator().manual_seed(spec.seed)
    log(f"aligning on {len(train):,} charts: captions, one bar's value, the tallest bar")

    def loss_at(step: int) -> torch.Tensor:
        rows = [train[i] for i in torch.randint(0, len(train), (spec.batch_size,), generator=gen).tolist()]
        return vlm(**batch_of(rows)).loss

    optimise(vlm, opt, spec.align_steps, loss_at, log, every=500)
    end_of_turn = processor.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    side, processor.tokenizer.padding_side = (
        processor.tokenizer.padding_side,
        "left",
    )  # generate at the right edge
    scores = {}
    blank = Image.new("RGB", test[0]["image"].size, "white")
    for name, images in (("charts", None), ("blank images", [blank] * len(test))):
        with torch.no_grad():
            inputs = batch_of(test, answer=False, images=images)
            out = vlm.generate(**inputs, max_new_tokens=6, do_sample=False, eos_token_id=end_of_turn)
        replies = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        right = [reply.strip() == r["answer"] for reply, r in zip(replies, test)]
        scores[f"held-out answers right, {name}"] = round(sum(right) / len(right), 3)
    processor.tokenizer.padding_side = side
    log(
        "held-out short questions right: "
        + ", ".join(f"{k.split(', ')[1]} {v:.0%}" for k, v in scores.items())
    )
    return scores


# --- the prebuilt world ------------------------------------------------------------------------
# Models trained once (by `python -m helpers.tiny freeze` after a build) and shipped in the repository.

PREBUILT_PARTS = ("tokenizer", "tiny-base", "tiny-chat", "tiny-vlm", "tiny-teacher")


def prebuilt_dir() -> Path:
    return course_root() / "data" / "tiny-world"


def data_fingerprint(root: Path) -> str:
    """sha256 of the texts the models are trained on (pretraining documents, chat rows)."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            list(datasets.load_from_disk(str(root / "data" / "pretraining"))["train"]["text"])
        ).encode()
    )
    h.update(
        json.dumps(list(datasets.load_from_disk(str(root / "data" / "chat"))["train"]["messages"])).encode()
    )
    return h.hexdigest()


def _part_spec(part: str) -> dict:
    return {"vocab_size": VOCAB_SIZE} if part == "tokenizer" else asdict(spec_for(part))


def _read_prebuilt() -> dict:
    path = prebuilt_dir() / "world.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}


def prebuilt_problem(part: str, fingerprint: str) -> str | None:
    """Why the repository's prebuilt `part` cannot stand in for a build here, or None if it can."""
    if part not in PREBUILT_PARTS:
        return f"{part} is not shipped prebuilt"
    world = _read_prebuilt()
    record = world.get("parts", {}).get(part)
    if not record:
        return f"{prebuilt_dir()} holds no prebuilt {part}"
    if world.get("version") != WORLD_VERSION:
        return (
            f"the prebuilt world is version {world.get('version')}, this code builds version {WORLD_VERSION}"
        )
    if record["spec"] != _part_spec(part):
        return (
            f"the prebuilt {part} was trained with {record['spec']}, this build asks for {_part_spec(part)}"
        )
    if world.get("data_fingerprint") != fingerprint:
        return "the prebuilt models were trained on other data than the generators make today"
    folder = prebuilt_dir() / part
    for rel, want in record["files"].items():
        f = folder / rel
        if not f.is_file() or f.stat().st_size != want["bytes"] or _sha256(f) != want["sha256"]:
            return f"{f} is missing or differs from the hash recorded when it was trained"
    return None


def freeze(dest: Path | None = None, log: Callable[[str], None] = _log) -> Path:
    """Copy the cache's tokenizer and models into the repository as its prebuilt world."""
    dest = dest or prebuilt_dir()
    manifest = read_manifest()
    root = tiny_dir()
    bad = [p for p in PREBUILT_PARTS if p in missing_parts([p])]
    if bad:
        raise RuntimeError(f"build these first (python -m helpers.tiny build --only {' '.join(bad)}): {bad}")
    world = {"version": WORLD_VERSION, "data_fingerprint": data_fingerprint(root), "parts": {}}
    for part in PREBUILT_PARTS:
        shutil.rmtree(dest / part, ignore_errors=True)
        shutil.copytree(root / part, dest / part)
        record = manifest["parts"][part]
        world["parts"][part] = {
            "spec": _part_spec(part),
            "seconds": record.get("trained_seconds", record["seconds"]),
            "cpu_capability": record["cpu_capability"],
            "files": file_digests(dest / part),
            "report": manifest.get("report", {}).get(part),
        }
    (dest / "world.json").write_text(json.dumps(world, indent=2) + "\n")
    log(f"prebuilt world written to {dest}")
    return dest


# --- orchestration ---------------------------------------------------------------------------------
# Several processes may want the world at once (two notebooks, two ranks of a launch): one builds
# under a lock while the others wait. Each part is written into a temporary folder and moved into
# place when complete, and the manifest records every file's size and hash, so a part that a killed
# process or a full disk left behind is found and rebuilt instead of failing deep in transformers.

NEEDS = {
    "tokenizer": ("data",),
    "tiny-base": ("tokenizer", "data"),
    "tiny-chat": ("tiny-base",),
    "tiny-teacher": ("tokenizer", "data"),
    "tiny-vlm": ("tiny-base",),
}


def _manifest_path() -> Path:
    return tiny_dir() / "manifest.json"


def read_manifest() -> dict:
    path = _manifest_path()
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}  # a damaged manifest: everything is checked and rebuilt


def _write_manifest(manifest: dict) -> None:
    tmp = _manifest_path().with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, _manifest_path())  # atomic: readers see the old or the new manifest


def spec_for(part: str) -> TinySpec | VlmSpec | None:
    """The spec a model part is built from today: its size, and the training seed COURSE_SEED."""
    return replace(SPECS[part], seed=course_seed()) if part in SPECS else None


def file_digests(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file under `folder`, by relative path."""
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            out[str(f.relative_to(folder))] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def damage(part: str, manifest: dict | None = None) -> str | None:
    """Why the built `part` cannot be trusted (missing, truncated or altered file), or None."""
    manifest = read_manifest() if manifest is None else manifest
    recorded = manifest.get("parts", {}).get(part, {}).get("files")
    folder = tiny_dir() / part
    if not folder.is_dir():
        return f"{folder} is missing"
    if not recorded:
        return "the manifest records none of its files"
    for rel, want in recorded.items():
        f = folder / rel
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != want["bytes"]:
            return f"{f} has {f.stat().st_size:,} bytes, {want['bytes']:,} expected"
        if _sha256(f) != want["sha256"]:
            return f"{f} does not match the hash recorded when it was built"
    return None


def missing_parts(parts: Iterable[str] = PARTS) -> list[str]:
    """The parts (of those asked) that are absent, damaged, or built from another spec or seed."""
    manifest = read_manifest()
    if manifest.get("version") != WORLD_VERSION:
        return list(parts)
    return [
        p
        for p in parts
        if p not in manifest.get("parts", {}) or _spec_changed(p, manifest) or damage(p, manifest)
    ]


def _spec_changed(part: str, manifest: dict) -> bool:
    if part not in SPECS:
        return False
    recorded = manifest.get("report", {}).get(part, {}).get("spec", {})
    defaults = {f.name: f.default for f in fields(SPECS[part])}  # fields added since it was built
    return any(recorded.get(k, defaults[k]) != v for k, v in asdict(spec_for(part)).items())


@contextmanager
def build_lock(poll_s: float = 2.0, log: Callable[[str], None] = _log):
    """Hold the tiny world's build lock; if another process holds it, say so and wait."""
    root = tiny_dir()
    root.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with (root / ".build.lock").open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            log(f"{holder} is building the tiny world in {root}; waiting for it to finish ...")
            while True:
                time.sleep(poll_s)
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    continue
            log("the other build finished")
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _with_needs(parts: Iterable[str]) -> set[str]:
    wanted = set(parts)
    stack = list(wanted)
    while stack:
        for dep in NEEDS.get(stack.pop(), ()):
            if dep not in wanted:
                wanted.add(dep)
                stack.append(dep)
    return wanted


def _dependents(part: str) -> set[str]:
    """Parts built from `part`, directly or not: rebuilt with it so that they stay consistent."""
    out = {p for p, deps in NEEDS.items() if part in deps}
    for p in list(out):
        out |= _dependents(p)
    return out


def build(parts: Iterable[str] = DEFAULT_PARTS, force: bool = False, from_scratch: bool = False) -> dict:
    """Build the parts asked for (and what they need) that are missing, damaged or stale; models
    are copied from the prebuilt world where it fits, trained here with `from_scratch` or where not."""
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()  # no "Loading weights" bars between the build's own lines
    with build_lock():  # decided under the lock: another process may have just built them
        wanted = _with_needs(parts)
        copied = {p for p, rec in read_manifest().get("parts", {}).items() if rec.get("source") == "prebuilt"}
        # from_scratch: a part copied from the prebuilt world is not this machine's: train it here
        todo = {p for p in wanted if force or p in missing_parts([p]) or (from_scratch and p in copied)}
        present = {p for p in PARTS if p not in todo and (tiny_dir() / p).exists()}
        for p in list(todo):
            todo |= _dependents(p) & present  # built from the old part: rebuild it too
        manifest = read_manifest()
        if manifest.get("version") != WORLD_VERSION:
            manifest = {"version": WORLD_VERSION, "parts": {}, "report": {}}
        for part in [p for p in PARTS if p in todo]:
            _build_atomically(part, manifest, from_scratch)
        if not todo:
            _log("everything asked for is built already")
    return manifest


def _build_atomically(part: str, manifest: dict, from_scratch: bool = False) -> None:
    root = tiny_dir()
    reason = damage(part, manifest) if part in manifest.get("parts", {}) else None
    start = time.perf_counter()
    tmp = root / f".{part}.partial"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a build that was killed
    problem = None  # why the prebuilt copy is not used, for a part that has one
    if not from_scratch and part in PREBUILT_PARTS:
        problem = prebuilt_problem(part, data_fingerprint(root))
    damaged = f" (the cached one is damaged: {reason})" if reason else ""
    if not from_scratch and part in PREBUILT_PARTS and problem is None:
        record = _read_prebuilt()["parts"][part]
        _log(
            f"{part}: the repository's prebuilt copy{damaged} (trained from scratch in {record['seconds']:.0f} s "
            f"on {record['cpu_capability']} kernels; `python -m helpers.tiny build --from-scratch` retrains it)"
        )
        shutil.copytree(prebuilt_dir() / part, tmp)
        report, trained_seconds = record["report"], record["seconds"]
    else:
        why = f" (prebuilt not used: {problem})" if problem else ""
        _log(f"building {part} ...{damaged}{why}")
        tmp.mkdir()
        report = _build_part(part, root, tmp)
        trained_seconds = None
    seconds = round(time.perf_counter() - start, 1)
    old = root / f".{part}.old"
    shutil.rmtree(old, ignore_errors=True)
    if (root / part).exists():
        os.replace(root / part, old)
    os.replace(tmp, root / part)  # the part appears complete, or not at all
    shutil.rmtree(old, ignore_errors=True)
    manifest["parts"][part] = {
        "seconds": seconds,
        "source": "trained here" if trained_seconds is None else "prebuilt",
        "trained_seconds": seconds if trained_seconds is None else trained_seconds,
        "cpu_capability": (
            (os.environ.get("ATEN_CPU_CAPABILITY") or torch.backends.cpu.get_cpu_capability())
            if trained_seconds is None
            else _read_prebuilt()["parts"][part]["cpu_capability"]
        ),
        "files": file_digests(root / part),
    }
    if report:
        manifest["report"][part] = report
    _write_manifest(manifest)
    _log(f"{part} done in {seconds} s")


def corpus_for(spec: TinySpec, corpus: list[str]) -> list[str]:
    """The pretraining documents a model reads: the whole corpus, or the same recipe without the
    skills its spec leaves unseen."""
    if not spec.unseen_skills:
        return corpus
    return world.pretraining_text(N_PRETRAIN_DOCS, seed=0, without=spec.unseen_skills.split(","))


def _build_part(part: str, root: Path, out: Path) -> dict | None:
    """Build `part` into the folder `out`, reading the parts it needs from `root`."""
    if part == "data":
        build_data(out)
        return None
    pretraining = datasets.load_from_disk(str(root / "data" / "pretraining"))["train"]["text"]
    if part == "tokenizer":
        train_tokenizer(pretraining, vocab_size=VOCAB_SIZE).save_pretrained(out)
        return None
    if part == "tiny-vlm":
        return build_vlm(root / "tiny-base", out, spec_for(part))
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    chat = datasets.load_from_disk(str(root / "data" / "chat"))
    spec = spec_for(part)
    if part == "tiny-base":
        model = pretrain(spec, tokenizer, corpus_for(spec, pretraining))
        report = {"spec": asdict(spec), "chat_exact_match": chat_scores(model, tokenizer, chat["test"])}
    else:  # tiny-chat: SFT of tiny-base; tiny-teacher: pretrain a larger model, then SFT
        model = (
            AutoModelForCausalLM.from_pretrained(root / "tiny-base")
            if part == "tiny-chat"
            else pretrain(spec, tokenizer, corpus_for(spec, pretraining))
        )
        before = chat_scores(model, tokenizer, chat["test"])
        model = sft(
            model, tokenizer, chat["train"].remove_columns("skill"), spec, out.parent / f".{part}-run"
        )
        shutil.rmtree(out.parent / f".{part}-run", ignore_errors=True)
        after = chat_scores(model, tokenizer, chat["test"])
        _log(f"held-out exact match: before {before['all']:.1%}, after SFT {after['all']:.1%}")
        report = {"spec": asdict(spec), "exact_match_before": before, "exact_match_after": after}
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return report


def ensure_built(parts: Iterable[str] = DEFAULT_PARTS) -> None:
    """Build whatever of the tiny world (the parts asked for and those they are built from) is
    missing or damaged; cheap when it is all there."""
    if missing_parts(sorted(_with_needs(parts))):
        build(parts)
