"""Tiny, real components for fast tests: a byte-level BPE tokenizer trained in-process with ChatML.

Tests of environments, verifiers and learners need a real tokenizer (real merges, real special
tokens, a real chat template) but not a 49k vocabulary. `tiny_tokenizer()` trains one in about a
tenth of a second from a built-in corpus; `fake_task()` registers the one small task that wrapper,
vector and learner tests share; `write_jsonl` and `metric_rows` write a learner's data and read its
log, `assert_same_run` checks a resumed run against an uninterrupted one. Nothing here is used by the
library at run time.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

from llmenv.chat import DEFAULT_CHAT_TEMPLATE
from llmenv.types import Task, Verdict

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "Compute 12 + 34 * 5 - 6 / 2. Put the final answer in \\boxed{}.",
    "The answer is \\boxed{42}. Reason step by step, then answer.",
    "Using the numbers [19, 36, 55, 7], create an equation that equals 65.",
    "<think>First add the numbers, then multiply.</think> The result is 1234567890.",
    "You are a helpful assistant. user assistant system tool",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Let $x$ be a real number such that \\frac{1}{2} x^2 + \\sqrt{3} = \\pi. Find x.",
    '{"name": "calculator", "arguments": {"expression": "2 + 3"}}',
]


@functools.cache
def _trained(vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )


def tiny_tokenizer(vocab_size: int = 400, *, chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens (and template unless told otherwise)."""
    import copy

    tok = copy.deepcopy(_trained(vocab_size))
    if not chat_template:
        tok.chat_template = None
    return tok


def exact_answer(completion: str, task: Task) -> Verdict:
    """Reward 1 when the completion, stripped, is the task's answer (the fake task's default verifier)."""
    ok = completion.strip() == task.answer
    return Verdict(float(ok), passed=ok, parts={"exact": float(ok)})


def digit_share(completion: str, task: Task) -> float:
    """A dense reward a random tiny model gets signal from: the share of digits in its completion."""
    return sum(ch.isdigit() for ch in completion) / max(len(completion), 1)


def fake_task(
    name: str = "fake-v0",
    *,
    verifier: Callable[[str, Task], Any] = exact_answer,
    count: int = 8,
    env: str = "single_turn",
    **defaults: Any,
) -> str:
    """Register (or replace) `llmenv-test/<name>`, a tiny task for wrapper, vector and learner tests.

    Task i asks to repeat the number i and has answer `str(i)`; `verifier` defaults to `exact_answer`.
    Returns the full task id, for `llmenv.make` / `VectorLLMEnv`.
    """
    from llmenv.registry import register_task  # noqa: PLC0415 - the registry imports every env class

    tasks = [Task(f"Repeat the number {i}.", answer=str(i), meta={"i": i}) for i in range(count)]
    return register_task(f"llmenv-test/{name}", source=tasks, verifier=verifier, env=env, replace=True, **defaults)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> str:
    """Write `rows` as JSON lines to `path`; the path as a string (a `--data` value)."""
    Path(path).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def metric_rows(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a run's `out/metrics.jsonl`, one per step."""
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(straight: str | os.PathLike[str], resumed: str | os.PathLike[str], key: str = "loss") -> None:
    """Assert two runs ended alike: the same final weights (to 1e-6) and the same `key` at every logged step."""
    import torch  # noqa: PLC0415 - only the learner tests need it
    from safetensors.torch import load_file  # noqa: PLC0415

    expected = load_file(Path(straight) / "final" / "model.safetensors")
    got = load_file(Path(resumed) / "final" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6)
    assert [r[key] for r in metric_rows(resumed)] == [r[key] for r in metric_rows(straight)]
