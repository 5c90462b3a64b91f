"""The policy interface learners and rollouts use, and `HFPolicy`, its transformers implementation.

A policy maps prompt token ids to generated token ids plus the log-probability of each sampled
token under the distribution it was sampled from (after temperature and top-p). Token ids in,
token ids out: a vLLM backend implements the same two methods. This module samples; it never
computes losses or touches environments.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from llmenv.agents import decoding
from llmenv.agents.scoring import MIN_SHARED_PREFIX, cache_argument, shared_prefix_cache, shared_prefix_length


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions."""

    max_new_tokens: int = 256
    """Upper bound on generated tokens per completion."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    seed: int | None = None
    """Seeds torch's generator before sampling, for reproducible rollouts."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Generation:
    """One completion: sampled token ids (stop token included if sampled) and their log-probs."""

    tokens: np.ndarray
    logprobs: np.ndarray
    finished: bool
    """True when generation ended on a stop token, False when cut at max_new_tokens."""


class Policy(Protocol):
    """Anything that can generate from token ids and take new weights."""

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        """Complete each prompt once."""
        ...

    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load new weights (after a learner's update)."""
        ...


class HFPolicy:
    """A transformers causal LM generating in left-padded batches with a KV cache."""

    def __init__(
        self, model: Any, tokenizer: Any, *, stop_token_ids: Sequence[int] | None = None, batch_size: int = 16
    ) -> None:
        from llmenv.chat import ChatCodec

        self.model = model
        self.tokenizer = tokenizer
        self.stop_token_ids = sorted(stop_token_ids or ChatCodec(tokenizer).stop_token_ids)
        if not self.stop_token_ids:
            raise ValueError("the tokenizer defines no EOS or end-of-turn token; pass stop_token_ids=")
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.stop_token_ids[0]
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        """Complete each prompt once; results are in prompt order."""
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size], sampling))
        return out

    def _generate_batch(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Generation]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)  # (B, L)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, L)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
            attention[row, width - len(prompt) :] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        cache, cached = None, 0
        prefix = shared_prefix_length(input_ids, attention)
        if prefix >= MIN_SHARED_PREFIX:  # e.g. one GRPO group: the prompt's prefill runs once, not once per row
            takes_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
            head_once = {"logits_to_keep": 1} if takes_keep else {}  # the prefix's logits are never used
            shared = shared_prefix_cache(self.model, input_ids[:1, :prefix], len(prompts), **head_once)
            if shared is not None:
                cache, cached = shared[1], prefix
        if decoding.supports(self.model):
            tokens, logprobs, lengths = decoding.sample(
                self.model,
                input_ids,
                attention,
                max_new_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop_token_ids=self.stop_token_ids,
                pad_token_id=self.pad_token_id,
                cache=cache,
                cached=cached,
            )
            tokens, logprobs, ends = tokens.cpu(), logprobs.cpu(), lengths.tolist()
        else:
            tokens, logprobs = self._hf_generate(input_ids, attention, cache, sampling)
            hits = torch.isin(tokens, torch.tensor(self.stop_token_ids))  # (B, T)
            ends = [int(hit.nonzero()[0]) + 1 if hit.any() else tokens.shape[1] for hit in hits]
        return [
            Generation(
                tokens=tokens[row, :end].numpy().astype(np.int64),
                logprobs=logprobs[row, :end].numpy().astype(np.float32),
                finished=int(tokens[row, end - 1]) in self.stop_token_ids,
            )
            for row, end in enumerate(ends)
        ]

    def _hf_generate(
        self, input_ids: torch.Tensor, attention: torch.Tensor, cache: Any, sampling: SamplingParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`model.generate` for models `decoding.sample` cannot drive: new tokens (B, T) and log-probs (B, T)."""
        greedy = sampling.temperature == 0
        prefill = {cache_argument(self.model): cache} if cache is not None else {}
        result = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            **prefill,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
        width = input_ids.shape[1]
        steps = [  # one (B,) tensor per step: log-prob of the sampled token under the processed logits
            scores.float().log_softmax(-1).gather(-1, result.sequences[:, width + t, None])[:, 0]
            for t, scores in enumerate(result.scores)
        ]
        return result.sequences[:, width:].cpu(), torch.stack(steps, dim=1).cpu()

    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy new weights into the generating model."""
        self.model.load_state_dict(dict(state_dict), strict=True)
