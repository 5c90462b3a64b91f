"""What the learner tests share besides tests/conftest.py's fixtures: a registered task with process rewards."""

from __future__ import annotations

import llmenv
from llmenv.tasks.arith import generate_arith
from llmenv.types import StepScore, Task, Verdict


def char_steps(completion: str, task: Task) -> Verdict:
    """Process rewards that vary for a random tiny model: every 3 characters a step, scored by its last character."""
    ends = [*range(3, len(completion), 3), len(completion)] if completion else []
    scores = [ord(completion[end - 1]) % 7 / 6 for end in ends]
    return Verdict(0.0, parts={"outcome": 0.0}, steps=tuple(StepScore(e, s) for e, s in zip(ends, scores)))


llmenv.register_task("steps-test-v0", source=generate_arith, verifier=char_steps, digits=1, replace=True)
