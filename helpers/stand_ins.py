"""Stand-ins of the hub models and hub-shaped fixtures of the hub datasets, for helpers.rehearsal.

    python -m helpers.stand_ins      # build them into <course cache>/rehearsal (about a minute)

Each stand-in model has the published configuration in data/hub/models.json (architecture, widths,
heads, vocabulary, tied embeddings, rope; for SmolVLM the vision tower and the processor's tiling)
with random weights and its depth cut to two layers, saved where huggingface_hub's cache puts a
download, so that `from_pretrained("<hub id>")` finds it under HF_HUB_OFFLINE=1. Its tokenizer has
the published special tokens (at the published ids), chat template, bos/eos/pad and length limit,
over a vocabulary trained on local text. Each fixture has its hub set's columns and split names.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import datasets
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from helpers import registry
from helpers.rehearsal import data_dir, hub_cache, hub_ids, published, root
from helpers.tiny import charts, world

LAYERS = 2  # stand-in depth: every layer type present, a CPU step in seconds
VERSION = 1  # bump when what build() writes changes


# --- tokenizers and models ---------------------------------------------------------------------


def _corpus() -> list[str]:
    rows = world.instruction_rows(n_train=600, n_test=0)["train"]
    chat = [m["content"] for r in rows for m in r["messages"]]
    return chat + world.pretraining_text(300, seed=7) + [s["en"] for s in _sentences()]


def _sentences() -> list[dict]:
    from helpers.data import parallel_sentences

    return parallel_sentences()


def _template(name: str | None) -> str | None:
    """A chat template from data/hub/, or TRL's copy of a published one ("trl:<file>")."""
    if name and name.startswith("trl:"):
        from importlib import resources

        return (resources.files("trl") / "chat_templates" / name.removeprefix("trl:")).read_text()
    return name


def stand_in_tokenizer(spec: dict, texts: list[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on local text, with `spec`'s special tokens first (ids 0, 1, ...),
    as in the published tokenizer, and its chat template, bos/eos/pad and model_max_length."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=spec["special_tokens"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos_token"],
        eos_token=spec["eos_token"],
        unk_token=spec["unk_token"],
        pad_token=spec["pad_token"],
        chat_template=_template(spec["chat_template"]),
        model_max_length=spec["model_max_length"],
        additional_special_tokens=spec["special_tokens"][1:],
    )


def _cut(fields: dict, layers: int) -> dict:
    fields = {k: v for k, v in fields.items() if k not in ("architectures", "torch_dtype")}
    key = {"gpt2": "n_layer", "idefics3": None}.get(fields["model_type"], "num_hidden_layers")
    return fields | ({key: min(layers, fields[key])} if key else {})


def stand_in_model(published_config: dict, layers: int = LAYERS, **ids: int):
    """The published architecture with random weights and `layers` layers (in the text model
    and the vision tower), in its published dtype. `ids`: token ids the config must name."""
    fields = _cut(published_config, layers)
    dtype = getattr(torch, published_config.get("torch_dtype", "float32"))
    torch.manual_seed(0)
    if fields["model_type"] == "idefics3":
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration

        fields["text_config"] = _cut(fields["text_config"], layers)
        fields["vision_config"] = _cut(fields["vision_config"], layers)
        config = Idefics3Config(**{k: v for k, v in fields.items() if k != "model_type"}, **ids)
        return Idefics3ForConditionalGeneration(config).to(dtype)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def stand_in_processor(tokenizer, settings: dict):
    """SmolVLM's processor with the published tiling: longest edge, tile size, tokens per tile."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    image_processor = Idefics3ImageProcessor(
        size=settings["size"],
        max_image_size=settings["max_image_size"],
        do_image_splitting=settings["do_image_splitting"],
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=settings["image_seq_len"],
        chat_template=tokenizer.chat_template,
    )


def _commit(payload: str) -> str:
    return hashlib.sha1(payload.encode()).hexdigest()


def write_snapshot(hub_id: str, folder_writer, cache: Path) -> Path:
    """Lay out `hub_id` as huggingface_hub's cache does: refs/main names a snapshot folder, which
    `folder_writer(path)` fills. `from_pretrained(hub_id)` then finds it offline."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    commit = _commit(hub_id + str(VERSION))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    folder_writer(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def build_models(cache: Path, log=print) -> None:
    pub = published()
    texts = _corpus()
    tokenizers = {kind: stand_in_tokenizer(spec, texts) for kind, spec in pub["tokenizers"].items()}
    for hub_id in hub_ids():
        entry = pub["models"].get(hub_id)
        if entry is None:
            raise KeyError(f"{hub_id} is in helpers.registry but not in data/hub/models.json; add its config")

        def fill(folder: Path, entry=entry) -> None:
            tokenizer = tokenizers[entry["tokenizer"]]
            if entry.get("tokenizer_only"):
                tokenizer.save_pretrained(folder)
                (folder / "config.json").write_text(json.dumps(entry["config"], indent=1))
            elif "processor" in entry:
                image_id = tokenizer.convert_tokens_to_ids("<image>")
                model = stand_in_model(entry["config"], image_token_id=image_id)
                model.save_pretrained(folder)
                stand_in_processor(tokenizer, entry["processor"]).save_pretrained(folder)
            else:
                tokenizer.save_pretrained(folder)
                stand_in_model(entry["config"]).save_pretrained(folder)

        write_snapshot(hub_id, fill, cache)
        log(f"stand-in {hub_id}" + (" (tokenizer only)" if entry.get("tokenizer_only") else ""))


# --- hub-shaped data ---------------------------------------------------------------------------


def _long_text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(world.filler_sentence(rng) for _ in range(rng.randint(low, high)))


def chat_rows(n: int, seed: int) -> list[dict]:
    """smol-smoltalk's shape: `messages` (with system rows and several exchanges) and `source`.
    About one row in seventy pastes a long document: a tail of several thousand tokens. Row 0 has
    a system prompt and two exchanges, the case a label-mask check most often gets wrong."""
    rng = random.Random(seed)
    rows = []
    tasks = world.instruction_rows(n_train=2 * n, n_test=0, seed=seed)["train"]
    for i, task_row in enumerate(tasks[:n]):
        messages = [dict(m) for m in task_row["messages"]]
        if i == 0 or rng.random() < 0.4:  # several exchanges, most often after a system prompt
            if messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": rng.choice(world.SYSTEM_PROMPTS)})
            messages += [dict(m) for m in tasks[n + i]["messages"] if m["role"] != "system"]
        user = next(m for m in messages if m["role"] == "user")
        if rng.random() < 0.015:  # a pasted document: the tail of several thousand tokens
            user["content"] = _long_text(rng, 150, 400) + "\n" + user["content"]
        elif rng.random() < 0.15:  # a paragraph of context
            user["content"] = _long_text(rng, 5, 40) + "\n" + user["content"]
        if rng.random() < 0.2:  # a longer answer
            messages[-1]["content"] += " " + _long_text(rng, 2, 20)
        rows.append({"messages": messages, "source": rng.choice(["smol-magpie-ultra", "smol-rewrite"])})
    return rows


def preference_rows(n: int, seed: int) -> list[dict]:
    """trl-lib/ultrafeedback_binarized's shape: the prompt only inside `chosen` and `rejected`."""
    rng = random.Random(seed)
    rows = []
    for row in world.preference_rows(n_train=n, n_test=0, seed=seed)["train"]:
        prompt = row["prompt"]
        if rng.random() < 0.1:
            prompt = [{"role": "user", "content": _long_text(rng, 40, 300) + "\n" + prompt[0]["content"]}]
        rows.append(
            {
                "chosen": prompt + row["chosen"],
                "rejected": prompt + row["rejected"],
                "score_chosen": float(rng.randint(6, 10)),
                "score_rejected": float(rng.randint(1, 5)),
            }
        )
    return rows


CHART_SIZES = [(800, 557), (310, 400), (850, 600), (1200, 800)]  # ChartQA's, as width x height


def chart_rows(n: int, seed: int) -> list[dict]:
    """ChartQA's columns and image sizes (not 128-pixel squares): the processor's tiling shows."""
    rng = random.Random(seed)
    rows = charts.chart_rows(n, seed, size=256)
    for row in rows:
        row["image"] = row["image"].resize(rng.choice(CHART_SIZES))
    return rows


def cosmopedia_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    texts = world.pretraining_text(n, seed=seed)
    return [
        {
            "prompt": "Write a textbook section.",
            "text": t,
            "token_length": len(t.split()),
            "audience": rng.choice(["general", "college_students"]),
            "format": "textbook",
            "seed_data": "stanford",
        }
        for t in texts
    ]


def build_data(out: Path, log=print) -> None:
    """Each dataset role with the hub set's split names, in registry.HUB_DATASETS's columns."""
    news_features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=[world.NEWS_TOPICS[i][0] for i in range(4)]),
        }
    )
    chart_features = datasets.Features(
        {
            "image": datasets.Image(),
            "query": datasets.Value("string"),
            "label": datasets.List(datasets.Value("string")),
            "human_or_machine": datasets.ClassLabel(names=["human", "machine"]),
        }
    )
    news = world.news_rows(n_train=200, n_test=50)
    sets = {
        "chat": {"train": chat_rows(400, 11), "test": chat_rows(60, 12)},
        "preference": {"train": preference_rows(200, 13), "test": preference_rows(40, 14)},
        # 07 times a DataLoader over 4 batches of 32 charts (2 of them warm-up)
        "charts": {"train": chart_rows(128, 15), "val": chart_rows(16, 16), "test": chart_rows(16, 17)},
        "news": news,
        "pretraining": {"train": cosmopedia_rows(64, 18)},
    }
    features = {"charts": chart_features, "news": news_features}
    for role, splits in sets.items():
        source = registry.HUB_DATASETS[role]
        assert {source.train_split, source.test_split} <= set(splits), (role, list(splits))
        dsd = datasets.DatasetDict(
            {s: datasets.Dataset.from_list(rows, features=features.get(role)) for s, rows in splits.items()}
        )
        dsd.save_to_disk(str(out / role))
        log(f"fixture {source.hub_id}: " + ", ".join(f"{s} {len(d)}" for s, d in dsd.items()))


def _stamp() -> str:
    source = (registry.course_root() / "data" / "hub" / "models.json").read_bytes()
    return hashlib.sha256(source + Path(__file__).read_bytes()).hexdigest()


def build(force: bool = False, log=print) -> Path:
    """Build the stand-ins and fixtures once (about a minute); rebuilt when this module or the
    published configs change. Returns the hub cache to point $HF_HUB_CACHE at."""
    stamp = root() / "built.txt"
    if not force and stamp.exists() and stamp.read_text() == _stamp():
        return hub_cache()
    shutil.rmtree(root(), ignore_errors=True)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    build_models(hub_cache(), log)
    build_data(data_dir(), log)
    stamp.write_text(_stamp())
    return hub_cache()


if __name__ == "__main__":
    print(f"stand-ins and fixtures in {build(force=True).parent}")
