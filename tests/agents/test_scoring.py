"""completion_logprobs: equals a full log-softmax on policy positions, values and gradients, without the full matrix."""

from __future__ import annotations

import pytest
import torch

from llmenv.agents.scoring import completion_logprobs
from llmenv.models import tiny_llama


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok, seed=4)


def batch():
    torch.manual_seed(0)
    ids = torch.randint(0, 400, (3, 12))  # (B, L)
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0
    mask = torch.zeros(3, 12)
    mask[:, 6:] = 1
    mask[2, 9:] = 0
    return ids, attention, mask


def reference(model, ids, attention, mask):
    logits = model(ids, attention_mask=attention).logits.float()  # (B, L, V)
    out = torch.zeros(mask.shape)
    out[:, 1:] = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
    probs = logits[:, :-1].softmax(-1)
    entropy = torch.zeros(mask.shape)
    entropy[:, 1:] = -(probs * logits[:, :-1].log_softmax(-1)).sum(-1) * mask[:, 1:]
    return out, entropy


@pytest.mark.parametrize("chunk_rows", [1, 5, 4096])
def test_values_match_a_full_log_softmax(model, chunk_rows):
    ids, attention, mask = batch()
    logp, entropy = completion_logprobs(model, ids, attention, mask, chunk_rows=chunk_rows, with_entropy=True)
    ref_logp, ref_entropy = reference(model, ids, attention, mask)
    torch.testing.assert_close(logp, ref_logp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, ref_entropy, atol=2e-5, rtol=1e-5)
    assert (logp[mask == 0] == 0).all()


def test_gradients_match(model):
    ids, attention, mask = batch()
    model.zero_grad()
    completion_logprobs(model, ids, attention, mask, chunk_rows=5)[0].sum().backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    reference(model, ids, attention, mask)[0].sum().backward()
    for a, p in zip(ours, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_bf16_autocast_stays_close(model):
    ids, attention, mask = batch()
    logp32, _ = completion_logprobs(model, ids, attention, mask)
    logp16, _ = completion_logprobs(model, ids, attention, mask, bf16=True)
    assert logp16.dtype == torch.float32 and (logp16 - logp32).abs().max() < 0.1


def test_empty_mask_gives_zeros(model):
    ids, attention, _ = batch()
    logp, _ = completion_logprobs(model, ids, attention, torch.zeros(ids.shape))
    assert logp.shape == ids.shape and (logp == 0).all()
