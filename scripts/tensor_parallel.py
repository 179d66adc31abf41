"""Split one Llama decoder block across processes (Megatron-LM tensor parallelism) and check it.

    torchrun --nproc_per_node 2 scripts/tensor_parallel.py          # GPUs (NCCL) or a CPU (gloo)

Attention: q, k and v projections are split column-wise (each rank computes its own heads), the
output projection row-wise (partial sums, added up by one all-reduce). MLP: gate and up column-wise,
down row-wise. So a block costs two all-reduces per forward, and each rank holds 1/N of its weights.
Rank 0 compares the split block's output with the unsplit block's on the same input and writes
tp.json (max difference, bytes per rank) to --out. Notebook 06 launches it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from transformers import AutoModelForCausalLM

from helpers.runtime import get_profile

PLAN = {
    "self_attn.q_proj": ColwiseParallel(),
    "self_attn.k_proj": ColwiseParallel(),
    "self_attn.v_proj": ColwiseParallel(),
    "self_attn.o_proj": RowwiseParallel(),
    "mlp.gate_proj": ColwiseParallel(),
    "mlp.up_proj": ColwiseParallel(),
    "mlp.down_proj": RowwiseParallel(),
}


def local_bytes(module: torch.nn.Module) -> int:
    total = 0
    for p in module.parameters():
        t = p.to_local() if hasattr(p, "to_local") else p
        total += t.numel() * t.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/tensor_parallel"))
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    model = AutoModelForCausalLM.from_pretrained(
        get_profile(build_tiny=False).models["chat"], dtype=torch.float32
    )
    config = model.config
    if config.num_attention_heads % world or config.num_key_value_heads % world:
        raise SystemExit(f"{config.num_attention_heads} heads do not split over {world} processes")
    block = model.model.layers[0].to(device)
    reference = copy.deepcopy(block)  # the unsplit block, for comparison

    torch.manual_seed(0)  # the same input on every rank
    hidden = torch.randn(2, 16, config.hidden_size, device=device)
    positions = torch.arange(16, device=device).unsqueeze(0)
    rotary = model.model.rotary_emb.to(device)(hidden, positions)
    with torch.no_grad():
        expected = reference(hidden, position_embeddings=rotary, attention_mask=None)
        expected = expected[0] if isinstance(expected, tuple) else expected

    mesh = init_device_mesh(device.type, (world,))
    parallelize_module(block, mesh, PLAN)
    # Attention reshapes to (..., heads, head_dim) with -1 heads, so each rank runs its own heads.
    with torch.no_grad():
        got = block(hidden, position_embeddings=rotary, attention_mask=None)
        got = got[0] if isinstance(got, tuple) else got
    got = got.to_local() if hasattr(got, "to_local") else got
    diff = (got - expected).abs().max().item()
    per_rank = [None] * world
    dist.all_gather_object(per_rank, {"rank": rank, "bytes": local_bytes(block)})
    print(
        f"[rank {rank}/{world}] holds {local_bytes(block):,} of {local_bytes(reference):,} bytes; max |diff| {diff:.2e}"
    )
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "world": world,
            "max_abs_diff": diff,
            "full_bytes": local_bytes(reference),
            "per_rank": per_rank,
        }
        (args.out / "tp.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
    # After DTensor use on gloo, a rank sometimes aborts while the interpreter shuts down
    # ("terminate called without an active exception": 2 runs in ~8 here), after all its work is
    # done. Leave without running C++ destructors, so the exit status reports the work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
