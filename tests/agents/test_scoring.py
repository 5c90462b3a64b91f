"""completion_logprobs: equals a full log-softmax on policy positions, values and gradients, without the full matrix."""

from __future__ import annotations

import pytest
import torch

from llmenv.agents import scoring
from llmenv.agents.scoring import completion_logprobs, shared_prefix_length
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


def group_batch():
    """Four rows that share a 10-token prompt (a GRPO group), one of them right-padded."""
    torch.manual_seed(1)
    prompt = torch.randint(0, 400, (10,))
    ids = torch.stack([torch.cat([prompt, torch.randint(0, 400, (6,))]) for _ in range(4)])  # (4, 16)
    attention = torch.ones_like(ids)
    attention[3, 13:] = 0
    mask = torch.zeros(4, 16)
    mask[:, 10:] = 1
    mask[3, 13:] = 0
    return ids, attention, mask


def test_shared_prefix_length_counts_identical_attended_leading_tokens():
    ids, attention, _ = group_batch()
    assert shared_prefix_length(ids, attention) == 10
    assert shared_prefix_length(ids[:1], attention[:1]) == 0  # one row shares nothing
    same = ids[:1].repeat(3, 1)
    assert shared_prefix_length(same, torch.ones_like(same)) == 15  # each row keeps one position of its own
    left_padded = attention.clone()
    left_padded[0, :2] = 0
    assert shared_prefix_length(ids, left_padded) == 0


@pytest.mark.parametrize(
    ("packed", "attention_impl", "passes"),
    [
        (True, "sdpa", [(1, 31)]),  # one packed pass: the prompt once, then rows' attended tokens 6 + 6 + 6 + 3
        (True, "eager", [(1, 31)]),  # eager attention takes the block mask as additive scores
        (False, "sdpa", [(1, 10), (4, 6)]),  # the prompt once, its keys/values expanded to each row's own tokens
    ],
)
def test_a_shared_prompt_runs_once_and_gives_the_same_values_and_gradients(
    model, monkeypatch, packed, attention_impl, passes
):
    ids, attention, mask = group_batch()
    calls = []
    decoder = model.get_decoder()
    monkeypatch.setattr(decoder, "forward", _counting(decoder.forward, calls))
    monkeypatch.setattr(model.config, "_attn_implementation", attention_impl)
    if not packed:
        monkeypatch.setattr(scoring, "_packing_pays", lambda *args: False)
    model.zero_grad()
    logp, entropy = completion_logprobs(model, ids, attention, mask, with_entropy=True)
    logp.sum().backward()
    assert calls == passes
    shared = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref_logp, ref_entropy = reference(model, ids, attention, mask)
    ref_logp.sum().backward()
    torch.testing.assert_close(logp, ref_logp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, ref_entropy, atol=2e-5, rtol=1e-5)
    for a, p in zip(shared, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def _counting(forward, calls):
    def wrapped(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    return wrapped


def _saved_vocab_columns(model, chunk_rows):
    """Elements of (., V) tensors autograd keeps for backward while scoring `batch()`."""
    ids, attention, mask = batch()
    vocab = model.get_output_embeddings().weight.shape[0]
    kept = []

    def pack(tensor):
        if tensor.dim() >= 2 and tensor.shape[-1] == vocab:
            kept.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp, _ = completion_logprobs(model, ids, attention, mask, chunk_rows=chunk_rows, with_entropy=True)
    return sum(kept), logp


def test_several_chunks_keep_no_logits_for_backward_and_still_match(model):
    whole, _ = _saved_vocab_columns(model, chunk_rows=4096)  # one chunk: its logits are kept (cheapest)
    chunked, logp = _saved_vocab_columns(model, chunk_rows=4)  # several: recomputed in backward
    assert whole > 0 and chunked == 0
    model.zero_grad()
    logp.sum().backward()
    recomputed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ids, attention, mask = batch()
    reference(model, ids, attention, mask)[0].sum().backward()
    for a, p in zip(recomputed, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_a_prefix_tree_runs_each_pairs_prompt_once_with_the_same_values_and_gradients(model, monkeypatch):
    torch.manual_seed(2)
    system = torch.randint(0, 400, (6,))
    prompts = [torch.randint(0, 400, (5,)) for _ in range(2)]
    rows = [torch.cat([system, prompts[k // 2], torch.randint(0, 400, (4,))]) for k in range(4)]  # 2 pairs
    ids = torch.stack(rows)  # (4, 15): rows 0, 1 share system + prompt 0; rows 2, 3 system + prompt 1
    ids = torch.cat([torch.zeros(4, 1, dtype=torch.long), ids], 1)  # a padding column in front of row 3
    attention = torch.ones_like(ids)
    attention[3, 0] = 0
    attention[1, 14:] = 0  # and a right-padded row
    mask = torch.zeros(ids.shape)
    mask[:, 12:] = 1
    mask[1, 14:] = 0
    tree = scoring.prefix_tree(ids, attention)
    # row 3's padded column 0 makes it a root of its own: system + prompt 1 run again for it only
    assert len(tree.ids) == (1 + 6 + 5 + 4 + 2) + (5 + 4) + (6 + 5 + 4)
    calls = []
    decoder = model.get_decoder()
    monkeypatch.setattr(decoder, "forward", _counting(decoder.forward, calls))
    model.zero_grad()
    logp, _ = completion_logprobs(model, ids, attention, mask)
    logp.sum().backward()
    assert calls == [(1, len(tree.ids))]
    packed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref_logp, _ = reference(model, ids, attention, mask)
    ref_logp.sum().backward()
    torch.testing.assert_close(logp, ref_logp, atol=2e-5, rtol=1e-5)
    for a, p in zip(packed, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_hits_mark_the_policy_tokens_that_are_their_logits_argmax(model):
    ids, attention, mask = batch()
    with torch.no_grad():
        ids[:, -1] = model(ids, attention_mask=attention).logits[:, -2].argmax(-1)  # rows 0 and 1: a hit at the end
        logits = model(ids, attention_mask=attention).logits  # (B, L, V)
    hits = scoring.completion_scores(model, ids, attention, mask, with_hits=True, chunk_rows=5).hits
    expected = torch.zeros(mask.shape, dtype=torch.bool)
    expected[:, 1:] = (logits[:, :-1].argmax(-1) == ids[:, 1:]) & mask[:, 1:].bool()
    assert hits is not None and torch.equal(hits, expected) and hits[:2, -1].all()
