"""A batched sampling loop for transformers decoder LMs, leaner per token than `model.generate`.

`HFPolicy` decodes with this loop whenever the model's `forward` takes what the loop passes
(attention mask, position ids, a KV cache, `logits_to_keep`), and falls back to `generate`
otherwise. Per new token it runs one forward pass over the batch's last tokens and then:

- samples by inverting the CDF of the processed distribution (one uniform draw per row) rather
  than `torch.multinomial`, which draws an exponential variate for every vocabulary entry
  (~4 ms per token for 4 rows x 49k entries on this CPU);
- on CPU in fp32, multiplies by the LM head through MKL's packed-GEMM weights, repacked once per
  call (the head is 21% of SmolLM2's weights and a plain small-batch GEMM reads it at about half
  the memory bandwidth the packed kernel reaches).

Temperature and top-p follow transformers' warpers exactly; the log-prob returned for each token
is that of the processed distribution it was drawn from. This module samples; it never computes
losses or touches environments.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from llmenv.agents.scoring import cache_argument, output_cache

LOOP_ARGUMENTS = frozenset({"attention_mask", "position_ids", "use_cache", "logits_to_keep"})
"""Keywords `model.forward` must accept (besides its cache keyword) for `sample` to drive it."""


def supports(model: Any) -> bool:
    """True when `sample` can drive `model` (a decoder-only transformers LM with the usual keywords)."""
    params = inspect.signature(model.forward).parameters
    has_cache = "cache" in params or "past_key_values" in params
    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    return LOOP_ARGUMENTS <= params.keys() and has_cache and not encoder_decoder


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set to -inf the least likely tokens outside the top-p mass (always keeping the most likely one)."""
    ascending, order = scores.sort(dim=-1)  # (B, V)
    mass_below = ascending.softmax(-1).cumsum(-1)  # (B, V) probability of this token and all less likely ones
    drop = mass_below <= 1 - top_p  # (B, V)
    drop[:, -1] = False
    return scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row from (B, V) logits; return the ids (B,) and their log-probs (B,).

    Temperature 0 is greedy (log-probs then of the unprocessed logits, as `generate` reports them).
    """
    logits = logits.float()
    if temperature == 0:
        tokens = logits.argmax(-1)  # (B,)
        return tokens, logits.log_softmax(-1).gather(-1, tokens[:, None])[:, 0]
    scores = logits / temperature
    if top_p < 1:
        scores = top_p_filter(scores, top_p)
    logp = scores.log_softmax(-1)  # (B, V)
    cdf = logp.exp().double().cumsum(-1)  # (B, V), float64 so the 49k-term running sum stays exact enough
    draw = torch.rand(cdf.shape[0], 1, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]  # (B, 1)
    tokens = torch.searchsorted(cdf, draw, right=True)[:, 0].clamp_(max=cdf.shape[1] - 1)  # (B,)
    chosen = logp.gather(-1, tokens[:, None])[:, 0]  # (B,)
    off = ~torch.isfinite(chosen)  # a draw rounded onto the CDF's flat tail of -inf tokens: redraw those rows
    if bool(off.any()):
        tokens[off] = torch.multinomial(logp[off].exp(), 1)[:, 0]
        chosen = logp.gather(-1, tokens[:, None])[:, 0]
    return tokens, chosen


@contextlib.contextmanager
def packed_head(model: Any, rows: int) -> Iterator[None]:
    """Inside the block an fp32 CPU `nn.Linear` LM head multiplies through MKL's packed weights for `rows` rows.

    Any other head, device, dtype or torch build runs unchanged. Inputs with a different row count
    take MKL's ordinary path inside the same op, so results never depend on the packing.
    """
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    usable = (
        isinstance(head, torch.nn.Linear)
        and weight is not None
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkl.is_available()
        and hasattr(torch.ops.mkl, "_mkl_linear")
    )
    packed = None
    if usable:
        assert weight is not None  # checked by `usable`
        try:
            packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), rows)
        except (RuntimeError, AttributeError):  # a torch build without MKL's packed GEMM
            packed = None
    if packed is None:
        yield
        return
    assert weight is not None  # packed only when usable
    plain, bias = weight.detach(), None if head.bias is None else head.bias.detach()

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkl._mkl_linear(hidden, packed, plain, bias, rows)

    head.forward = forward  # an instance attribute: shadows Linear.forward until deleted
    try:
        yield
    finally:
        del head.forward


@torch.no_grad()
def sample(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_token_ids: Sequence[int],
    pad_token_id: int,
    cache: Any = None,
    cached: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Complete left-padded prompts (B, L); return new tokens (B, T), their log-probs (B, T) and lengths (B,).

    `cache` may already hold the first `cached` positions of every row (a shared prefix). A row's
    length counts its stop token; a row that never stops has length `max_new_tokens`. Positions
    past a row's length hold `pad_token_id` and log-prob 0.
    """
    rows, width = input_ids.shape
    device = input_ids.device
    mask = torch.ones(rows, width + max_new_tokens, dtype=attention_mask.dtype, device=device)  # (B, L + T)
    mask[:, :width] = attention_mask
    positions = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)  # (B, L) left padding shifts positions
    key = cache_argument(model)
    stops = torch.tensor(list(stop_token_ids), device=device)
    tokens = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)  # (B, T)
    logprobs = torch.zeros(rows, max_new_tokens, dtype=torch.float32, device=device)  # (B, T)
    lengths = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)  # (B,)
    done = torch.zeros(rows, dtype=torch.bool, device=device)  # (B,)
    with packed_head(model, rows):
        step_ids, step_positions = input_ids[:, cached:], positions[:, cached:]
        for t in range(max_new_tokens):
            past = {key: cache} if cache is not None else {}
            out = model(
                input_ids=step_ids,
                attention_mask=mask[:, : width + t],
                position_ids=step_positions,
                use_cache=True,
                logits_to_keep=1,
                **past,
            )
            cache = output_cache(out)
            new, new_logp = sample_next(out.logits[:, -1], temperature, top_p)  # (B,), (B,)
            tokens[:, t] = torch.where(done, pad_token_id, new)
            logprobs[:, t] = torch.where(done, 0.0, new_logp)
            stopped = torch.isin(new, stops) & ~done  # (B,)
            lengths[stopped] = t + 1
            done |= stopped
            if bool(done.all()):
                break
            step_ids, step_positions = tokens[:, t : t + 1], positions[:, -1:] + t + 1
    return tokens, logprobs, lengths
