"""Constitutional AI data: a response, a critique and a revision per prompt, as SFT records and preference pairs.

`constitutional_samples(backend, prompts, constitution)` asks a chat model (any `ChatBackend`: a local
policy or an OpenAI-compatible endpoint) three times per sample, each turn in the same conversation:
the prompt, then a principle's critique request after the model's initial response, then the
principle's revision request after its critique. One principle is drawn per sample with a
`random.Random` seeded by `seed` and the sample's index, so a run is reproducible and a sample's
principle does not depend on the batch it is in. Each stage is one batched backend call over every
sample. `sft_rows` / `preference_rows` turn samples into the data files DESIGN.md names
(`{messages}` and `{prompt, chosen, rejected}`, chosen = the revision, rejected = the initial response),
which `llmenv train rm --data` and the SFT/DPO trainers read; samples whose revision is empty, equals the
initial response or whose stage failed make no pair and are counted. This module builds data; it never trains.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmenv.agents.data import prompt_messages, read_rows
from llmenv.constitution import Constitution, Principle
from llmenv.errors import ConfigError, DataError
from llmenv.registry import make
from llmenv.types import Message
from llmenv.verifiers.judge import ChatBackend

__all__ = [
    "CAISample",
    "CAIStats",
    "constitutional_samples",
    "critique_messages",
    "preference_rows",
    "prompts_from_file",
    "prompts_from_task",
    "revision_messages",
    "sft_rows",
]

PROMPT_FORMAT = '{"prompt": str | [{"role", "content"}, ...]}'


@dataclass(frozen=True)
class CAISample:
    """One prompt's response, critique and revision under one principle (`error` when a stage failed)."""

    prompt: tuple[Message, ...]
    principle: str
    initial: str
    critique: str
    revision: str
    index: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The sample as a JSON object (the `samples.jsonl` row)."""
        return {
            "prompt": [dict(m) for m in self.prompt],
            "principle": self.principle,
            "initial": self.initial,
            "critique": self.critique,
            "revision": self.revision,
            "index": self.index,
            "error": self.error,
        }


@dataclass
class CAIStats:
    """What the run made: samples, pairs, and why some samples made none."""

    samples: int = 0
    pairs: int = 0
    unchanged: int = 0
    empty: int = 0
    errored: int = 0

    def describe(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.samples} samples, {self.pairs} pairs ({self.unchanged} revisions identical to the initial "
            f"response, {self.empty} empty and {self.errored} samples with a failed stage left out)"
        )


def critique_messages(prompt: Sequence[Message], initial: str, principle: Principle) -> list[Message]:
    """The conversation that asks for a critique: the prompt, the initial response, the critique request."""
    return [*prompt, Message(role="assistant", content=initial), Message(role="user", content=principle.critique)]


def revision_messages(prompt: Sequence[Message], initial: str, critique: str, principle: Principle) -> list[Message]:
    """The conversation that asks for a revision: the critique conversation, the critique, the revision request."""
    return [
        *critique_messages(prompt, initial, principle),
        Message(role="assistant", content=critique),
        Message(role="user", content=principle.revision),
    ]


def constitutional_samples(
    backend: ChatBackend,
    prompts: Sequence[Sequence[Message]],
    constitution: Constitution,
    *,
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    on_batch: Callable[[int], Any] | None = None,
) -> list[CAISample]:
    """`samples` samples per prompt (prompt order, consecutive), in batches of `batch_size` samples."""
    if samples < 1 or batch_size < 1:
        raise ConfigError(f"samples and batch_size must be >= 1, got {samples} and {batch_size}")
    jobs = [(tuple(prompt), i * samples + k) for i, prompt in enumerate(prompts) for k in range(samples)]
    out: list[CAISample] = []
    for start in range(0, len(jobs), batch_size):
        out += _batch(backend, jobs[start : start + batch_size], constitution, seed)
        if on_batch is not None:
            on_batch(len(out))
    return out


def _batch(
    backend: ChatBackend, jobs: list[tuple[tuple[Message, ...], int]], constitution: Constitution, seed: int
) -> list[CAISample]:
    """The three stages over one batch; a sample whose stage failed keeps what it has and records the error."""
    principles = [constitution.draw(random.Random(f"{seed}:{index}")) for _, index in jobs]
    errors: list[str | None] = [None] * len(jobs)

    def stage(conversations: list[list[Message]], what: str) -> list[str]:
        texts = []
        for row, reply in enumerate(backend.chat(conversations)):
            if reply.error is not None and errors[row] is None:
                errors[row] = f"{what}: {reply.error}"
            texts.append(reply.text or "")
        return texts

    initial = stage([list(prompt) for prompt, _ in jobs], "initial response")
    critique = stage([critique_messages(p, r, pr) for (p, _), r, pr in zip(jobs, initial, principles)], "critique")
    revision = stage(
        [revision_messages(p, r, c, pr) for (p, _), r, c, pr in zip(jobs, initial, critique, principles)], "revision"
    )
    return [
        CAISample(prompt, pr.name, r, c, v, index, error)
        for (prompt, index), pr, r, c, v, error in zip(jobs, principles, initial, critique, revision, errors)
    ]


def sft_rows(samples: Sequence[CAISample]) -> list[dict[str, Any]]:
    """`{"messages": [...prompt, assistant(revision)]}` for every sample with a non-empty revision and no error."""
    return [
        {"messages": [*(dict(m) for m in s.prompt), {"role": "assistant", "content": s.revision}]}
        for s in samples
        if s.error is None and s.revision.strip()
    ]


def preference_rows(samples: Sequence[CAISample]) -> tuple[list[dict[str, Any]], CAIStats]:
    """`{"prompt", "chosen": revision, "rejected": initial, "principle"}` rows, and what was left out."""
    stats, rows = CAIStats(samples=len(samples)), []
    for sample in samples:
        if sample.error is not None:
            stats.errored += 1
        elif not sample.revision.strip():
            stats.empty += 1
        elif sample.revision.strip() == sample.initial.strip():
            stats.unchanged += 1
        else:
            rows.append(
                {
                    "prompt": [dict(m) for m in sample.prompt],
                    "chosen": sample.revision,
                    "rejected": sample.initial,
                    "principle": sample.principle,
                }
            )
    stats.pairs = len(rows)
    return rows, stats


def prompts_from_task(
    task_id: str, tokenizer: Any, *, n: int, seed: int = 0, params: dict[str, Any] | None = None
) -> list[list[Message]]:
    """The conversations of `n` tasks of a registered task (env seeds seed, seed+1, ...), system prompt included."""
    env = make(task_id, tokenizer=tokenizer, **(params or {}))
    prompts = []
    for i in range(n):
        _, info = env.reset(seed=seed + i)
        prompts.append([Message(role=m["role"], content=m["content"]) for m in info["messages"]])
    env.close()
    return prompts


def prompts_from_file(path: str, *, n: int | None = None) -> list[list[Message]]:
    """The prompts of a JSONL file of `{"prompt": str | [messages]}` rows (the first `n`, or all)."""
    if not Path(path).expanduser().is_file():
        raise DataError(f"--prompts {path}: no such file; expected a JSONL file of {PROMPT_FORMAT}")
    prompts = []
    for where, row in read_rows(path, PROMPT_FORMAT):
        if "prompt" not in row:
            raise DataError(f"{where}: missing prompt; expected {PROMPT_FORMAT}")
        prompts.append(prompt_messages(row["prompt"], where))
        if n is not None and len(prompts) == n:
            break
    if not prompts:
        raise DataError(f"--prompts {path} holds no prompts; expected one per line: {PROMPT_FORMAT}")
    return prompts
