"""Fine-tune the profile's base model on chat rows with several processes: DDP, FSDP or DeepSpeed ZeRO.

One process per GPU; on a CPU, processes talk over gloo, so the same distributed code runs in CI.

    # GPUs (one process each)
    accelerate launch --num_processes 2 scripts/train_distributed.py --strategy ddp
    torchrun --nproc_per_node 2 scripts/train_distributed.py --strategy fsdp
    torchrun --nproc_per_node 2 scripts/train_distributed.py --strategy zero3
    # a CPU (`accelerate launch --cpu` starts a single process; torchrun starts two)
    ACCELERATE_USE_CPU=true torchrun --standalone --nproc_per_node 2 scripts/train_distributed.py --strategy ddp

Strategies:
  single  plain training in one process (run it with --nproc_per_node 1): the reference
  ddp     accelerate's DistributedDataParallel: every rank holds everything, gradients averaged
  fsdp    PyTorch's fully_shard (FSDP2): parameters, gradients and optimizer states sharded per layer
  zero2   DeepSpeed ZeRO-2 through the HF Trainer: optimizer states and gradients sharded
  zero3   DeepSpeed ZeRO-3 through the HF Trainer: parameters sharded too

single, ddp and fsdp feed each rank an explicit slice of the same global batches, so their losses
can be compared step by step. Each rank writes rank<N>.json (losses, bytes it holds) to --out.
Notebook 06 launches this script and reads those files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.data import load_split
from helpers.distill import chat_features, pad_batch
from helpers.lengths import valid_rows
from helpers.registry import course_root
from helpers.runtime import get_profile
from helpers.training import ensure_training_template

warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6")
DS_CONFIGS = {"zero2": "ds_z2.json", "zero3": "ds_z3.json", "zero3_offload": "ds_z3_offload.json"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategy", choices=["single", "ddp", "fsdp", *DS_CONFIGS], required=True)
    p.add_argument("--global-batch", type=int, default=16, help="rows per optimizer step, all ranks together")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--out", type=Path, default=Path("runs/distributed"))
    return p.parse_args()


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_bytes(tensors) -> int:
    """Bytes this rank holds: a sharded DTensor counts only its local shard."""
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return local_bytes(v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))


def training_rows(args, tokenizer) -> list[dict]:
    profile = get_profile()
    rows, _ = valid_rows(load_split(profile, "chat", "train", n=args.global_batch * args.steps * 2))
    features = chat_features(tokenizer, [r["messages"] for r in rows], args.max_length)
    need = args.global_batch * args.steps
    if len(features) < need:
        raise SystemExit(f"only {len(features)} usable rows for {need} (steps x global batch); lower either")
    return features[:need]


def manual_loop(args, model, tokenizer, features, rank: int, world: int) -> dict:
    """single / ddp / fsdp: the same loop; only the wrapping of the model differs."""
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else None
    )
    if args.strategy == "ddp":
        from accelerate import Accelerator

        accelerator = Accelerator()  # reads the launcher's environment: DDP over NCCL or gloo
        device = accelerator.device
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        model, optimizer = accelerator.prepare(model, optimizer)
        backward = accelerator.backward
    else:
        if args.strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cuda" if device else "cpu", (world,))
            if device:
                model.to(device)
            for layer in model.model.layers:  # each decoder layer is one shard unit
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)  # the rest: embeddings, final norm
        elif device:
            model.to(device)
        device = device or torch.device("cpu")
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        backward = torch.Tensor.backward
    micro = args.global_batch // world
    losses, start = [], time.perf_counter()
    model.train()
    for step in range(args.steps):
        # This rank's slice of the global batch: ranks together see exactly the single run's rows.
        rows = features[step * args.global_batch :][rank * micro : (rank + 1) * micro]
        batch = {k: v.to(device) for k, v in pad_batch(rows, tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        token_losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="sum", ignore_index=-100
        )
        # Normalise by the tokens of the whole global batch, not this rank's: ranks hold different
        # numbers of answer tokens, and DDP/FSDP average gradients over ranks (hence * world).
        n_tokens = (labels != -100).sum()
        if world > 1:
            dist.all_reduce(n_tokens)
        loss = token_losses / n_tokens * world
        backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        global_loss = loss.detach() / world
        if world > 1:
            dist.all_reduce(global_loss)
        losses.append(round(global_loss.item(), 6))
        if rank == 0 and (step % 5 == 0 or step == args.steps - 1):
            print(f"[rank {rank}] step {step:>3}  loss {losses[-1]:.4f}", flush=True)
    return {
        "losses": losses,
        "seconds": round(time.perf_counter() - start, 2),
        "param_bytes": local_bytes(model.parameters()),
        "optimizer_bytes": optimizer_bytes(optimizer),
    }


def deepspeed_run(args, model, tokenizer, features, rank: int, world: int) -> dict:
    """zero2 / zero3: the HF Trainer hands the model to DeepSpeed with one of data/'s configs."""
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    config = course_root() / "data" / DS_CONFIGS[args.strategy]
    # ACCELERATE_USE_CPU (set for the CPU DDP runs) would make accelerate pick DDP over DeepSpeed;
    # use_cpu=True below already keeps DeepSpeed on the CPU.
    os.environ.pop("ACCELERATE_USE_CPU", None)
    if not torch.cuda.is_available():
        # On CPUs DeepSpeed first compiles a shared-memory all-reduce, a C++ op: about a minute on
        # 2 cores, and again in every other environment (it shares one build folder). gloo's
        # all-reduce does the same reductions, and on tensors this small as fast.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    held: dict[str, int] = {}

    class Measure(TrainerCallback):
        def on_train_end(self, _args, state, control, model=None, **kwargs):
            engine = trainer.model_wrapped
            if not hasattr(engine, "zero_optimization_stage"):
                raise RuntimeError(f"expected a DeepSpeedEngine, got {type(engine).__name__}")
            params = list(engine.module.parameters())
            # ZeRO-3 keeps only this rank's partition of each parameter in ds_tensor.
            held["param_bytes"] = local_bytes(getattr(p, "ds_tensor", p) for p in params)
            opt = engine.optimizer
            flat = getattr(opt, "single_partition_of_fp32_groups", None) or getattr(
                opt, "fp32_partitioned_groups_flat", []
            )
            held["optimizer_bytes"] = optimizer_bytes(opt.optimizer) + local_bytes(flat)

    training_args = TrainingArguments(
        output_dir=str(args.out / "trainer"),
        per_device_train_batch_size=args.global_batch // world,
        max_steps=args.steps,
        learning_rate=args.lr,
        deepspeed=str(config),
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=Dataset.from_list(features),
        data_collator=lambda rows: pad_batch(rows, tokenizer.pad_token_id),
        callbacks=[Measure()],
    )
    start = time.perf_counter()
    trainer.train()
    losses = [round(e["loss"], 6) for e in trainer.state.log_history if "loss" in e]
    return {"losses": losses, "seconds": round(time.perf_counter() - start, 2), **held}


@record  # a failing rank's traceback goes into torchrun's error report
def main() -> None:
    args = parse_args()
    rank, world = rank_and_world()
    if args.strategy == "fsdp" and world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if args.strategy == "single" and world != 1:
        raise SystemExit("--strategy single is the one-process reference: launch it with --nproc_per_node 1")
    if args.global_batch % world:
        raise SystemExit(f"--global-batch {args.global_batch} must divide by the {world} processes")
    profile = get_profile(build_tiny=rank == 0)
    torch.manual_seed(0)
    # The base model, so that the loss has somewhere to fall in a few steps.
    tokenizer = ensure_training_template(AutoTokenizer.from_pretrained(profile.models["base"]))
    model = AutoModelForCausalLM.from_pretrained(profile.models["base"], dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    features = training_rows(args, tokenizer)
    run = deepspeed_run if args.strategy in DS_CONFIGS else manual_loop
    result = run(args, model, tokenizer, features, rank, world)
    result.update(strategy=args.strategy, rank=rank, world=world, n_params=n_params)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{rank}.json").write_text(json.dumps(result))
    print(
        f"[rank {rank}/{world}] {args.strategy}: {result['seconds']} s, holds parameters "
        f"{result['param_bytes'] / 1e6:.2f} MB, optimizer states {result['optimizer_bytes'] / 1e6:.2f} MB",
        flush=True,
    )
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        # Leave without the interpreter's shutdown. gloo's worker threads can still hold tensors of
        # finished asynchronous work (DeepSpeed's ZeRO reductions); freeing them while Python
        # finalises takes the GIL from a C++ thread and aborts the process after all its work is
        # done (pytorch/pytorch#179291), which torchrun reports as a failed rank. Everything is
        # written by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
