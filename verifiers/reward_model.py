"""Rewards from a trained reward model: a scalar head read at an explicit position of each conversation.

`RewardModelVerifier(model)` scores a completion of a task with a Bradley–Terry reward model (a
one-output `...ForSequenceClassification`, as `llmenv train rm` writes and as published reward
models are). transformers pools such a model at the last non-pad token, and with SmolLM2 (pad token
= EOS) a completion ending in EOS would be read one token early; here the position is explicit:
`encode_conversation` renders the conversation through the reward model's chat template and reads
the score at its last token that is not template whitespace (the end-of-turn marker), and
`sequence_rewards` runs the trunk once per batch and the head only at those positions. When the
completion comes from an llmenv environment (`llmenv.Completion`) whose codec is the reward model's
own (same vocabulary, specials, template and tools), the policy's exact tokens are scored and never
re-encoded; otherwise the conversation is re-rendered (`details["encoding"]` says which). In a
multi-turn episode each scored turn is read in its context: the conversation up to that turn.
Training (`agents/rm.py`) encodes and scores pairs through the same two functions, so a reward seen
in training is the reward given here. This module scores; it never trains.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from llmenv.agents.scoring import cache_argument, output_cache
from llmenv.chat import ChatCodec
from llmenv.errors import VerifierError
from llmenv.models import load_reward_model, load_tokenizer
from llmenv.types import Completion, Message, Task, Verdict
from llmenv.verifiers.process import step_logits

__all__ = [
    "RewardModelVerifier",
    "RunningNormalizer",
    "encode_conversation",
    "pair_rewards",
    "reward_parts",
    "sequence_rewards",
]


def reward_parts(model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The trunk (decoder stack) and scalar head of a one-output sequence-classification model (peft too)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, "score", None)
    trunk = getattr(base, "base_model", None)
    if not isinstance(head, torch.nn.Module) or not isinstance(trunk, torch.nn.Module) or trunk is base:
        raise VerifierError(
            f"{type(base).__name__} is not a reward model with a `score` head over a decoder; expected a "
            "transformers ...ForSequenceClassification with num_labels=1 (llmenv.models.load_reward_model)"
        )
    return trunk, head


def sequence_rewards(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    end_index: torch.Tensor,
    *,
    bf16: bool = False,
) -> torch.Tensor:
    """The reward of each right-padded row, read at `end_index` (B,), as a float32 (B,) tensor."""
    reward_parts(model)  # a clear error for a model without a scalar head
    rows = torch.arange(len(input_ids), device=input_ids.device)  # (B,)
    return step_logits(model, input_ids, attention_mask, rows, end_index, bf16=bf16).squeeze(-1)  # (B,)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _right_padded(rows: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask, (B, L) each."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(np.asarray(r, dtype=np.int64))
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


MIN_PAIR_PREFIX = 8
"""Pairs sharing fewer leading tokens than this (on average) are scored as whole sequences."""


def pair_rewards(
    model: Any,
    chosen: Sequence[Sequence[int]],
    chosen_end: Sequence[int],
    rejected: Sequence[Sequence[int]],
    rejected_end: Sequence[int],
    *,
    pad: int,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of P preference pairs (chosen, rejected), (P,) each, the tokens both sides share run once.

    A pair's two sides share their prompt (and the template around it): that prefix goes through the
    trunk once per pair, its keys and values are repeated for the two continuations, and each side's
    continuation runs on top with explicit positions, so the rewards (and their gradients) equal
    `sequence_rewards` on the whole sequences, at about (prefix + 2 continuations) / (2 whole) of the
    work. The prefix stops before either side's scored token, so each side's score is read from its
    own continuation. Batches whose pairs share less than `MIN_PAIR_PREFIX` tokens on average, and a
    trunk with gradient checkpointing (it refuses a cache), take `sequence_rewards` on both sides.
    """
    trunk, head = reward_parts(model)
    device = next(model.parameters()).device
    count = len(chosen)
    shared = [min(_common_prefix(c, r), ce, re) for c, r, ce, re in zip(chosen, rejected, chosen_end, rejected_end)]
    if min(shared) < 1 or sum(shared) / count < MIN_PAIR_PREFIX or getattr(trunk, "gradient_checkpointing", False):
        rows = [list(c[: e + 1]) for c, e in zip(chosen, chosen_end)] + [list(r[: e + 1]) for r, e in
                                                                          zip(rejected, rejected_end)]  # fmt: skip
        ids, mask = _right_padded(rows, pad, device)
        ends = torch.tensor([len(r) - 1 for r in rows], device=device)
        rewards = sequence_rewards(model, ids, mask, ends, bf16=bf16)  # (2P,)
        return rewards[:count], rewards[count:]
    prefix_ids, prefix_mask = _right_padded([c[:k] for c, k in zip(chosen, shared)], pad, device)  # (P, Lp)
    tails = [list(c[k : e + 1]) for c, k, e in zip(chosen, shared, chosen_end)]
    tails += [list(r[k : e + 1]) for r, k, e in zip(rejected, shared, rejected_end)]
    tail_ids, tail_mask = _right_padded(tails, pad, device)  # (2P, Lt)
    both = torch.arange(count, device=device).repeat(2)  # (2P,): each pair's prefix row, for either side
    starts = torch.tensor(shared, device=device)[both]  # (2P,)
    positions = starts[:, None] + torch.arange(tail_ids.shape[1], device=device)  # (2P, Lt)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
        prefix = trunk(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True)
        cache = output_cache(prefix)
        cache.batch_select_indices(both)  # (P, heads, Lp, d) -> (2P, ...): backward sums both sides' gradients
        rest = {cache_argument(trunk): cache}
        hidden = trunk(input_ids=tail_ids, attention_mask=torch.cat([prefix_mask[both], tail_mask], 1),
                       position_ids=positions, use_cache=True, **rest).last_hidden_state  # (2P, Lt, H)  # fmt: skip
        tail_ends = torch.tensor([len(t) - 1 for t in tails], device=device)  # (2P,)
        rewards = head(hidden[torch.arange(2 * count, device=device), tail_ends]).squeeze(-1).float()  # (2P,)
    return rewards[:count], rewards[count:]


def scored_position(codec: ChatCodec, ids: Sequence[int]) -> int:
    """The index of the last token that is not template whitespace (the end-of-turn marker after a reply)."""
    end = len(ids) - 1
    while end > 0 and not codec.decode([ids[end]], skip_special_tokens=False).strip():
        end -= 1
    return end


def encode_conversation(codec: ChatCodec, messages: Sequence[Message], completion: str) -> tuple[list[int], int]:
    """`messages` plus the assistant's `completion` through the codec's template: ids and the scored index."""
    ids = [int(i) for i in codec.encode([*messages, Message(role="assistant", content=str(completion))],
                                        add_generation_prompt=False)]  # fmt: skip
    return ids, scored_position(codec, ids)


class RunningNormalizer:
    """Running mean and variance of rewards (Welford); `normalize` maps a reward to (r - mean) / std."""

    def __init__(self) -> None:
        self.count, self.mean, self._m2 = 0, 0.0, 0.0

    def update(self, values: Sequence[float]) -> None:
        """Fold a batch of rewards into the running statistics."""
        for value in values:
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self._m2 += delta * (value - self.mean)

    @property
    def std(self) -> float:
        """The population standard deviation so far (1.0 until two rewards are seen)."""
        return math.sqrt(self._m2 / self.count) if self.count > 1 and self._m2 > 0 else 1.0

    def normalize(self, value: float) -> float:
        """`(value - mean) / std` under the statistics so far."""
        return (value - self.mean) / self.std


class RewardModelVerifier:
    """Scores completions with a reward model, in batches, at an explicit end index.

    Args:
        model: a reward model (a loaded one-output sequence-classification model, a folder written by
            `llmenv train rm`, or a causal LM, which gets a new untrained head: useful in tests only).
        tokenizer: its tokenizer (default: the model's own folder).
        batch_size: conversations per forward pass.
        normalize: map each reward through running statistics over everything scored so far
            (`(r - mean) / std`, updated with each batch before it is normalised); the raw score stays
            in `details["raw_reward"]`.
        max_length: conversations longer than this many tokens keep their last `max_length` tokens.
        bf16: bf16 autocast for the forward pass.
        device: where the model runs.

    `Verdict.reward` is the score (`passed` is None: a reward model gives no pass/fail); `details` hold
    `encoding` ("policy_tokens" or "rendered"), `tokens` scored and `raw_reward`.
    """

    name = "reward_model"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 8,
        normalize: bool = False,
        max_length: int = 2048,
        bf16: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size < 1 or max_length < 2:
            raise VerifierError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
        if tokenizer is None and isinstance(model, torch.nn.Module):
            raise VerifierError("a loaded reward model needs its tokenizer: RewardModelVerifier(model, tokenizer)")
        self.model = load_reward_model(model, device=device).requires_grad_(False)
        self.tokenizer = load_tokenizer(tokenizer if tokenizer is not None else model)
        self.codec = ChatCodec(self.tokenizer)
        ids, end = encode_conversation(self.codec, [Message(role="user", content="x")], "x")
        self._end_of_turn = ids[end]
        """The token that closes an assistant turn (appended to a cut action before it is scored)."""
        self.batch_size, self.max_length, self.bf16 = batch_size, max_length, bf16
        self.normalizer = RunningNormalizer() if normalize else None
        self._lock = threading.Lock()  # one forward at a time: the env's worker threads share the model

    def encode(self, completion: str, task: Task) -> tuple[list[int], int, str]:
        """The ids to score, the scored index and how they were made ("policy_tokens" or "rendered")."""
        if isinstance(completion, Completion) and completion.codec_key == self.codec.codec_key:
            ids = [int(i) for i in completion.tokens]
            if not completion.action_tokens.size or ids[-1] not in self.codec.stop_token_ids:
                ids.append(self._end_of_turn)  # a cut action: close the turn as the template would
            return ids, len(ids) - 1, "policy_tokens"
        messages = list(completion.messages) if isinstance(completion, Completion) else task.messages()
        ids, end = encode_conversation(self.codec, messages, completion)
        return ids, end, "rendered"

    def __call__(self, completion: str, task: Task) -> Verdict:
        """The reward model's score of one completion."""
        return self.verify_batch([completion], [task])[0]

    def verify_batch(self, completions: Sequence[str], tasks: Sequence[Task]) -> list[Verdict]:
        """One verdict per completion, scored `batch_size` at a time."""
        encoded = [self.encode(c, t) for c, t in zip(completions, tasks, strict=True)]
        raw: list[float] = []
        for start in range(0, len(encoded), self.batch_size):
            raw += self._score(encoded[start : start + self.batch_size])
        if self.normalizer is not None:
            self.normalizer.update(raw)
        verdicts = []
        for (_, end, how), score in zip(encoded, raw, strict=True):
            reward = self.normalizer.normalize(score) if self.normalizer is not None else score
            details = {"encoding": how, "tokens": min(end + 1, self.max_length), "raw_reward": score}
            verdicts.append(Verdict(reward=reward, passed=None, parts={self.name: reward}, details=details))
        return verdicts

    def _score(self, rows: Sequence[tuple[list[int], int, str]]) -> list[float]:
        kept = [ids[: end + 1][-self.max_length :] for ids, end, _ in rows]  # (b, <= max_length)
        width = max(len(ids) for ids in kept)
        device = next(self.model.parameters()).device
        input_ids = torch.full((len(kept), width), self.model.config.pad_token_id or 0, dtype=torch.long)
        attention = torch.zeros((len(kept), width), dtype=torch.long)
        for row, ids in enumerate(kept):
            input_ids[row, : len(ids)] = torch.as_tensor(np.asarray(ids, dtype=np.int64))
            attention[row, : len(ids)] = 1
        ends = torch.tensor([len(ids) - 1 for ids in kept])
        with self._lock, torch.inference_mode():
            scores = sequence_rewards(
                self.model, input_ids.to(device), attention.to(device), ends.to(device), bf16=self.bf16
            )
        return [float(s) for s in scores.cpu()]
