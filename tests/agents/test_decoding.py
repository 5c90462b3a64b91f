"""The sampling loop behind HFPolicy: same greedy tokens as `generate`, exact sampling, packed LM head."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from llmenv.agents import decoding
from llmenv.agents.policy import HFPolicy, SamplingParams
from llmenv.chat import ChatCodec
from llmenv.models import tiny_llama


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok, seed=4).eval()


def left_padded(tok, texts):
    codec = ChatCodec(tok)
    prompts = [codec.encode([{"role": "user", "content": t}]).tolist() for t in texts]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tok.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def test_greedy_tokens_and_logprobs_equal_generate_on_left_padded_rows(model, tok):
    ids, mask = left_padded(tok, ["Compute 1 + 2.", "A much longer question about many things?", "Hi"])
    stops = ChatCodec(tok).stop_token_ids
    pad = tok.pad_token_id or 0
    tokens, logprobs, lengths = decoding.sample(
        model, ids, mask, max_new_tokens=10, temperature=0.0, top_p=1.0, stop_token_ids=stops, pad_token_id=pad
    )
    ref = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=10,
        eos_token_id=list(stops),
        pad_token_id=pad,
        return_dict_in_generate=True,
        output_scores=True,
    )
    new = ref.sequences[:, ids.shape[1] :]
    for row in range(ids.shape[0]):
        n = int(lengths[row])
        assert tokens[row, :n].tolist() == new[row, :n].tolist()
        expected = [scores[row].log_softmax(-1)[new[row, t]].item() for t, scores in enumerate(ref.scores[:n])]
        torch.testing.assert_close(logprobs[row, :n], torch.tensor(expected), atol=2e-5, rtol=0)
        assert (tokens[row, n:] == pad).all() and (logprobs[row, n:] == 0).all()


def test_sampling_follows_the_distribution_and_never_draws_a_removed_token():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, float("-inf"), -1.0]]).repeat(40_000, 1)  # (N, 5)
    tokens, logp = decoding.sample_next(logits, temperature=1.0, top_p=1.0)
    probs = logits[0].softmax(-1)
    freq = torch.bincount(tokens, minlength=5).double() / len(tokens)
    torch.testing.assert_close(freq, probs.double(), atol=0.01, rtol=0)
    assert (tokens != 3).all()
    torch.testing.assert_close(logp, probs.log()[tokens])


def test_temperature_and_top_p_match_transformers_warpers():
    torch.manual_seed(1)
    logits = torch.randn(6, 50) * 3
    for top_p in (0.3, 0.9, 0.999):
        ours = decoding.top_p_filter(logits / 0.7, top_p)
        theirs = TopPLogitsWarper(top_p)(None, logits / 0.7)
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    tokens, logp = decoding.sample_next(logits, temperature=0.7, top_p=0.3)
    kept = decoding.top_p_filter(logits / 0.7, 0.3).log_softmax(-1)
    assert torch.isfinite(kept.gather(-1, tokens[:, None])).all()
    torch.testing.assert_close(logp, kept.gather(-1, tokens[:, None])[:, 0])


@pytest.mark.skipif(not hasattr(torch.ops.mkl, "_mkl_linear"), reason="this torch build has no MKL packed GEMM")
def test_the_packed_head_gives_the_plain_heads_logits_for_any_row_count(model):
    head = model.get_output_embeddings()
    hidden = torch.randn(3, 1, head.in_features)
    plain = head(hidden)
    with decoding.packed_head(model, rows=3):
        assert "forward" in vars(head)  # the packed path is really in use
        torch.testing.assert_close(head(hidden), plain, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(head(hidden[:2]), plain[:2], atol=1e-4, rtol=1e-4)
    assert "forward" not in vars(head)
    torch.testing.assert_close(head(hidden), plain)


def test_models_the_loop_cannot_drive_fall_back_to_generate(tok):
    model = tiny_llama(tok, seed=4).eval()
    policy = HFPolicy(model, tok)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    prompts = [ChatCodec(tok).encode([{"role": "user", "content": "Hi"}]).tolist()]
    fast = policy.generate(prompts, greedy)
    forward = model.forward
    model.forward = lambda *args, **kwargs: forward(*args, **kwargs)  # hides the keywords the loop needs
    assert not decoding.supports(model)
    slow = policy.generate(prompts, greedy)
    assert fast[0].tokens.tolist() == slow[0].tokens.tolist()
    assert decoding.supports(tiny_llama(tok, seed=4))
    wrapped = functools.wraps(forward)(lambda *a, **k: forward(*a, **k))
    model.forward = wrapped  # a wrapper that keeps the signature still gets the loop
    assert decoding.supports(model)
