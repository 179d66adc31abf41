"""Scoring preference pairs with a model: log-probabilities of completions, and what DPO moves.

    chosen, rejected = pair_logps(model, tokenizer, rows)          # summed over completion tokens
    preference_metrics(chosen, rejected, ref_chosen, ref_rejected, beta=0.1)

Used by notebook 04 on held-out pairs; the DPO loss itself is written in the notebook.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from helpers.training import token_batches

Messages = list[dict]


@torch.no_grad()
def completion_logps(
    model,
    tokenizer,
    prompts: Sequence[Messages],
    completions: Sequence[Messages],
    max_tokens: int = 4096,
    max_length: int | None = None,
) -> torch.Tensor:
    """Sum of log p(token) over each completion's tokens, given its prompt, in the chat template.

    Rows are batched up to `max_tokens` tokens (padding included) and cut after `max_length`, as
    DPOTrainer cuts them: a hub preference set's long tail would otherwise put a batch of fp32
    vocabulary-sized log-probabilities (tokens x 49,152 x 4 bytes) on the GPU at once."""
    was_training = model.training
    model.eval()
    rows = []
    for prompt, completion in zip(prompts, completions):
        head = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        full = tokenizer.apply_chat_template(
            list(prompt) + list(completion), tokenize=True, return_dict=True
        )["input_ids"]
        if full[: len(head)] != head:
            raise ValueError(
                "The chat template renders the prompt differently once a completion follows it; "
                "completion log-probabilities would be misaligned."
            )
        rows.append((full[:max_length], min(len(head), max_length or len(head))))
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for chunk in token_batches(rows, [len(ids) for ids, _ in rows], max_tokens):
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        completion = torch.zeros((len(chunk), width))
        for i, (seq, n_prompt) in enumerate(chunk):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            completion[i, n_prompt : len(seq)] = 1
        ids, mask, completion = ids.to(model.device), mask.to(model.device), completion.to(model.device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        out.append((token_logps * completion[:, 1:]).sum(-1).cpu())
    model.train(was_training)
    return torch.cat(out)


def pair_logps(
    model, tokenizer, rows: Sequence[dict], max_tokens: int = 4096, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion log-probabilities of the chosen and the rejected answer of each pair."""
    prompts = [r["prompt"] for r in rows]
    chosen = completion_logps(model, tokenizer, prompts, [r["chosen"] for r in rows], max_tokens, max_length)
    rejected = completion_logps(
        model, tokenizer, prompts, [r["rejected"] for r in rows], max_tokens, max_length
    )
    return chosen, rejected


def preference_metrics(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> dict[str, float]:
    """- prefers chosen: share of pairs where the model gives the chosen answer more probability;
    - reward accuracy: share where DPO's implicit reward beta * log(pi / pi_ref) is higher for the
      chosen answer (0 before training: policy and reference are the same model, every pair ties);
    - reward margin: mean chosen minus rejected implicit reward;
    - drift: mean |log pi - log pi_ref| over both answers, in nats: how far the policy moved."""
    chosen_reward, rejected_reward = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    return {
        "prefers chosen": (chosen > rejected).float().mean().item(),
        "reward accuracy": (chosen_reward > rejected_reward).float().mean().item(),
        "reward margin": (chosen_reward - rejected_reward).mean().item(),
        "drift (nats)": torch.cat([chosen - ref_chosen, rejected - ref_rejected]).abs().mean().item(),
    }
