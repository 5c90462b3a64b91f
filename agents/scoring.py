"""Log-probabilities (and entropies) of completion tokens under a causal LM, computed economically.

Learners need log p(token) only where the loss mask is 1. Running the LM head on every position
materialises a (tokens x vocabulary) matrix, 49k columns for SmolLM2, which dominated the
CPU cost of a training step. Here the decoder runs once, its hidden states are sliced to the
positions that predict policy tokens, and the LM head runs on those rows only, in chunks, so
no full-vocabulary log-softmax over the batch ever exists. This module scores; it never samples
or updates weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def _parts(model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack and LM head of a transformers causal LM (also through a peft wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(f"{type(base).__name__} exposes no decoder / output embeddings to score with")
    return decoder, head


@contextlib.contextmanager
def maybe_autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on `device` when enabled (matmuls in bf16; log-softmax stays in fp32)."""
    if enabled:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def completion_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    chunk_rows: int = 512,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of policy tokens as a (B, L) tensor (0 elsewhere), and optionally entropies.

    Position t's hidden state predicts token t + 1, so the rows kept are those where
    `loss_mask[:, 1:]` is set; the results are placed back at the predicted token's position.
    Entropies are detached unless `entropy_grad` (an entropy bonus needs their gradient).
    """
    decoder, head = _parts(model)
    with maybe_autocast(input_ids.device, bf16):
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
    targets = loss_mask[:, 1:].bool()  # (B, L-1) positions whose next token is a policy token
    rows = hidden[:, :-1][targets]  # (N, H)
    ids = input_ids[:, 1:][targets]  # (N,)
    logps, entropies = [], []
    for start in range(0, rows.shape[0], chunk_rows):
        with maybe_autocast(input_ids.device, bf16):
            logits = head(rows[start : start + chunk_rows])  # (n, V)
        logits = logits.float()
        norm = logits.logsumexp(-1)  # (n,)
        logps.append(logits.gather(-1, ids[start : start + chunk_rows, None])[:, 0] - norm)  # (n,)
        if with_entropy:
            probs = (logits - norm[:, None]).exp()  # (n, V)
            entropy = norm - (probs * logits).sum(-1)  # (n,)
            entropies.append(entropy if entropy_grad else entropy.detach())
    flat = torch.cat(logps) if logps else hidden.new_zeros(0, dtype=torch.float32)  # (N,)
    logp = torch.zeros(loss_mask.shape, dtype=torch.float32, device=flat.device)  # (B, L)
    logp[:, 1:][targets] = flat
    entropy = None
    if with_entropy:
        entropy = torch.zeros(loss_mask.shape, dtype=torch.float32, device=flat.device)  # (B, L)
        if entropies:
            entropy[:, 1:][targets] = torch.cat(entropies)
    return logp, entropy
