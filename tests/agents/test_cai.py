"""Constitutional AI data: the three stages in one conversation, seeded principles, rows the trainers read."""

from __future__ import annotations

import json

import pytest

from llmenv.agents.cai import (
    CAISample,
    constitutional_samples,
    critique_messages,
    preference_rows,
    prompts_from_file,
    prompts_from_task,
    revision_messages,
    sft_rows,
)
from llmenv.agents.policy import HFPolicy
from llmenv.agents.rm import read_pairs
from llmenv.chat import ChatCodec
from llmenv.constitution import load_constitution
from llmenv.errors import DataError
from llmenv.models import load_model
from llmenv.types import Message
from llmenv.verifiers.judge import JudgeReply, PolicyBackend

CONSTITUTION = load_constitution("default")
PROMPTS = [[Message(role="user", content=f"What is {i} + 1?")] for i in range(3)]


class Recording:
    """Passes every call on to a backend and keeps the conversations of each call."""

    time_bounded = False

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def chat(self, conversations):
        self.calls.append([list(c) for c in conversations])
        return self.inner.chat(conversations)


@pytest.fixture(scope="module")
def backend(tiny_dir, tok):
    return PolicyBackend(HFPolicy(load_model(tiny_dir), tok), tok, max_new_tokens=8, temperature=1.0, seed=0)


def test_critique_and_revision_are_asked_in_the_same_conversation_as_the_response(backend):
    recording = Recording(backend)
    samples = constitutional_samples(recording, PROMPTS, CONSTITUTION, samples=2, seed=3, batch_size=16)
    assert len(recording.calls) == 3 and [len(c) for c in recording.calls] == [6, 6, 6]  # one batched call a stage
    initial_asked, critique_asked, revision_asked = recording.calls
    by_name = {p.name: p for p in CONSTITUTION.principles}
    for row, sample in enumerate(samples):
        principle = by_name[sample.principle]
        assert initial_asked[row] == PROMPTS[row // 2] == list(sample.prompt)
        assert critique_asked[row] == critique_messages(sample.prompt, sample.initial, principle)
        assert critique_asked[row][-2:] == [
            {"role": "assistant", "content": sample.initial},
            {"role": "user", "content": principle.critique},
        ]
        assert revision_asked[row] == revision_messages(sample.prompt, sample.initial, sample.critique, principle)
        assert revision_asked[row][-1] == {"role": "user", "content": principle.revision}
        assert sample.error is None and sample.index == row


def test_principles_are_drawn_per_sample_from_the_seed_whatever_the_batch(backend):
    def principles(seed, batch_size):
        return [s.principle for s in constitutional_samples(backend, PROMPTS * 4, CONSTITUTION, seed=seed,
                                                            batch_size=batch_size)]  # fmt: skip

    drawn = principles(0, 12)
    assert drawn == principles(0, 5) and len(set(drawn)) > 1
    assert drawn != principles(1, 12)


def test_pairs_prefer_the_revision_and_read_as_reward_model_pairs(backend, tok, tmp_path):
    samples = constitutional_samples(backend, PROMPTS, CONSTITUTION, samples=2, seed=0)
    pairs, stats = preference_rows(samples)
    assert stats.pairs == len(pairs) > 0 and stats.samples == 6
    for pair in pairs:
        sample = next(s for s in samples if s.revision == pair["chosen"] and s.initial == pair["rejected"])
        assert pair["prompt"] == list(sample.prompt) and pair["principle"] == sample.principle
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in pairs))
    assert len(read_pairs(str(path), ChatCodec(tok))) == len(pairs)
    for row, sample in zip(sft_rows(samples), [s for s in samples if s.revision.strip()]):
        assert row == {"messages": [*sample.prompt, {"role": "assistant", "content": sample.revision}]}


def test_samples_without_a_preference_or_with_a_failed_stage_make_no_pair_and_are_counted():
    prompt = (Message(role="user", content="Hi"),)
    samples = [
        CAISample(prompt, "correct", "Hello", "Fine.", "Hello", 0),
        CAISample(prompt, "correct", "Hello", "Fine.", " ", 1),
        CAISample(prompt, "correct", "Hello", "", "", 2, error="critique: endpoint down"),
        CAISample(prompt, "correct", "Hello", "Rude.", "Hello there!", 3),
    ]
    pairs, stats = preference_rows(samples)
    assert [p["chosen"] for p in pairs] == ["Hello there!"]
    assert (stats.unchanged, stats.empty, stats.errored, stats.pairs) == (1, 1, 1, 1)
    assert [r["messages"][-1]["content"] for r in sft_rows(samples)] == ["Hello", "Hello there!"]


def test_a_failed_stage_is_recorded_on_the_sample():
    class Down:
        time_bounded = True

        def chat(self, conversations):
            return [JudgeReply(None, "endpoint down")] * len(conversations)

    (sample,) = constitutional_samples(Down(), PROMPTS[:1], CONSTITUTION)
    assert sample.error == "initial response: endpoint down" and sample.revision == ""


def test_prompts_come_from_a_task_with_its_system_prompt_or_from_a_file(tok, tmp_path):
    prompts = prompts_from_task("llmenv/arith-demo-v0", tok, n=3, seed=5)
    assert len(prompts) == 3 and all(p[0]["role"] == "system" and p[-1]["role"] == "user" for p in prompts)
    assert (
        prompts
        == prompts_from_task("llmenv/arith-demo-v0", tok, n=3, seed=5)
        != prompts_from_task("llmenv/arith-demo-v0", tok, n=3, seed=6)
    )
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Hi"}\n\n{"prompt": [{"role": "user", "content": "Bye"}]}\n{"prompt": "more"}\n')
    assert prompts_from_file(str(path), n=2) == [
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Bye"}],
    ]
    path.write_text('{"question": "Hi"}\n')
    with pytest.raises(DataError, match="line 1: missing prompt"):
        prompts_from_file(str(path))
    with pytest.raises(DataError, match="--prompts"):
        prompts_from_file(str(tmp_path / "absent.jsonl"))
