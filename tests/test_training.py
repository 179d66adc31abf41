"""helpers.training: the CPU 4-bit guard, the training template, and TRL's label mask."""

import gc
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.registry import models_for
from helpers.runtime import Hardware, choose_profile
from helpers.tiny.build import ensure_built
from helpers.training import (
    ensure_training_template,
    load_for_training,
    quantization_config,
    release,
    token_batches,
    trainable_in_float32,
    trained_model,
)


@pytest.fixture(scope="module")
def tiny():
    ensure_built(["tiny-base"])
    return choose_profile(Hardware(cpu_cores=2, ram_gb=8), "tiny")


def lora_grads(model, batch):
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {
        n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters() if p.requires_grad
    }


def test_4bit_lora_gradients_survive_an_eval_pass(tiny):
    """CPU-NOTES: on AVX512-BF16 CPUs an eval forward silently breaks 4-bit LoRA gradients."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        load_for_training(models_for("tiny")["base"], tiny, bits=4),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0),
    )
    torch.manual_seed(0)
    for p in model.parameters():  # LoRA B starts at zero: give it values so A's gradient is not zero too
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    ids = torch.randint(4, 1000, (2, 16))
    batch = {"input_ids": ids, "labels": ids}
    before = lora_grads(model, batch)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = lora_grads(model, batch)
    assert before.keys() == after.keys() and before
    for name in before:  # unguarded on this CPU, some come back None after the eval pass
        assert after[name] is not None, f"{name}: no gradient after an eval pass"
        assert torch.allclose(before[name], after[name], atol=1e-6), name


def test_quantisation_config_follows_the_profile(tiny):
    q = quantization_config(tiny, 4)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float32
    assert quantization_config(tiny, 8).load_in_8bit
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        quantization_config(tiny, 3)


def test_a_4bit_vlm_trains_its_connector_whole_only_when_skipped(tiny):
    """03 on a GPU profile: LoRA on the 4-bit language model, the connector trained whole."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    ensure_built(["tiny-vlm"])
    lora = LoraConfig(r=4, target_modules=r".*text_model.*\.q_proj", modules_to_save=["connector"])

    def load(skip_modules):
        quant = quantization_config(tiny, 4, skip_modules=skip_modules)
        return AutoModelForImageTextToText.from_pretrained(
            models_for("tiny")["vlm"], quantization_config=quant, device_map="cpu"
        )

    # transformers quantises the connector's Linear by default; PEFT cannot train a copy of it
    with pytest.raises(RuntimeError, match="floating point"):
        get_peft_model(load(None), lora)
    model = get_peft_model(load(["model.connector", "lm_head"]), lora)  # full names, or their ends
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("connector.modules_to_save" in n for n in trained) and any("lora_A" in n for n in trained)
    assert all(p.is_floating_point() for n, p in model.named_parameters() if "connector" in n)


def test_fp16_training_needs_what_trains_in_float32():
    """PEFT keeps a modules_to_save copy in its loaded dtype; fp16 mixed precision then fails."""
    from peft import LoraConfig, get_peft_model

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.connector = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.connector(self.q_proj(x))

    def scaled_step(model):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(torch.randn(2, 8)).float().sum()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)

    def peft_model():
        config = LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["connector"])
        return get_peft_model(Model().half(), config)

    with pytest.raises(ValueError, match="unscale FP16 gradients"):
        scaled_step(peft_model())
    model = trainable_in_float32(peft_model())
    scaled_step(model)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.float16}


def test_training_template_is_added_to_chatml_only():
    ensure_built(["tokenizer"])
    tok = AutoTokenizer.from_pretrained(models_for("tiny")["base"])
    marked = tok.chat_template
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    assert "generation" in ensure_training_template(tok).chat_template
    tok.chat_template = marked
    assert ensure_training_template(tok).chat_template == marked
    tok.chat_template = None  # a base model without a template, but with ChatML tokens
    assert "generation" in ensure_training_template(tok).chat_template and tok.eos_token == "<|im_end|>"
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="generation"):
        ensure_training_template(tok)


def test_trl_masks_everything_but_the_answer_and_its_end_token(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    ensure_built(["tiny-base"])
    path = models_for("tiny")["base"]
    tok = AutoTokenizer.from_pretrained(path)
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What comes after 4?"},
            {"role": "assistant", "content": "5"},
        ]
    }
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        assistant_only_loss=True,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=args,
        train_dataset=Dataset.from_list([row]),
        processing_class=tok,
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert trained == "5" + tok.eos_token


def test_token_batches_fit_the_budget_once_padded():
    lengths = [10, 30, 5, 5, 5, 40, 2]
    batches = token_batches(list(range(len(lengths))), lengths, max_tokens=60)
    # 10,30 pad to 2x30; a third row would make 3x30; 5,5,5 then 40 would pad to 4x40; 40,2 to 2x40
    assert batches == [[0, 1], [2, 3, 4], [5], [6]]
    assert token_batches(["long"], [500], max_tokens=60) == [["long"]]  # one row past the budget still goes
    with pytest.raises(ValueError):
        token_batches([1, 2], [3], max_tokens=60)


def test_the_trained_model_computes_like_its_reloaded_copy(tiny, tmp_path):
    """After a bf16 Trainer run, accelerate leaves autocast on the model's forward; a saved and
    reloaded copy computes in float32, so the two disagree unless the wrapper is removed."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    path = models_for("tiny")["base"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = torch.randint(4, 1000, (4, 12))
    rows = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        use_cpu=True,
        bf16=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    trainer.model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reloaded(input_ids=ids).logits
        wrapped = trainer.model.eval()(input_ids=ids).logits
        unwrapped = trained_model(trainer)(input_ids=ids).logits
    assert (wrapped - expected).abs().max() > 1e-4  # the trap this guards against is still there
    assert torch.allclose(unwrapped, expected, atol=1e-5)


def test_a_released_trainer_frees_its_model_and_optimizer_and_keeps_its_log(tiny, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(models_for("tiny")["base"], dtype=torch.float32)
    ids = torch.randint(4, 1000, (4, 12))
    rows = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        use_cpu=True,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    model_ref, optimizer_ref = weakref.ref(model), weakref.ref(trainer.optimizer)
    del model
    gc.collect()
    assert model_ref() is not None and optimizer_ref() is not None  # a trainer alone keeps both
    release(trainer)
    assert model_ref() is None and optimizer_ref() is None
    assert trainer.args.max_steps == 2 and any("loss" in h for h in trainer.state.log_history)


def test_a_merge_is_checked_in_float32_because_half_precision_rounding_hides_it(tiny):
    """Notebook 02 compares merged and adapter logits in float32: in bf16, rounding the merged
    weights alone moves the logits by more than a tolerance that would still catch a bad merge."""
    from peft import LoraConfig, get_peft_model

    ids = torch.randint(4, 500, (4, 40), generator=torch.Generator().manual_seed(0))
    gaps = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny.models["base"], dtype=dtype)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        for name, weight in model.named_parameters():
            if "lora_B" in name:  # a trained adapter's update, not PEFT's zero start
                torch.nn.init.normal_(weight, std=0.02)
        with torch.no_grad():
            adapter = model(input_ids=ids).logits.float()
            merged = model.merge_and_unload()(input_ids=ids).logits.float()
        gaps[dtype] = (adapter - merged).abs().max().item()
    assert gaps[torch.float32] < 1e-3 < gaps[torch.bfloat16], gaps
