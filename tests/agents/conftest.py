"""Fixtures the learner tests share: a saved tiny model folder to train from, and a task with process rewards."""

from __future__ import annotations

import pytest

import llmenv
from llmenv.models import tiny_llama
from llmenv.tasks.arith import generate_arith
from llmenv.types import StepScore, Task, Verdict


def char_steps(completion: str, task: Task) -> Verdict:
    """Process rewards that vary for a random tiny model: every 3 characters a step, scored by its last character."""
    ends = [*range(3, len(completion), 3), len(completion)] if completion else []
    scores = [ord(completion[end - 1]) % 7 / 6 for end in ends]
    return Verdict(0.0, parts={"outcome": 0.0}, steps=tuple(StepScore(e, s) for e, s in zip(ends, scores)))


llmenv.register_task("steps-test-v0", source=generate_arith, verifier=char_steps, digits=1, replace=True)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tok):
    """A folder holding a tiny random Llama (seed 0) and the tiny tokenizer: a `--model` any learner loads."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
