"""The rehearsal of the GPU profiles: the profile switch, the stand-ins, the hub-shaped fixtures."""

import json

import datasets
import pytest
from PIL import Image
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from helpers import registry, rehearsal, stand_ins
from helpers.checks import expect
from helpers.data import HELD_OUT_MAX, load_split, skill_conversations, task_set
from helpers.runtime import Hardware, choose_profile

CPU = Hardware(cpu_cores=2, ram_gb=24.0)


@pytest.fixture
def rehearsing(monkeypatch, tmp_path):
    monkeypatch.setenv(rehearsal.ENV, "1")
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.delenv("COURSE_REHEARSAL_DTYPE", raising=False)
    monkeypatch.delenv("COURSE_MARGINS", raising=False)


def test_a_gpu_profile_on_a_cpu_needs_the_rehearsal_switch(monkeypatch):
    monkeypatch.delenv(rehearsal.ENV, raising=False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        choose_profile(CPU, "colab")


@pytest.mark.parametrize("name", ["colab", "full"])
def test_rehearsal_keeps_the_profiles_shapes_and_shrinks_the_amounts(rehearsing, name):
    p = choose_profile(CPU, name)
    gpu = registry.SIZES[name]
    assert p.rehearsal and p.name == name and p.device == "cpu"
    assert (p.sizes.batch_size, p.sizes.max_length) == (gpu.batch_size, gpu.max_length)
    assert p.sizes.n_train <= rehearsal.N_TRAIN and p.sizes.max_steps == rehearsal.MAX_STEPS
    assert p.models == registry.HUB_MODELS[name]  # hub ids: from_pretrained resolves the stand-ins
    charts = p.datasets["charts"]
    assert (charts.hub_id, charts.test_split) == ("HuggingFaceM4/ChartQA", "val")
    assert charts.local_path and "rehearsal" in charts.local_path
    assert p.dtype == "float32" and "on its GPU" in p.summary()


def test_rehearsal_can_keep_the_gpus_dtype(rehearsing, monkeypatch):
    monkeypatch.setenv("COURSE_REHEARSAL_DTYPE", "gpu")
    assert choose_profile(CPU, "colab").fp16 and choose_profile(CPU, "full").bf16


def test_expect_skips_effects_in_rehearsal_and_asserts_them_otherwise(rehearsing, monkeypatch, capsys):
    assert not expect("02 gain", 0.0, above=0.2).ok
    assert "skipped in rehearsal" in capsys.readouterr().out
    monkeypatch.delenv(rehearsal.ENV)
    with pytest.raises(AssertionError):
        expect("02 gain", 0.0, above=0.2)


def test_every_hub_model_the_course_loads_has_a_published_config():
    pub = rehearsal.published()["models"]
    assert set(rehearsal.hub_ids()) <= set(pub)
    # The memory planner's reference shapes and the stand-ins' agree where both have a model.
    planner = json.loads((registry.course_root() / "data" / "model_configs.json").read_text())
    for hub_id, entry in pub.items():
        short = hub_id.split("/")[-1]
        for key, value in planner.get(short, {}).items():
            assert entry["config"][key] == value, (hub_id, key)


def test_a_stand_in_loads_by_its_hub_id_with_the_published_shape(tmp_path):
    entry = rehearsal.published()["models"]["HuggingFaceTB/SmolLM2-360M-Instruct"]
    spec = rehearsal.published()["tokenizers"][entry["tokenizer"]]
    tokenizer = stand_ins.stand_in_tokenizer(spec, ["some local text to train on"] * 50, vocab_size=400)

    def fill(folder):
        tokenizer.save_pretrained(folder)
        stand_ins.stand_in_model(entry["config"]).save_pretrained(folder)

    stand_ins.write_snapshot("HuggingFaceTB/SmolLM2-360M-Instruct", fill, tmp_path)
    kwargs = {"cache_dir": tmp_path, "local_files_only": True}
    model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-360M-Instruct", **kwargs)
    c = model.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (960, 15, 5, 49152)
    assert c.num_hidden_layers == stand_ins.LAYERS and c.tie_word_embeddings
    assert str(model.dtype) == "torch.bfloat16"  # as published
    tok = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-360M-Instruct", **kwargs)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert (tok.eos_token, tok.pad_token, tok.model_max_length) == ("<|im_end|>", "<|im_end|>", 8192)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    config = AutoConfig.from_pretrained("HuggingFaceTB/SmolLM2-360M-Instruct", **kwargs)
    assert config.rope_parameters["rope_theta"] == 100000


def test_the_smolvlm_stand_in_tiles_chartqa_sized_images_as_published():
    entry = rehearsal.published()["models"]["HuggingFaceTB/SmolVLM-256M-Instruct"]
    spec = rehearsal.published()["tokenizers"][entry["tokenizer"]]
    tokenizer = stand_ins.stand_in_tokenizer(spec, ["chart text"] * 50, vocab_size=400)
    processor = stand_ins.stand_in_processor(tokenizer, entry["processor"])
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Value?"}]}]
    prompt = processor.apply_chat_template(message, add_generation_prompt=True)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    for size, tiles in [((800, 557), 13), ((310, 400), 17)]:
        batch = processor(text=prompt, images=[Image.new("RGB", size, "white")], return_tensors="pt")
        assert batch["pixel_values"].shape[1] == tiles
        assert (batch["input_ids"] == image_id).sum() == tiles * 64


@pytest.mark.parametrize("name, tiles", [("colab", 1), ("full", 5)])
def test_gpu_profiles_cap_a_charts_tiles(rehearsing, tmp_path, name, tiles):
    """Uncapped, a ChartQA chart costs 13-17 tiles (above); the lessons load the processor capped."""
    from helpers.vlm import image_tiles, load_processor

    entry = rehearsal.published()["models"]["HuggingFaceTB/SmolVLM-256M-Instruct"]
    spec = rehearsal.published()["tokenizers"][entry["tokenizer"]]
    tokenizer = stand_ins.stand_in_tokenizer(spec, ["chart text"] * 50, vocab_size=400)
    stand_ins.stand_in_processor(tokenizer, entry["processor"]).save_pretrained(tmp_path / "vlm")
    processor = load_processor(choose_profile(CPU, name), model_id=str(tmp_path / "vlm"))
    for size in [(800, 557), (310, 400)]:
        assert image_tiles(processor, Image.new("RGB", size, "white")) == tiles  # a 2x2 grid + global view


def test_fixtures_have_the_hub_sets_shape(tmp_path):
    stand_ins.build_data(tmp_path, log=lambda _: None)
    chat = datasets.load_from_disk(str(tmp_path / "chat"))["train"]
    roles = [[m["role"] for m in r["messages"]] for r in chat]
    assert any(r[0] == "system" for r in roles) and any(r.count("user") >= 2 for r in roles)
    longest = max(sum(len(m["content"].split()) for m in r["messages"]) for r in chat)
    assert longest > 2000  # the long tail: several thousand tokens
    prefs = datasets.load_from_disk(str(tmp_path / "preference"))["train"]
    assert prefs[0]["chosen"][0]["role"] == "user" and "prompt" not in prefs.column_names
    charts = datasets.load_from_disk(str(tmp_path / "charts"))
    assert set(charts) == {"train", "val", "test"}
    assert {(800, 557), (310, 400)} <= {r["image"].size for r in charts["train"]}


def test_hub_rows_are_streamed_not_downloaded_whole(monkeypatch):
    calls = []
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(50)]

    def fake_load_dataset(*args, **kwargs):
        calls.append(kwargs)
        full = datasets.Dataset.from_list(rows)
        return full.to_iterable_dataset() if kwargs.get("streaming") else full

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    profile = choose_profile(
        Hardware(cuda=True, gpu_name="Tesla T4", vram_gb=15.0, compute_capability=(7, 5))
    )
    got = load_split(profile, "chat", "test", n=7)
    assert len(got) == 7 and got[6]["messages"][0]["content"] == "q6"
    assert calls == [{"split": "test", "streaming": True}]


def test_a_hub_profile_trains_on_the_hub_chat_rows_and_the_course_skills(monkeypatch):
    # Every 4th chat training row is a skill conversation; none asks a held-out question; the
    # first n rows still come from streaming n - n // 4 hub rows.
    calls = []
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(90)
    ]

    def fake_load_dataset(*args, **kwargs):
        calls.append(kwargs)
        return datasets.Dataset.from_list(rows).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    t4 = choose_profile(Hardware(cuda=True, gpu_name="Tesla T4", vram_gb=15.0, compute_capability=(7, 5)))
    got = load_split(t4, "chat", "train", n=40)
    users = [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in got]
    assert len(got) == 40 and got.column_names == ["messages"]
    assert users[:3] == ["q0", "q1", "q2"] and users[4:7] == ["q3", "q4", "q5"]
    skills = users[3::4]
    assert len(skills) == 10 and not any(u.startswith("q") and u[1:].isdigit() for u in skills)
    held_out = {r["messages"][-2]["content"] for r in task_set(HELD_OUT_MAX)}
    many = {m["content"] for r in skill_conversations(3000) for m in r["messages"] if m["role"] == "user"}
    assert not held_out & many
    assert (
        load_split(t4, "chat", "test", n=5)["messages"][0][0]["content"] == "q0"
    )  # held out: the hub's only
    with pytest.raises(ValueError, match="kept out of every training set"):
        task_set(HELD_OUT_MAX + 1)


def test_every_rehearsed_notebook_exists_and_01_runs_before_02():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "rehearse", registry.course_root() / "scripts" / "rehearse.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    names = list(script.REHEARSED)
    assert all((registry.course_root() / nb).exists() for nb in names)
    assert names.index("notebooks/01_token_lengths.ipynb") < names.index("notebooks/02_lora_sft.ipynb")
    # What CI leaves out is rehearsed elsewhere: each entry names a notebook on a profile it runs on.
    assert all(profile in script.REHEARSED[nb] for nb, profile in script.NOT_IN_CI)
