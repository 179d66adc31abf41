"""The course's chain of models, base -> SFT -> DPO -> GRPO, for notebook 10 to evaluate and ship.

Notebook 09 trains and saves the whole chain (its SFT, DPO and GRPO stages). Where it has not run,
`course_chain` trains the SFT and DPO stages briefly here with 09's recipes and 09's declared runs
(helpers.budget.lesson_plan: full fine-tuning of 09's base model on the chat rows; a LoRA DPO run
on the preference pairs, kept as an adapter and merged) and leaves GRPO out: a GRPO run is
notebook 09's subject and takes minutes.

`lora_sft` teaches a model the chat rows in a declared run's shapes: notebook 05's teacher, where
it does not yet answer the held-out questions.
"""

from __future__ import annotations

from pathlib import Path

from helpers.budget import Plan, Run, lesson_plan
from helpers.registry import runs_dir
from helpers.runtime import Profile

SAVED = "model.safetensors"


def chain_from_09(profile: Profile) -> dict[str, Path] | None:
    """09's saved stages, or None when any is missing or they are not one run's: 09 saves them in
    chain order (SFT, DPO adapter, DPO, GRPO), so a GRPO older than the SFT is a rerun cut short."""
    runs = runs_dir(profile.name, "09_rl_grpo")
    stages = {
        "SFT": runs / "sft",
        "DPO": runs / "dpo",
        "GRPO": runs / "grpo",
        "DPO adapter": runs / "dpo-adapter",
    }
    files = [runs / "sft" / SAVED, runs / "dpo-adapter" / "adapter_model.safetensors"]
    files += [runs / "dpo" / SAVED, runs / "grpo" / SAVED]
    if not all(f.exists() for f in files):
        return None
    times = [f.stat().st_mtime_ns for f in files]
    return stages if times == sorted(times) else None


def base_model(profile: Profile) -> str:
    """The chain's pretrained model: the one notebook 09 starts from (its plan's model role)."""
    return profile.models[_plan(profile)["sft"].role]


def _plan(profile: Profile) -> Plan:
    return lesson_plan("09", profile)


def _common(profile: Profile, output_dir: Path, key: str) -> dict:
    return _shapes(profile, _plan(profile)[key]) | {"output_dir": str(output_dir), "seed": profile.seed}


def _shapes(profile: Profile, run: Run) -> dict:
    """SFTConfig / DPOConfig arguments for a declared run's shapes, quiet, saving nothing."""
    return {
        "max_steps": run.steps,
        "per_device_train_batch_size": run.setup.batch_size,
        "gradient_accumulation_steps": run.accum,
        "max_length": run.setup.seq_len,
        "gradient_checkpointing": run.setup.gradient_checkpointing,
        "bf16": profile.bf16,
        "fp16": profile.fp16,
        "use_cpu": profile.device == "cpu",
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
    }


def short_sft(profile: Profile, out: Path) -> Path:
    """09's SFT stage: full fine-tuning of the base model, loss on the answers only, saved to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from helpers.data import load_split
    from helpers.training import ensure_training_template

    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(base_model(profile)))
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(base_model(profile), dtype=torch.float32),
        train_dataset=load_split(profile, "chat", "train", n=profile.sizes.n_train).select_columns(
            ["messages"]
        ),
        processing_class=tokenizer,
        args=SFTConfig(
            learning_rate=1e-3 if profile.name == "tiny" else 2e-5,
            lr_scheduler_type="cosine",
            warmup_steps=10,
            assistant_only_loss=True,
            **_common(profile, out.parent / f"{out.name}-run", "sft"),
        ),
    )
    trainer.train()
    trainer.save_model(str(out))  # safetensors, with the tokenizer
    return out


def lora_sft(profile: Profile, model: str | Path, run: Run, out: Path, learning_rate: float) -> Path:
    """LoRA SFT of `model` on the chat rows, loss on the answers only, in the shapes of a declared
    run; the merged model and its tokenizer saved to `out`, which is returned. A
    finished `out` is kept: rerunning a notebook does not train it again."""
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from helpers.data import load_split
    from helpers.training import ensure_training_template, load_for_training, release

    if (out / "tokenizer_config.json").exists():
        return out
    trainer = SFTTrainer(
        model=load_for_training(str(model), profile),  # the profile's dtype; PEFT upcasts LoRA's layers
        train_dataset=load_split(profile, "chat", "train", n=profile.sizes.n_train).select_columns(
            ["messages"]
        ),
        processing_class=ensure_training_template(AutoTokenizer.from_pretrained(model)),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        args=SFTConfig(
            learning_rate=learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=10,
            assistant_only_loss=True,
            logging_steps=run.steps,
            output_dir=str(out.parent / f"{out.name}-run"),
            seed=profile.seed,
            **_shapes(profile, run),
        ),
    )
    trainer.train()
    trainer.model.merge_and_unload().save_pretrained(out)  # safetensors, in shards for a large model
    trainer.processing_class.save_pretrained(out)  # last: its file marks the model as whole
    release(trainer)
    return out


def short_dpo(profile: Profile, sft: Path, out: Path, adapter: Path) -> Path:
    """09's DPO stage: LoRA on the SFT model; the adapter saved to `adapter`, the merged model to `out`."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import maybe_extract_prompt

    from helpers.data import load_split

    tokenizer = AutoTokenizer.from_pretrained(sft)
    pairs = load_split(profile, "preference", "train", n=profile.sizes.n_train).map(maybe_extract_prompt)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32).to(profile.device),
        args=DPOConfig(
            learning_rate=2e-3 if profile.name == "tiny" else 5e-5,
            beta=0.5,
            **_common(profile, out.parent / f"{out.name}-run", "dpo"),
        ),
        train_dataset=pairs.select_columns(["prompt", "chosen", "rejected"]),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainer.model.save_pretrained(adapter)  # the adapter alone, safetensors
    trainer.model.merge_and_unload().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def course_chain(profile: Profile, lesson: str = "10_evaluate_and_ship") -> tuple[dict[str, Path | str], str]:
    """Each stage's model (a hub id or a folder), the DPO adapter under "DPO adapter", and where
    they came from."""
    stages: dict[str, Path | str] = {"base": base_model(profile)}
    from_09 = chain_from_09(profile)
    if from_09:
        return stages | from_09, "notebook 09's chain (its SFT, DPO and GRPO stages)"
    runs = runs_dir(profile.name, lesson)
    sft, dpo, adapter = runs / "sft", runs / "dpo", runs / "dpo-adapter"
    if not (sft / SAVED).exists():
        short_sft(profile, sft)
    if not ((dpo / SAVED).exists() and (adapter / "adapter_model.safetensors").exists()):
        short_dpo(profile, sft, dpo, adapter)
    stages |= {"SFT": sft, "DPO": dpo, "DPO adapter": adapter}
    return stages, "a short SFT and DPO run here (run notebook 09 to add its GRPO stage)"
