"""What the learner tests share besides tests/conftest.py's fixtures: tasks with dense and with process rewards."""

from __future__ import annotations

import llmenv
from llmenv.tasks.arith import generate_arith
from llmenv.testing import digit_share
from llmenv.types import StepScore, Task, Verdict
from llmenv.verifiers.base import Rubric
from llmenv.verifiers.format import BoxedFormat


def char_steps(completion: str, task: Task) -> Verdict:
    """Process rewards that vary for a random tiny model: every 3 characters a step, scored by its last character."""
    ends = [*range(3, len(completion), 3), len(completion)] if completion else []
    scores = [ord(completion[end - 1]) % 7 / 6 for end in ends]
    return Verdict(0.0, parts={"outcome": 0.0}, steps=tuple(StepScore(e, s) for e, s in zip(ends, scores)))


llmenv.register_task("steps-test-v0", source=generate_arith, verifier=char_steps, digits=1, replace=True)


llmenv.register_task(
    "digits-test-v0",
    source=generate_arith,
    verifier=Rubric({"correct": (digit_share, 1.0), "format": (BoxedFormat(), 0.5)}),
    replace=True,
)
