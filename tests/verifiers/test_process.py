"""ProcessVerifier: exact step splits, each adapter scores the tokens its convention says, dense rewards land right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmenv.env import LLMEnv
from llmenv.errors import VerifierError
from llmenv.models import load_token_classifier, tiny_llama
from llmenv.testing import tiny_tokenizer
from llmenv.types import StepScore, Task, Verdict
from llmenv.verifiers.base import Rubric
from llmenv.verifiers.process import (
    MathShepherd,
    ProcessVerifier,
    RLHFlow,
    SeparatorClassifier,
    qwen_math_prm,
    split_steps,
)

TASK = Task("Compute (3 + 4) * 2.", answer="14")
STEPS_TEXT = "3 + 4 = 7\n\n7 * 2 = 14\n\nThe answer is 14."


@pytest.fixture(scope="module")
def prm_tok():
    """The tiny tokenizer with Math-Shepherd's tag and Qwen's separator as single tokens."""
    tok = tiny_tokenizer()
    tok.add_tokens(["ки", "<extra_0>"])
    return tok


@pytest.fixture(scope="module")
def causal_prm(prm_tok):
    return tiny_llama(prm_tok, seed=1)


@pytest.fixture(scope="module")
def classifier_prm(prm_tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-lm")
    tiny_llama(prm_tok, seed=2).save_pretrained(path)
    torch.manual_seed(0)
    return load_token_classifier(path)  # the trunk under a new 2-way token head


def plain_outputs(model, ids):
    """The model's full output over one unpadded sequence, the plain way: (T, V)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_split_steps_gives_trimmed_spans_of_non_blank_steps():
    text = "  a = 1\n\n\n\nb = 2  \n\n   \n\nc"
    spans = split_steps(text)
    assert [text[a:b] for a, b in spans] == ["a = 1", "b = 2", "c"]
    assert split_steps("") == [] and split_steps("one step") == [(0, 8)]
    with pytest.raises(VerifierError, match="non-empty"):
        split_steps("x", "")


def test_math_shepherd_reads_plus_against_minus_at_each_tag(prm_tok, causal_prm):
    adapter = MathShepherd(prm_tok)
    encoded = adapter.encode("Q?", ["s1", "s2", "s3"])
    tag = prm_tok.convert_tokens_to_ids("ки")
    assert [encoded.ids[p] for p in encoded.positions] == [tag] * 3
    assert [i for i, t in enumerate(encoded.ids) if t == tag] == encoded.positions
    assert prm_tok.decode(encoded.ids) == "Q? s1 ки\ns2 ки\ns3 ки\n"
    verifier = ProcessVerifier(causal_prm, adapter, tokenizer=prm_tok, separator="\n")
    logits = plain_outputs(causal_prm, encoded.ids)
    plus, minus = prm_tok.encode("+", add_special_tokens=False)[0], prm_tok.encode("-", add_special_tokens=False)[0]
    expected = [torch.softmax(logits[p, [plus, minus]], -1)[0].item() for p in encoded.positions]
    verdict = verifier("s1\ns2\ns3", Task("Q?"))
    assert verdict.details["step_scores"] == pytest.approx(expected, abs=1e-5)
    assert [s.end for s in verdict.steps] == [2, 5, 8]


def test_math_shepherd_refuses_a_tag_that_is_not_one_token(prm_tok):
    with pytest.raises(VerifierError, match="single token"):
        MathShepherd(prm_tok, tag="<not one token>")


@pytest.mark.parametrize("make", [SeparatorClassifier, qwen_math_prm], ids=["plain", "qwen"])
def test_separator_classifier_reads_label_one_at_each_separator(prm_tok, classifier_prm, make):
    adapter = make(prm_tok)
    steps = ["a = 1", "b = a + 1", "so b = 2"]
    encoded = adapter.encode("Q?", steps)
    assert len(encoded.positions) == 3
    for position, step in zip(encoded.positions, steps):  # the scored token closes its step's separator
        assert prm_tok.decode(encoded.ids[: position + 1]).endswith(step + adapter.separator)
    if make is qwen_math_prm:
        extra = prm_tok.convert_tokens_to_ids("<extra_0>")
        assert [i for i, t in enumerate(encoded.ids) if t == extra] == encoded.positions
        assert "Please reason step by step" in prm_tok.decode(encoded.ids)
    verifier = ProcessVerifier(classifier_prm, adapter, tokenizer=prm_tok, separator="\n")
    logits = plain_outputs(classifier_prm, encoded.ids)
    expected = [torch.softmax(logits[p], -1)[1].item() for p in encoded.positions]
    assert verifier("\n".join(steps), Task("Q?")).details["step_scores"] == pytest.approx(expected, abs=1e-5)


def test_rlhflow_scores_the_position_that_predicts_each_reply(prm_tok, causal_prm):
    adapter = RLHFlow(prm_tok)
    encoded = adapter.encode("Q?", ["s1", "s2"])
    plus = prm_tok.encode("+", add_special_tokens=False)[0]
    assert [encoded.ids[p + 1] for p in encoded.positions] == [plus, plus]
    text = prm_tok.decode(encoded.ids[: encoded.positions[1] + 1], skip_special_tokens=False)
    assert text.count("<|im_start|>user") == 2 and "Q? s1" in text and text.rstrip().endswith("assistant")
    logits = plain_outputs(causal_prm, encoded.ids)
    minus = prm_tok.encode("-", add_special_tokens=False)[0]
    expected = [torch.softmax(logits[p, [plus, minus]], -1)[0].item() for p in encoded.positions]
    verifier = ProcessVerifier(causal_prm, adapter, tokenizer=prm_tok, separator="\n")
    assert verifier("s1\ns2", Task("Q?")).details["step_scores"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("aggregate", ["min", "prod", "last", "mean"])
def test_reward_is_the_aggregate_and_batches_equal_single_calls(prm_tok, causal_prm, aggregate):
    verifier = ProcessVerifier(causal_prm, "math-shepherd", tokenizer=prm_tok, aggregate=aggregate, batch_size=2)
    texts = [STEPS_TEXT, "just one step", "", "a\n\nb\n\nc\n\nd"]
    batched = verifier.verify_batch(texts, [TASK] * len(texts))
    for text, verdict in zip(texts, batched):
        single = verifier(text, TASK)
        assert single.details["step_scores"] == pytest.approx(verdict.details["step_scores"], abs=1e-5)
        scores = verdict.details["step_scores"]
        assert len(verdict.steps) == len(scores) == len(split_steps(text))
        want = (
            {"min": min, "prod": np.prod, "last": lambda s: s[-1], "mean": np.mean}[aggregate](scores) if scores else 0
        )
        assert verdict.reward == pytest.approx(want) and verdict.parts["prm"] == pytest.approx(want)
        assert all(0 < s.score < 1 for s in verdict.steps)
    ends = [STEPS_TEXT[: s.end].rsplit("\n", 1)[-1] for s in batched[0].steps]
    assert ends == ["3 + 4 = 7", "7 * 2 = 14", "The answer is 14."]


def exact_fourteen(completion: str, task: Task) -> Verdict:
    ok = completion.strip().endswith(task.answer + ".")
    return Verdict(float(ok), passed=ok, parts={"correct": float(ok)})


def test_an_outcome_verifier_gives_the_reward_and_the_steps_ride_along(prm_tok, causal_prm):
    verifier = ProcessVerifier(causal_prm, "math-shepherd", tokenizer=prm_tok, outcome=exact_fourteen)
    verdict = verifier(STEPS_TEXT, TASK)
    assert verdict.reward == 1.0 and verdict.passed is True and len(verdict.steps) == 3
    assert set(verdict.parts) == {"correct", "prm"} and verdict.parts["prm"] == min(verdict.details["step_scores"])
    wrong = verifier("3 + 4 = 8\n\nThe answer is 16.", TASK)
    assert wrong.reward == 0.0 and wrong.passed is False and len(wrong.steps) == 2


def test_a_crashing_outcome_verifier_is_an_error_on_the_verdict(prm_tok, causal_prm):
    def broken(completion: str, task: Task) -> float:
        raise RuntimeError("boom")

    verdict = ProcessVerifier(causal_prm, "math-shepherd", tokenizer=prm_tok, outcome=broken)(STEPS_TEXT, TASK)
    assert verdict.error is not None and "boom" in verdict.error and len(verdict.steps) == 3


def test_in_an_env_each_step_score_sits_on_the_policy_token_ending_the_step(prm_tok, causal_prm):
    verifier = ProcessVerifier(causal_prm, "math-shepherd", tokenizer=prm_tok)
    env = LLMEnv([TASK], verifier, prm_tok)
    obs, _ = env.reset(seed=0)
    action = prm_tok.encode(STEPS_TEXT, add_special_tokens=False) + [prm_tok.eos_token_id]
    _, reward, *_, info = env.step(np.asarray(action))
    trajectory = env.trajectory
    scores = info["verdict"].details["step_scores"]
    assert [trajectory.token_rewards[i] for i in trajectory.step_ends] == pytest.approx(scores)
    for index, step in zip(trajectory.step_ends, ["3 + 4 = 7", "7 * 2 = 14", "The answer is 14."]):
        assert prm_tok.decode(trajectory.tokens[len(obs) : index + 1].tolist()).endswith(step)
    assert trajectory.reward_per_token().sum() == pytest.approx(reward + sum(scores), abs=1e-5)


def test_a_rubric_keeps_the_weighted_step_scores(prm_tok, causal_prm):
    prm = ProcessVerifier(causal_prm, "math-shepherd", tokenizer=prm_tok)
    rubric = Rubric({"correct": (exact_fourteen, 1.0), "prm": (prm, 0.5)})
    verdict = rubric(STEPS_TEXT, TASK)
    alone = prm(STEPS_TEXT, TASK)
    assert [s.end for s in verdict.steps] == [s.end for s in alone.steps]
    assert [s.score for s in verdict.steps] == pytest.approx([0.5 * s.score for s in alone.steps])


def test_bad_configuration_is_a_clear_error(prm_tok, causal_prm):
    with pytest.raises(VerifierError, match="unknown PRM adapter"):
        ProcessVerifier(causal_prm, "shepherd", tokenizer=prm_tok)
    with pytest.raises(VerifierError, match="aggregate"):
        ProcessVerifier(causal_prm, "math-shepherd", tokenizer=prm_tok, aggregate="max")
    with pytest.raises(VerifierError, match="needs its tokenizer"):
        ProcessVerifier(causal_prm, "math-shepherd")
    with pytest.raises(ValueError, match="after the completion's first character"):
        StepScore(0, 1.0)
