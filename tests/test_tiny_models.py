"""The built tiny models: safetensors on disk, load like hub models, and SFT made a real gain."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from helpers.registry import models_for, tiny_dir
from helpers.tiny.build import DEFAULT_PARTS, chat_scores, ensure_built


@pytest.fixture(scope="module")
def paths():
    ensure_built(DEFAULT_PARTS)
    return models_for("tiny")


@pytest.mark.parametrize("role", ["base", "chat", "vlm"])
def test_weights_are_safetensors_only(paths, role):
    files = {p.name for p in (tiny_dir() / paths[role].split("/")[-1]).iterdir()}
    assert "model.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)


def test_sft_raises_held_out_exact_match(paths):
    """Measured here, not read from the build report: tiny-chat beats tiny-base on unseen items."""
    import datasets

    rows = datasets.load_from_disk(str(tiny_dir() / "data" / "chat"))["test"].select(range(80))
    tok = AutoTokenizer.from_pretrained(paths["chat"])
    before = chat_scores(AutoModelForCausalLM.from_pretrained(paths["base"]), tok, rows)["all"]
    after = chat_scores(AutoModelForCausalLM.from_pretrained(paths["chat"]), tok, rows)["all"]
    assert after >= before + 0.25, (before, after)


def test_base_model_answers_in_its_own_format_what_the_chat_format_hides(paths):
    """complete_lines asks as the pretraining text does: one line back per prompt, cut at a newline
    or a special token, and on the skills the base model learnt it beats the chat format."""
    import datasets

    from helpers.generation import complete_lines
    from helpers.metrics import exact_match

    rows = datasets.load_from_disk(str(tiny_dir() / "data" / "chat"))["test"].select(range(80))
    tok = AutoTokenizer.from_pretrained(paths["chat"])
    base = AutoModelForCausalLM.from_pretrained(paths["base"])
    prompts = [r["messages"][-2]["content"] + "\n" for r in rows]
    lines = complete_lines(base, tok, prompts)
    assert len(lines) == len(prompts) and lines == complete_lines(base, tok, prompts)  # greedy
    assert not any("\n" in line or any(t in line for t in tok.all_special_tokens) for line in lines)
    own = exact_match(lines, [r["messages"][-1]["content"] for r in rows])
    in_chat = chat_scores(base, tok, rows)["all"]
    assert own >= in_chat + 0.25, (own, in_chat)


def test_the_skills_tiny_base_never_read_stay_unknown_and_the_teacher_knows_them():
    """The tiny world's one designed gap, the same on every machine: tiny-chat cannot do the skills
    its base never read in pretraining (SFT teaches the format, not them); the teacher read them."""
    import datasets

    from helpers.tiny.build import BASE

    ensure_built(["tiny-chat", "tiny-teacher"])
    unseen = BASE.unseen_skills.split(",")
    rows = datasets.load_from_disk(str(tiny_dir() / "data" / "chat"))["test"]
    rows = rows.filter(lambda r: r["skill"] in unseen)
    tok = AutoTokenizer.from_pretrained(tiny_dir() / "tiny-chat")
    chat = chat_scores(AutoModelForCausalLM.from_pretrained(tiny_dir() / "tiny-chat"), tok, rows)
    teacher = chat_scores(AutoModelForCausalLM.from_pretrained(tiny_dir() / "tiny-teacher"), tok, rows)
    assert chat["all"] <= 0.1 and teacher["all"] >= chat["all"] + 0.3, (chat, teacher)


def test_tiny_vlm_answers_a_chart_question_through_its_processor(paths):
    import datasets

    row = datasets.load_from_disk(str(tiny_dir() / "data" / "charts"))["test"][0]
    processor = AutoProcessor.from_pretrained(paths["vlm"])
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(paths["vlm"]).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["query"]}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(text=text, images=[[row["image"]]], return_tensors="pt")
    assert (batch["input_ids"] == model.config.image_token_id).sum() == 16  # 64 patches, pixel-shuffled
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]


def test_tiny_vlm_reads_charts_it_never_saw_and_not_blank_images(paths):
    """Its build aligned it (captions and short questions of charts): measured here on new charts,
    the same questions with each chart replaced by a blank image score far lower."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from helpers.tiny import charts

    processor = AutoProcessor.from_pretrained(paths["vlm"])
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(paths["vlm"]).eval()
    rows = charts.alignment_rows(60, seed=12345, shares=(0.0, 0.6))  # questions, none in its build

    def right(images):
        messages = [
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["ask"]}]}]
            for r in rows
        ]
        batch = processor.apply_chat_template(
            messages, images=[[i] for i in images], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", padding=True,
        )  # fmt: skip
        end = processor.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=6, do_sample=False, eos_token_id=end)
        replies = processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return sum(a.strip() == r["answer"] for a, r in zip(replies, rows)) / len(rows)

    with_charts = right([r["image"] for r in rows])
    blank = right([Image.new("RGB", rows[0]["image"].size, "white")] * len(rows))
    assert with_charts >= blank + 0.3, (with_charts, blank)


def test_every_tiny_model_role_is_a_part_the_builder_makes():
    from helpers.registry import TINY_MODELS
    from helpers.tiny.build import PARTS

    assert set(TINY_MODELS.values()) <= set(PARTS)
