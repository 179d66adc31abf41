"""Build the tiny world: its data, tokenizer, and the models the `tiny` profile loads.

    python -m helpers.tiny build            # all but the teacher, ~2 minutes on 2 CPU cores
    python -m helpers.tiny build --only tiny-teacher    # notebook 05's teacher, ~5.5 minutes
    python -m helpers.tiny build --force    # rebuild even if the cache is current

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

import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from helpers.registry import tiny_dir
from helpers.tiny import charts, world
from helpers.tiny.tokenizer import train_tokenizer

# Bump when a generator or a spec changes, so stale caches rebuild themselves.
WORLD_VERSION = 5
PARTS = ("data", "tokenizer", "tiny-base", "tiny-chat", "tiny-teacher", "tiny-vlm")
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
    seed: int = 0


BASE = TinySpec(128, 2, 4, 384, pretrain_steps=2000, batch_size=32, block_size=64, lr=3e-3, sft_steps=500)
# Notebook 05's teacher: ~2.5x the compute of tiny-base per step. SFT at 1e-3 for 500 steps left it
# below tiny-chat (67% vs 74% exact match); 5e-4 for 1,000 steps gives 75.5%.
TEACHER = TinySpec(
    192, 3, 6, 512, pretrain_steps=2000, batch_size=32, block_size=64, lr=2e-3, sft_steps=1000, sft_lr=5e-4
)
SPECS = {"tiny-base": BASE, "tiny-chat": BASE, "tiny-teacher": TEACHER}
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
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, spec.lr, total_steps=spec.pretrain_steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(spec.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"pretraining {n_params / 1e6:.2f} M parameters on {blocks.numel() / 1e6:.2f} M tokens")
    model.train()
    for step in range(spec.pretrain_steps):
        batch = blocks[torch.randint(0, len(blocks), (spec.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 250 == 0 or step == spec.pretrain_steps - 1:
            log(f"  step {step:>5}  loss {loss.item():.3f}")
    return model.eval()


def chat_scores(model, tokenizer, rows) -> dict[str, float]:
    """Exact match of greedy replies on held-out chat rows, per skill and overall."""
    from helpers.generation import generate_replies
    from helpers.metrics import exact_match_by_group

    prompts = [r["messages"][:-1] for r in rows]
    targets = [r["messages"][-1]["content"] for r in rows]
    replies = generate_replies(model, tokenizer, prompts, max_new_tokens=64)
    return exact_match_by_group(replies, targets, [r["skill"] for r in rows])


def sft(model, tokenizer, train_rows, spec: TinySpec, workdir: Path):
    """Full fine-tuning on chat rows with TRL, loss on assistant tokens only."""
    from trl import SFTConfig, SFTTrainer

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
    trainer.train()
    return trainer.model.eval()


# --- vision-language model -------------------------------------------------------------------------


def build_vlm(base_dir: Path, out: Path) -> None:
    """An Idefics3 (SmolVLM) model: a small vision tower, the text model copied from tiny-base."""
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
    torch.manual_seed(0)
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
        image_seq_len=16,
        chat_template=template,
    )
    vlm.save_pretrained(out)
    processor.save_pretrained(out)


# --- orchestration ---------------------------------------------------------------------------------


def _manifest_path() -> Path:
    return tiny_dir() / "manifest.json"


def read_manifest() -> dict:
    path = _manifest_path()
    return json.loads(path.read_text()) if path.exists() else {}


def missing_parts(parts: Iterable[str] = PARTS) -> list[str]:
    manifest = read_manifest()
    if manifest.get("version") != WORLD_VERSION:
        return list(parts)
    # Each part lives in a folder of its own name: data/, tokenizer/, tiny-base/, ...; a model
    # built from another spec than today's is stale.
    return [
        p
        for p in parts
        if p not in manifest.get("parts", {}) or not (tiny_dir() / p).exists() or _spec_changed(p, manifest)
    ]


def _spec_changed(part: str, manifest: dict) -> bool:
    if part not in SPECS:
        return False
    recorded = manifest.get("report", {}).get(part, {}).get("spec", {})
    defaults = {f.name: f.default for f in fields(TinySpec)}  # fields added since it was built
    return any(recorded.get(k, defaults[k]) != v for k, v in asdict(SPECS[part]).items())


def build(parts: Iterable[str] = DEFAULT_PARTS, force: bool = False) -> dict:
    """Build the parts asked for (and what they need) that are missing or stale."""
    datasets.disable_progress_bars()
    root = tiny_dir()
    root.mkdir(parents=True, exist_ok=True)
    wanted = set(parts)
    needs = {
        "tiny-base": {"tokenizer", "data"},
        "tiny-chat": {"tiny-base"},
        "tiny-teacher": {"tokenizer", "data"},
        "tiny-vlm": {"tiny-base"},
        "tokenizer": {"data"},
    }
    for p in list(wanted):
        stack = [p]
        while stack:
            for dep in needs.get(stack.pop(), ()):
                if dep not in wanted:
                    wanted.add(dep)
                    stack.append(dep)
    todo = [p for p in PARTS if p in wanted and (force or p in missing_parts([p]))]
    manifest = read_manifest()
    if manifest.get("version") != WORLD_VERSION:
        manifest = {"version": WORLD_VERSION, "parts": {}, "report": {}}
    for part in todo:
        start = time.perf_counter()
        _log(f"building {part} ...")
        target = root / part
        if target.exists():
            shutil.rmtree(target)
        report = _build_part(part, root)
        seconds = round(time.perf_counter() - start, 1)
        manifest["parts"][part] = {"seconds": seconds}
        if report:
            manifest["report"][part] = report
        _manifest_path().write_text(json.dumps(manifest, indent=2))
        _log(f"{part} done in {seconds} s")
    if not todo:
        _log("everything asked for is built already")
    return manifest


def _build_part(part: str, root: Path) -> dict | None:
    if part == "data":
        build_data(root / "data")
        return None
    pretraining = datasets.load_from_disk(str(root / "data" / "pretraining"))["train"]["text"]
    if part == "tokenizer":
        train_tokenizer(pretraining, vocab_size=VOCAB_SIZE).save_pretrained(root / "tokenizer")
        return None
    if part == "tiny-vlm":
        build_vlm(root / "tiny-base", root / "tiny-vlm")
        return None
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    chat = datasets.load_from_disk(str(root / "data" / "chat"))
    if part == "tiny-base":
        model = pretrain(BASE, tokenizer, pretraining)
        report = {"spec": asdict(BASE), "chat_exact_match": chat_scores(model, tokenizer, chat["test"])}
    else:  # tiny-chat: SFT of tiny-base; tiny-teacher: pretrain a larger model, then SFT
        spec = BASE if part == "tiny-chat" else TEACHER
        model = (
            AutoModelForCausalLM.from_pretrained(root / "tiny-base")
            if part == "tiny-chat"
            else pretrain(TEACHER, tokenizer, pretraining)
        )
        before = chat_scores(model, tokenizer, chat["test"])
        model = sft(model, tokenizer, chat["train"].remove_columns("skill"), spec, root / f"{part}-run")
        shutil.rmtree(root / f"{part}-run", ignore_errors=True)
        after = chat_scores(model, tokenizer, chat["test"])
        _log(f"held-out exact match: before {before['all']:.1%}, after SFT {after['all']:.1%}")
        report = {"spec": asdict(spec), "exact_match_before": before, "exact_match_after": after}
    model.save_pretrained(root / part)
    tokenizer.save_pretrained(root / part)
    return report


def ensure_built(parts: Iterable[str] = DEFAULT_PARTS) -> None:
    """Build whatever of the tiny world is missing; cheap when it is all there."""
    if missing_parts(parts):
        build(parts)
