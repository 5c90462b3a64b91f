"""Built-in multi-turn tasks: `llmenv/guess-number-v0`, `llmenv/math-retry-v0` and `llmenv/arith-retry-demo-v0`.

guess-number: the env holds a seeded number in 1..100, the model guesses in `\\boxed{}` and hears
"higher" or "lower"; 7 turns are exactly enough for binary search, so only a good strategy wins.
math-retry: an arithmetic problem where a wrong answer gets feedback and another attempt, with
the reward discounted by the attempts used; arith-retry-demo is its one-digit +/- form with the
demo's system prompt and shaped reward, small enough for a 135M model to learn on a CPU. Each task
is a generator, a verifier and a responder; the turn mechanics belong to `llmenv.dialogue`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from llmenv.dialogue import EnvReply, Responder, TurnContext
from llmenv.errors import TaskConfigError
from llmenv.tasks.arith import generate_arith
from llmenv.types import Task, Verdict
from llmenv.verifiers.math import extract_answer


def generate_guess(rng: np.random.Generator, *, low: int = 1, high: int = 100) -> Task:
    """A secret integer in [low, high] and the rules of the game."""
    if not low < high:
        raise TaskConfigError(f"need low < high, got low={low}, high={high}")
    secret = int(rng.integers(low, high + 1))
    prompt = (
        f"I am thinking of an integer between {low} and {high}. Guess it. After each guess I will say "
        "whether my number is higher or lower. Write each guess as \\boxed{N}."
    )
    return Task(prompt=prompt, answer=str(secret), meta={"low": low, "high": high})


class GuessVerifier:
    """Parses the last boxed integer and compares it with the secret; details say which way to go."""

    time_bounded = True

    def __call__(self, completion: str, task: Task) -> Verdict:
        """1.0 for the secret, else 0 with details["direction"] ("higher"/"lower") or a reason."""
        raw = extract_answer(completion, mode="anchored")
        try:
            guess = int(raw.strip()) if raw is not None else None
        except ValueError:
            guess = None
        if guess is None:
            return Verdict(
                0.0, passed=False, parts={"correct": 0.0}, details={"reason": "no integer guess in \\boxed{}"}
            )
        secret = int(task.answer or 0)
        direction = "correct" if guess == secret else ("higher" if secret > guess else "lower")
        correct = float(guess == secret)
        return Verdict(
            correct, passed=bool(correct), parts={"correct": correct}, details={"guess": guess, "direction": direction}
        )


def respond_to_guess(ctx: TurnContext) -> EnvReply:
    """Say higher/lower, ask again for a malformed guess, end when the guess is right."""
    assert ctx.verdict is not None
    if ctx.verdict.passed:
        return EnvReply(done=True, reason="guessed")
    direction = ctx.verdict.details.get("direction")
    if direction is None:
        return EnvReply(messages=[{"role": "user", "content": "I could not read a guess. Write it as \\boxed{N}."}])
    guess = ctx.verdict.details["guess"]
    return EnvReply(messages=[{"role": "user", "content": f"My number is {direction} than {guess}."}])


def generate_retry_problem(rng: np.random.Generator, *, digits: int = 2, terms: int = 3, ops: str = "+-*") -> Task:
    """An arithmetic problem (three terms of +, - and * by default) for the retry game."""
    return generate_arith(rng, digits=digits, ops=ops, terms=terms)


def _extracted(verdict: Verdict, part: str | None = None) -> str | None:
    """The answer a math verdict read: `details["extracted"]`, or a Rubric part's (`details[part]["extracted"]`).

    With `part` only that part's reading counts; without it, the first part that read one.
    """
    if part is not None:
        reading = verdict.details.get(part)
        if not isinstance(reading, Mapping):
            named = [k for k, v in verdict.details.items() if isinstance(v, Mapping)]
            raise TaskConfigError(f"answer_part {part!r} is not a Rubric part of this verdict; its parts: {named}")
        found = reading.get("extracted")
        return str(found) if found else None
    if verdict.details.get("extracted"):
        return str(verdict.details["extracted"])
    parts = (d for d in verdict.details.values() if isinstance(d, dict) and d.get("extracted"))
    return next((str(d["extracted"]) for d in parts), None)


def retry_responder(discount: float = 0.5, *, shaped: bool = False, answer_part: str | None = None) -> Responder:
    """Reward `discount ** (attempt - 1)` for a right answer; otherwise say it was wrong and ask again.

    `shaped=True` pays every attempt `discount ** (attempt - 1)` times the verdict's own reward, so a
    shaped verifier's partial credit (a boxed but wrong number) counts on failed attempts too.
    `answer_part` names the Rubric part whose reading is the answer (the one that decides `passed`):
    the feedback then quotes only what that part read, so a right number left unboxed (which a
    fallback part reads, and which did not pass) is answered "no answer in \\boxed{}", never "7 is not correct".
    """
    if not 0 < discount <= 1:
        raise TaskConfigError(f"discount must be in (0, 1], got {discount}")

    def respond(ctx: TurnContext) -> EnvReply:
        assert ctx.verdict is not None
        weight = discount ** (ctx.turn - 1)
        if ctx.verdict.passed:
            return EnvReply(reward=weight * (ctx.verdict.reward if shaped else 1.0), done=True, reason="solved")
        extracted = _extracted(ctx.verdict, answer_part)
        if extracted:
            said = f"Your answer {extracted} is not correct. Check your work and try again."
        else:
            said = "I could not find an answer in \\boxed{}. Write your final answer as \\boxed{N}."
        reward = weight * ctx.verdict.reward if shaped else 0.0
        return EnvReply(reward=reward, messages=[{"role": "user", "content": said}])

    return respond
