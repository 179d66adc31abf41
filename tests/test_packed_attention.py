"""helpers.packed_attention (notebook 07): padding-free batches attended one sequence at a time."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import packed_attention
from helpers.runtime import Hardware, choose_profile
from helpers.tiny.build import ensure_built

LENGTHS = [5, 17, 3, 30]


@pytest.fixture(scope="module")
def chat():
    ensure_built(["tiny-chat"])
    return choose_profile(Hardware(cpu_cores=2, ram_gb=8), "tiny").models["chat"]


def packed_row():
    torch.manual_seed(0)
    ids = torch.randint(4, 1000, (1, sum(LENGTHS)))
    positions = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    return ids, positions, cu


def test_a_packed_row_matches_each_sequence_run_alone(chat):
    ids, positions, cu = packed_row()
    reference = AutoModelForCausalLM.from_pretrained(chat)
    alone = torch.cat([reference(input_ids=part).logits for part in ids.split(LENGTHS, dim=1)], dim=1)
    model = AutoModelForCausalLM.from_pretrained(chat, attn_implementation=packed_attention.register())
    # TRL's collator passes the boundaries; without them they come from the restarting positions
    for boundaries in ({"cu_seq_lens_q": cu, "cu_seq_lens_k": cu}, {}):
        out = model(input_ids=ids, position_ids=positions, use_cache=False, **boundaries)
        assert torch.allclose(out.logits, alone, atol=1e-4), boundaries
    # the gradients of the packed row are those of transformers' own block-masked SDPA
    grads = {}
    for name, impl in (("sdpa", "sdpa"), ("per sequence", packed_attention.NAME)):
        model = AutoModelForCausalLM.from_pretrained(chat, attn_implementation=impl)
        model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss.backward()
        grads[name] = model.model.layers[0].self_attn.q_proj.weight.grad
    assert torch.allclose(grads["sdpa"], grads["per sequence"], atol=1e-6)


def test_padded_batches_and_generation_are_transformers_own(chat):
    reference = AutoModelForCausalLM.from_pretrained(chat)
    model = AutoModelForCausalLM.from_pretrained(chat, attn_implementation=packed_attention.register())
    tokenizer = AutoTokenizer.from_pretrained(chat)
    tokenizer.padding_side = "left"
    batch = tokenizer(["What number comes after 12?", "Hi"], return_tensors="pt", padding=True)
    assert torch.equal(reference(**batch).logits, model(**batch).logits)
    settings = {"max_new_tokens": 6, "do_sample": False}
    assert torch.equal(reference.generate(**batch, **settings), model.generate(**batch, **settings))


def test_on_a_cpu_attention_runs_in_float32_under_bf16_autocast(chat, monkeypatch):
    ids, positions, cu = packed_row()
    model = AutoModelForCausalLM.from_pretrained(chat, attn_implementation=packed_attention.register())
    dtypes = []

    def recording(q, k, v, **kwargs):
        dtypes.append(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    monkeypatch.setattr(
        packed_attention, "F", type("F", (), {"scaled_dot_product_attention": staticmethod(recording)})
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, position_ids=positions, cu_seq_lens_q=cu, use_cache=False)
    assert dtypes and set(dtypes) == {torch.float32}
    assert len(dtypes) == len(LENGTHS) * model.config.num_hidden_layers  # one call per sequence and layer
