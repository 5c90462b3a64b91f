"""Process rewards: score every reasoning step of a completion with a process reward model (PRM).

`ProcessVerifier(model)` splits a completion into steps (a separator, default "\\n\\n", or a callable
giving character spans), asks a PRM for each step's probability of being correct, and returns
every score in `Verdict.steps` with the step's end as a character offset in the completion; the env
maps each end onto the policy's own tokens (decoding prefixes of the action, never re-encoding it)
and puts the score there as a dense reward. The verdict's `reward` is an aggregate of the step
scores (min, prod, last or mean), or, when an `outcome` verifier is given, that verifier's reward,
with the steps on top. How a PRM reads steps is its head convention, one adapter each, and
training (`agents/prm.py`) encodes through the same adapter, so a position scored in training is
the position scored here:

- `SeparatorClassifier`: a separator after each step and a 2-way token-classification head read
  at the separator's last token (Qwen2.5-Math-PRM style with `qwen_math_prm()`; `llmenv train prm`
  writes this kind);
- `MathShepherd`: a step tag token after each step; P('+') from the '+'/'-' logits at the tag;
- `RLHFlow`: each step a user turn answered '+' by the assistant; P('+') from the '+'/'-' logits
  where that reply is predicted.

Each adapter renders the question and steps as text and tokenises the whole text once, locating
the scored tokens by character offsets. This module scores; it never trains.
"""

from __future__ import annotations

import bisect
import json
import math
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from llmenv.errors import ModelNotFoundError, VerifierError
from llmenv.models import LLMENV_CONFIG, load_model, load_token_classifier, load_tokenizer, resolve_model_dir
from llmenv.types import Message, StepScore, Task, Verdict
from llmenv.verifiers.base import VerifierFn, call_verifier_batch

__all__ = [
    "ADAPTERS",
    "ADAPTER_KEY",
    "AGGREGATES",
    "MathShepherd",
    "PRMAdapter",
    "PRMInput",
    "ProcessVerifier",
    "RLHFlow",
    "SeparatorClassifier",
    "qwen_math_prm",
    "saved_adapter",
    "split_steps",
    "step_logits",
    "step_probabilities",
]

Splitter = Callable[[str], Sequence[tuple[int, int]]]
"""A completion's text -> the (start, end) character span of each step, in order."""

AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "min": min,
    "prod": math.prod,
    "last": lambda scores: scores[-1],
    "mean": statistics.fmean,
}
"""How step scores become one reward: the weakest step, all steps right, the final step, or the average."""


def split_steps(text: str, separator: str = "\n\n") -> list[tuple[int, int]]:
    """The (start, end) spans of the non-blank steps of `text` between separators, whitespace trimmed."""
    if not separator:
        raise VerifierError("the step separator must be a non-empty string (or pass a callable splitter)")
    spans, start = [], 0
    while start <= len(text):
        stop = text.find(separator, start)
        stop = len(text) if stop < 0 else stop
        piece = text[start:stop]
        if piece.strip():
            left = start + len(piece) - len(piece.lstrip())
            spans.append((left, start + len(piece.rstrip())))
        start = stop + len(separator)
    return spans


@dataclass(frozen=True)
class PRMInput:
    """A PRM's input for one completion: token ids, and the index whose output scores each step."""

    ids: list[int]
    positions: list[int]


class PRMAdapter(Protocol):
    """A PRM head convention: how to lay out a question and its steps, and how to read each step's score."""

    head: str
    """Which model the convention needs: "token-classification" (2 labels) or "causal-lm"."""

    def encode(self, question: str, steps: Sequence[str]) -> PRMInput:
        """The ids for `question` followed by `steps`, and the scored position of each step."""
        ...

    def two_way_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The head's outputs at the scored positions as (wrong, right) logits: (n, V) -> (n, 2)."""
        ...


def _marked_tokens(tokenizer: Any, text: str, marks: Sequence[int]) -> PRMInput:
    """`text` tokenised once; for each character index in `marks`, the index of the token holding it."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [start for start, _ in encoded["offset_mapping"]]
    positions = [max(bisect.bisect_right(starts, mark) - 1, 0) for mark in marks]
    return PRMInput(ids=list(encoded["input_ids"]), positions=positions)


def _single_token(tokenizer: Any, text: str, role: str) -> int:
    """The id of `text` when it is exactly one token, else a VerifierError naming `role`."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise VerifierError(f"the {role} {text!r} must be a single token of the PRM's tokenizer; it encodes to {ids}")
    return int(ids[0])


def step_probabilities(adapter: PRMAdapter, logits: torch.Tensor) -> torch.Tensor:
    """P(step right) from the head's outputs at the scored positions, softmax of (wrong, right): (n, V) -> (n,)."""
    return adapter.two_way_logits(logits).float().softmax(-1)[:, 1]


class SeparatorClassifier:
    """A separator after every step; a 2-way token classifier at its last token, P(correct) = label 1.

    Text: `question + separator + step_1 + separator + ... + step_n + separator` (plain), or, with
    `chat=True`, the steps joined the same way as the assistant's reply after `system` and the
    question as the user's turn, rendered by the tokenizer's chat template (Qwen2.5-Math-PRM).
    """

    head = "token-classification"

    def __init__(self, tokenizer: Any, *, separator: str = "\n", chat: bool = False, system: str | None = None) -> None:
        if not separator:
            raise VerifierError("SeparatorClassifier needs a non-empty separator")
        self.tokenizer, self.separator, self.chat, self.system = tokenizer, separator, chat, system

    def encode(self, question: str, steps: Sequence[str]) -> PRMInput:
        """Question and steps laid out with a separator after each step; one scored position per separator."""
        body = "".join(step + self.separator for step in steps)
        if self.chat:
            messages = [Message(role="user", content=question), Message(role="assistant", content=body)]
            if self.system is not None:
                messages.insert(0, Message(role="system", content=self.system))
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            offset = text.rfind(body)
            if offset < 0:
                raise VerifierError("the PRM's chat template changed the reply's text; cannot locate its steps")
        else:
            text, offset = question + self.separator + body, len(question) + len(self.separator)
        marks, end = [], offset
        for step in steps:
            end += len(step) + len(self.separator)
            marks.append(end - 1)
        return _marked_tokens(self.tokenizer, text, marks)

    def two_way_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """A 2-way head's outputs as they are: label 0 wrong, label 1 right, (n, 2)."""
        return logits


def qwen_math_prm(tokenizer: Any) -> SeparatorClassifier:
    """Qwen2.5-Math-PRM's convention: steps joined by `<extra_0>` in the assistant turn, its system prompt."""
    return SeparatorClassifier(
        tokenizer,
        separator="<extra_0>",
        chat=True,
        system="Please reason step by step, and put your final answer within \\boxed{}.",
    )


class MathShepherd:
    """Math-Shepherd's convention: `question step_1 <tag>\\nstep_2 <tag>\\n...`; P('+') vs '-' at each tag."""

    head = "causal-lm"

    def __init__(self, tokenizer: Any, *, tag: str = "ки", good: str = "+", bad: str = "-") -> None:
        self.tokenizer, self.tag = tokenizer, tag
        _single_token(tokenizer, tag, "step tag")
        self.good, self.bad = _single_token(tokenizer, good, "good label"), _single_token(tokenizer, bad, "bad label")

    def encode(self, question: str, steps: Sequence[str]) -> PRMInput:
        """Each step followed by the tag; the tag's token is each step's scored position."""
        text, marks = question + " ", []
        for step in steps:
            text += f"{step} {self.tag}"
            marks.append(len(text) - 1)
            text += "\n"
        return _marked_tokens(self.tokenizer, text, marks)

    def two_way_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The '-' and '+' logits at the tags: (n, V) -> (n, 2)."""
        return logits[:, [self.bad, self.good]]


class RLHFlow:
    """RLHFlow's convention: step k is user turn k (the question before step 1), each answered '+'.

    The score of step k is P('+') against '-' where the model predicts the assistant's reply to it.
    """

    head = "causal-lm"

    def __init__(self, tokenizer: Any, *, good: str = "+", bad: str = "-") -> None:
        self.tokenizer, self.good_text = tokenizer, good
        self.good, self.bad = _single_token(tokenizer, good, "good label"), _single_token(tokenizer, bad, "bad label")

    def encode(self, question: str, steps: Sequence[str]) -> PRMInput:
        """The conversation with every reply '+'; each scored position is the token before a reply."""
        messages: list[Message] = []
        replies = []
        for k, step in enumerate(steps):
            messages.append(Message(role="user", content=f"{question} {step}" if k == 0 else step))
            prefix = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            replies.append(len(prefix))
            messages.append(Message(role="assistant", content=self.good_text))
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        if any(text[start : start + len(self.good_text)] != self.good_text for start in replies):
            raise VerifierError("the PRM's chat template renders a conversation differently from its prefixes")
        encoded = _marked_tokens(self.tokenizer, text, replies)
        return PRMInput(ids=encoded.ids, positions=[position - 1 for position in encoded.positions])

    def two_way_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The '-' and '+' logits before each reply: (n, V) -> (n, 2)."""
        return logits[:, [self.bad, self.good]]


ADAPTERS: dict[str, Callable[[Any], PRMAdapter]] = {
    "separator": SeparatorClassifier,
    "qwen": qwen_math_prm,
    "math-shepherd": MathShepherd,
    "rlhflow": RLHFlow,
}
"""Adapter names `ProcessVerifier` and `llmenv train prm` accept."""


ADAPTER_KEY = "llmenv_prm_adapter"
"""The config.json key where `llmenv train prm` records the adapter a PRM was trained with."""


def saved_adapter(model: Any) -> str | None:
    """The adapter name a PRM was trained with (its config's `llmenv_prm_adapter`), None when unrecorded."""
    if isinstance(model, torch.nn.Module):
        return getattr(getattr(model, "config", None), ADAPTER_KEY, None)
    try:
        folder = Path(resolve_model_dir(model))
    except ModelNotFoundError:  # a Hub id: nothing local to read
        return None
    for name in ("config.json", LLMENV_CONFIG):  # a whole model's config, else a LoRA adapter's llmenv keys
        if (folder / name).is_file():
            return json.loads((folder / name).read_text()).get(ADAPTER_KEY)
    return None


def _head_parts(model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder trunk and the output head (LM head or token classifier) of a model (peft too)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, "score", None) or getattr(base, "classifier", None) or base.get_output_embeddings()
    trunk = getattr(base, "base_model", None)
    if head is None or trunk is None or trunk is base:
        raise VerifierError(f"{type(base).__name__} is not a decoder with an output head; cannot read step scores")
    return trunk, head


def step_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: torch.Tensor,
    positions: torch.Tensor,
    *,
    bf16: bool = False,
) -> torch.Tensor:
    """The head's outputs at (rows[k], positions[k]) of a right-padded batch: (n, V) float32, the trunk run once."""
    trunk, head = _head_parts(model)
    with torch.autocast(device_type=input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        return head(hidden[rows, positions]).float()  # (n, V)


def _question(task: Task) -> str:
    """The task's question: its last user message."""
    users = [m["content"] for m in task.messages() if m["role"] == "user"]
    return users[-1] if users else ""


class ProcessVerifier:
    """Scores each step of a completion with a PRM; per-step scores in `Verdict.steps`.

    Args:
        model: the PRM (a loaded model, or a folder / Hub id loaded as the adapter's `head` needs).
        adapter: the head convention: an adapter, or a name in `ADAPTERS` ("separator", "qwen",
            "math-shepherd", "rlhflow") built on `tokenizer`; None: the one `llmenv train prm`
            recorded in the model's config, else "separator".
        tokenizer: the PRM's tokenizer (default: the model's folder).
        separator: the completion's step separator, or a callable `text -> [(start, end), ...]`.
        aggregate: how step scores make the reward when there is no outcome verifier (`AGGREGATES`).
        outcome: a verifier whose reward (and `passed`, parts, error) the verdict takes; the step
            scores then ride along as process rewards.
        batch_size: completions per forward pass.
        device: where the model runs.

    `Verdict.parts["prm"]` is the aggregate; `details` hold `step_scores`, `step_texts` and
    `encoding` ("rendered": a PRM reads its own layout of the steps). A completion with no
    non-blank step has no steps and aggregate 0.
    """

    name = "prm"

    def __init__(
        self,
        model: Any,
        adapter: PRMAdapter | str | None = None,
        *,
        tokenizer: Any = None,
        separator: str | Splitter = "\n\n",
        aggregate: str = "min",
        outcome: VerifierFn | None = None,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
    ) -> None:
        if aggregate not in AGGREGATES:
            raise VerifierError(f"aggregate must be one of {sorted(AGGREGATES)}, got {aggregate!r}")
        if batch_size < 1:
            raise VerifierError(f"batch_size must be >= 1, got {batch_size}")
        if tokenizer is None and isinstance(model, torch.nn.Module):
            raise VerifierError("a loaded PRM needs its tokenizer: ProcessVerifier(model, adapter, tokenizer=...)")
        self.tokenizer = load_tokenizer(tokenizer if tokenizer is not None else model)
        if adapter is None:
            adapter = saved_adapter(model) or "separator"
        if isinstance(adapter, str):
            if adapter not in ADAPTERS:
                raise VerifierError(f"unknown PRM adapter {adapter!r}; expected one of {sorted(ADAPTERS)}")
            adapter = ADAPTERS[adapter](self.tokenizer)
        self.adapter = adapter
        if adapter.head == "token-classification":
            self.model = load_token_classifier(model, device=device)
        else:
            self.model = load_model(model, device=device).eval()
            torch.nn.Module.to(self.model, device)  # a loaded model is returned as it is, wherever it is
        self.model.requires_grad_(False)
        self.split: Splitter = separator if callable(separator) else (lambda text: split_steps(text, separator))
        self.aggregate, self.outcome, self.batch_size = aggregate, outcome, batch_size
        self._lock = threading.Lock()  # one forward at a time: the env's worker threads share the model

    def __call__(self, completion: str, task: Task) -> Verdict:
        """The PRM's verdict on one completion."""
        return self.verify_batch([completion], [task])[0]

    def verify_batch(self, completions: Sequence[str], tasks: Sequence[Task]) -> list[Verdict]:
        """One verdict per completion; the PRM scores `batch_size` completions per forward pass."""
        spans = [list(self.split(str(c))) for c in completions]
        texts = [[str(c)[a:b] for a, b in s] for c, s in zip(completions, spans, strict=True)]
        inputs = [self.adapter.encode(_question(t), steps) for t, steps in zip(tasks, texts, strict=True)]
        scores: list[list[float]] = []
        for start in range(0, len(inputs), self.batch_size):
            scores += self._score(inputs[start : start + self.batch_size])
        outcomes = (
            call_verifier_batch(self.outcome, completions, tasks, name="outcome") if self.outcome is not None else None
        )
        verdicts = []
        for row, (step_spans, step_scores) in enumerate(zip(spans, scores, strict=True)):
            aggregate = AGGREGATES[self.aggregate](step_scores) if step_scores else 0.0
            steps = tuple(StepScore(end, score) for (_, end), score in zip(step_spans, step_scores, strict=True))
            details = {"step_scores": step_scores, "step_texts": texts[row], "encoding": "rendered"}
            if outcomes is None:
                verdicts.append(Verdict(aggregate, parts={self.name: aggregate}, details=details, steps=steps))
                continue
            outcome = outcomes[row]
            verdicts.append(
                Verdict(
                    outcome.reward,
                    passed=outcome.passed,
                    parts={**outcome.parts, self.name: aggregate},
                    details={**details, "outcome": dict(outcome.details)},
                    error=outcome.error,
                    steps=steps,
                )
            )
        return verdicts

    def _score(self, inputs: Sequence[PRMInput]) -> list[list[float]]:
        """Step probabilities of each input, one padded forward pass."""
        if not any(item.positions for item in inputs):
            return [[] for _ in inputs]
        width = max(len(item.ids) for item in inputs)
        device = next(self.model.parameters()).device
        input_ids = torch.full((len(inputs), width), self.model.config.pad_token_id or 0, dtype=torch.long)
        attention = torch.zeros((len(inputs), width), dtype=torch.long)
        rows, positions = [], []
        for row, item in enumerate(inputs):
            input_ids[row, : len(item.ids)] = torch.tensor(item.ids)
            attention[row, : len(item.ids)] = 1
            rows += [row] * len(item.positions)
            positions += item.positions
        with self._lock, torch.inference_mode():
            logits = step_logits(
                self.model,
                input_ids.to(device),
                attention.to(device),
                torch.tensor(rows, device=device),
                torch.tensor(positions, device=device),
            )
            probabilities = step_probabilities(self.adapter, logits).cpu().tolist()
        out, used = [], 0
        for item in inputs:
            out.append([float(p) for p in probabilities[used : used + len(item.positions)]])
            used += len(item.positions)
        return out
