"""JudgeVerifier and PairwiseJudge: scales, parse failures as errors, caching, both orders, both backends.

The judge in these tests is a real tiny Llama taught (a few hundred Adam steps, in-process) to give
fixed replies to fixed judge prompts, so every path runs a real model through the real chat template;
the HTTP backend talks to a real server on 127.0.0.1 that answers with the same model.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import numpy as np
import pytest
import torch

import llmenv
from llmenv.agents.grpo import GRPOConfig, train
from llmenv.agents.policy import HFPolicy
from llmenv.chat import ChatCodec
from llmenv.constitution import constitution_from_json, load_constitution
from llmenv.env import LLMEnv
from llmenv.errors import VerifierError
from llmenv.models import tiny_llama
from llmenv.tasks.arith import generate_arith
from llmenv.types import Task
from llmenv.verifiers.base import call_verifier, call_verifier_batch
from llmenv.verifiers.judge import (
    JudgeVerifier,
    Likert,
    OpenAIBackend,
    PairwiseJudge,
    PolicyBackend,
    RubricLevels,
    YesNo,
)

TASK = Task("What is 2 + 3?", answer="5")
RIGHT, WRONG, OFF = "5", "6", "I like turtles"
RUBRIC = RubricLevels(["wrong", "partly right", "right"])
CONSTITUTION = load_constitution("default")
SHORTER = "Which response is shorter?"
CONSTITUTION_REPLIES = {"correct": "Yes", "answers": "Yes", "concise": "Yes", "harmless": "Yes", "honest": "No"}


class Unused:
    """A backend for building prompts only (the prompts do not depend on the backend)."""

    time_bounded = True

    def chat(self, conversations):
        raise AssertionError("not asked")


def lessons() -> list[tuple[list, str]]:
    """Every judge prompt the tests ask, with the reply the tiny judge is taught to give."""
    yes_no = JudgeVerifier(Unused())
    likert = JudgeVerifier(Unused(), scale=Likert(5))
    rubric = JudgeVerifier(Unused(), scale=RUBRIC)
    constitution = JudgeVerifier(Unused(), criteria=CONSTITUTION)
    pairwise = PairwiseJudge(Unused())
    out = [
        (yes_no.judge_messages(RIGHT, TASK)[0], "Yes"),
        (yes_no.judge_messages(WRONG, TASK)[0], "No"),
        (yes_no.judge_messages(OFF, TASK)[0], "Maybe so"),
        (likert.judge_messages(RIGHT, TASK)[0], "4"),
        (rubric.judge_messages(RIGHT, TASK)[0], "3"),
    ]
    for messages, name in zip(constitution.judge_messages(RIGHT, TASK), CONSTITUTION_REPLIES):
        out.append((messages, CONSTITUTION_REPLIES[name]))
    right_first, right_second = pairwise.judge_messages(TASK, RIGHT, WRONG)
    out += [(right_first, "A"), (right_second, "B")]  # consistent: RIGHT both times
    off_first, off_second = pairwise.judge_messages(TASK, RIGHT, OFF)
    out += [(off_first, "A"), (off_second, "A")]  # position bias: whichever is shown first
    vague_first, vague_second = PairwiseJudge(Unused(), criterion=SHORTER).judge_messages(TASK, WRONG, OFF)
    out += [(vague_first, "Neither"), (vague_second, "B")]
    return out


def teach(tok, examples, *, max_steps=400):
    """A tiny Llama trained (Adam, full batch) until greedy decoding gives each example's reply to its prompt."""
    codec = ChatCodec(tok)
    rows = []
    for messages, reply in examples:
        prompt = codec.encode(messages).tolist()
        rows.append((prompt + codec.encode_text(reply) + [tok.eos_token_id], len(prompt)))
    model = tiny_llama(tok, hidden_size=64, layers=2, seed=0).train()
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (seq, start) in enumerate(rows):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, start : len(seq)] = torch.tensor(seq[start:])
        attention[row, : len(seq)] = 1
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    taught, extra = labels[:, 1:] != -100, 20  # then 20 more steps, for a margin under left padding
    for _ in range(max_steps):
        out = model(input_ids=ids, attention_mask=attention, labels=labels)
        if bool((out.logits[:, :-1].argmax(-1) == labels[:, 1:])[taught].all()):
            extra -= 1
            if extra == 0:
                break
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    policy = HFPolicy(model.eval(), tok)
    replies = PolicyBackend(policy, tok).chat([messages for messages, _ in examples])
    assert [r.text for r in replies] == [reply for _, reply in examples], "the tiny judge did not learn its replies"
    return policy


@pytest.fixture(scope="module")
def judge_policy(tok):
    """A tiny Llama taught the replies of `lessons()`."""
    return teach(tok, lessons())


@pytest.fixture
def backend(judge_policy, tok):
    return PolicyBackend(judge_policy, tok)


class Recording:
    """A backend that passes every call on and records how many conversations each call carried."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.time_bounded = inner.time_bounded

    def chat(self, conversations):
        self.calls.append(len(conversations))
        return self.inner.chat(conversations)


def test_yes_no_scores_a_right_answer_1_and_a_wrong_one_0(backend):
    judge = JudgeVerifier(backend)
    right, wrong = judge(RIGHT, TASK), judge(WRONG, TASK)
    assert (right.reward, right.passed, right.error) == (1.0, True, None)
    assert (wrong.reward, wrong.passed, wrong.error) == (0.0, False, None)
    assert right.parts == {"judge": 1.0} and right.details["replies"] == {"judge": "Yes"}
    assert wrong.details["labels"] == {"judge": "no"}


def test_a_reply_that_does_not_parse_is_an_error_verdict_with_the_raw_reply(backend):
    verdict = call_verifier(JudgeVerifier(backend), OFF, TASK)
    assert verdict.error is not None and "did not parse" in verdict.error and "'Maybe so'" in verdict.error
    assert verdict.reward == 0.0 and verdict.passed is None
    assert verdict.details["replies"] == {"judge": "Maybe so"}
    assert not verdict.passes()


def test_likert_and_rubric_replies_map_onto_0_to_1(backend):
    assert JudgeVerifier(backend, scale=Likert(5))(RIGHT, TASK).reward == 0.75  # "4" of 1..5
    rubric = JudgeVerifier(backend, scale=RUBRIC)(RIGHT, TASK)
    assert rubric.reward == 1.0 and rubric.passed is None and rubric.details["labels"] == {"judge": "3"}
    assert (
        "1. wrong\n2. partly right\n3. right"
        in JudgeVerifier(backend, scale=RUBRIC).judge_messages("x", TASK)[0][0]["content"]
    )


@pytest.mark.parametrize(
    ("scale", "reply", "parsed"),
    [
        (YesNo(), "No. Yes would be wrong.", (0.0, "no")),
        (YesNo(), "Yesterday", None),
        (Likert(3), "Rating: 1/3", (0.0, "1")),
        (Likert(3), "0", None),
        (Likert(3), "2.5", None),
        (RubricLevels(["bad", "good"]), "2", (1.0, "2")),
        (RubricLevels(["bad", "good"]), "none", None),
    ],
)
def test_scales_parse_the_first_answer_and_refuse_anything_else(scale, reply, parsed):
    assert scale.parse(reply) == parsed


def test_braces_and_dollars_in_the_completion_and_task_are_copied_as_they_are(backend):
    judge = JudgeVerifier(backend)
    hostile = "{response} ${question} $criterion $$ {0} }{ {{x}}"
    task = Task("Format {name} with $HOME and ${x}?", answer="5")
    prompt = judge.judge_messages(hostile, task)[0][0]["content"]
    assert hostile in prompt and task.prompt in prompt
    assert prompt.count(judge.scale.answer_format) == 1 and prompt.count("Is the response a correct") == 1
    assert judge(hostile, task).details["replies"]["judge"] is not None  # asked, not crashed


def test_templates_with_unknown_or_missing_fields_are_refused_at_construction(backend):
    with pytest.raises(VerifierError, match="unknown \\['answer'\\]"):
        JudgeVerifier(backend, template="$response $answer")
    with pytest.raises(VerifierError, match="missing \\['response'\\]"):
        JudgeVerifier(backend, template="$question")
    with pytest.raises(VerifierError, match="stray"):
        JudgeVerifier(backend, template="$response costs $5")
    assert JudgeVerifier(backend, template="$response costs $$5").judge_messages("x", TASK)[0][0]["content"] == (
        "x costs $5"
    )


def test_the_reference_answer_is_shown_only_when_asked(backend):
    assert "Reference answer" not in JudgeVerifier(backend).judge_messages(RIGHT, TASK)[0][0]["content"]
    shown = JudgeVerifier(backend, reference=True).judge_messages(RIGHT, TASK)[0][0]["content"]
    assert "Reference answer: 5" in shown


def test_verdicts_are_cached_per_prompt_and_completion_and_failures_are_asked_again(backend):
    recording = Recording(backend)
    judge = JudgeVerifier(recording, cache_size=2)
    judge(RIGHT, TASK)
    judge(RIGHT, TASK)
    assert recording.calls == [1]
    judge(OFF, TASK)
    judge(OFF, TASK)  # did not parse: not cached
    assert recording.calls == [1, 1, 1]
    judge(WRONG, TASK)
    assert judge(RIGHT, Task("Another question?")).reward == judge(RIGHT, Task("Another question?")).reward
    assert recording.calls == [1, 1, 1, 1, 1]  # the other question is another prompt: asked once, then cached
    judge(RIGHT, TASK)  # evicted by the two newer entries (cache_size=2): asked again
    assert recording.calls[-1] == 1 and len(recording.calls) == 6


def test_a_batch_goes_to_the_backend_in_one_call_with_duplicates_asked_once(backend):
    recording = Recording(backend)
    judge = JudgeVerifier(recording, cache_size=0)
    verdicts = call_verifier_batch(judge, [RIGHT, WRONG, RIGHT, OFF], [TASK] * 4)
    assert recording.calls == [3]
    assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0, 0.0] and [v.error is None for v in verdicts] == [
        True,
        True,
        True,
        False,
    ]


def test_a_backend_that_raises_gives_error_verdicts_not_an_exception():
    class Broken:
        time_bounded = True

        def chat(self, conversations):
            raise ConnectionError("judge is down")

    verdicts = JudgeVerifier(Broken()).verify_batch([RIGHT, WRONG], [TASK, TASK])
    assert all(v.error and "ConnectionError: judge is down" in v.error and v.reward == 0.0 for v in verdicts)


def test_a_constitution_as_rubric_is_a_reward_with_a_part_per_principle_inside_an_env(backend, tok):
    judge = JudgeVerifier(backend, criteria=CONSTITUTION)
    env = LLMEnv([TASK], judge, tok)
    env.reset(seed=0)
    action = ChatCodec(tok).encode_text(RIGHT) + [tok.eos_token_id]
    _, reward, terminated, _, info = env.step(np.array(action))
    verdict = info["verdict"]
    assert terminated and reward == pytest.approx(0.8) and verdict.error is None and verdict.passed is False
    assert dict(verdict.parts) == {
        **{f"judge/{name}": float(reply == "Yes") for name, reply in CONSTITUTION_REPLIES.items()},
        "judge": pytest.approx(0.8),
    }
    assert verdict.details["replies"] == CONSTITUTION_REPLIES


def test_pairwise_asks_both_orders_and_names_a_winner_only_when_they_agree(backend):
    pairwise = PairwiseJudge(backend)
    agreed, flipped = pairwise.compare_batch([(TASK, RIGHT, WRONG), (TASK, RIGHT, OFF)])
    assert (agreed.winner, agreed.consistent, agreed.preferred, agreed.replies) == (0, True, (0, 0), ("A", "B"))
    assert (flipped.winner, flipped.consistent, flipped.preferred) == (None, False, (0, 1))
    assert flipped.error is None
    swapped = pairwise.compare(TASK, WRONG, RIGHT)  # the same two prompts, so the same replies: RIGHT wins again
    assert (swapped.winner, swapped.consistent) == (1, True)


def test_pairwise_with_an_unparseable_reply_has_no_winner_and_says_why(backend):
    result = PairwiseJudge(backend, criterion=SHORTER).compare(TASK, WRONG, OFF)
    assert result.replies == ("Neither", "B") and result.preferred == (None, 0)
    assert result.winner is None and result.consistent is None
    assert result.error == 'first as A: judge reply did not parse: expected "A" or "B", got \'Neither\''


# -- the OpenAI-compatible backend against real servers on 127.0.0.1 ------------------------------------


def serve(handler_class):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def model_server(judge_policy, tok):
    """An OpenAI-compatible chat endpoint answering with the tiny judge model; records request bodies."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body))
            backend = PolicyBackend(
                judge_policy, tok, max_new_tokens=body["max_tokens"], temperature=body["temperature"]
            )
            text = backend.chat([body["messages"]])[0].text
            payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server, url = serve(Handler)
    yield url, seen
    server.shutdown()


def test_the_http_backend_gives_the_verdicts_the_local_model_gives(model_server, backend):
    url, seen = model_server
    http_judge = JudgeVerifier(OpenAIBackend(url + "/v1", "tiny-judge", api_key="k", max_tokens=16, max_workers=2))
    local = JudgeVerifier(backend)
    completions = [RIGHT, WRONG, OFF]
    remote = http_judge.verify_batch(completions, [TASK] * 3)
    assert [(v.reward, v.error is None) for v in remote] == [(1.0, True), (0.0, True), (0.0, False)]
    assert [v.details["replies"] for v in remote] == [
        v.details["replies"] for v in local.verify_batch(completions, [TASK] * 3)
    ]
    path, auth, body = seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k"
    assert body["model"] == "tiny-judge" and body["temperature"] == 0.0 and body["max_tokens"] == 16
    assert body["messages"] in [http_judge.judge_messages(c, TASK)[0] for c in completions]
    assert http_judge.time_bounded and not local.time_bounded
    pairwise = PairwiseJudge(OpenAIBackend(url, "tiny-judge")).compare(TASK, RIGHT, WRONG)
    assert (pairwise.winner, pairwise.consistent) == (0, True)


@pytest.fixture(scope="module")
def faulty_server():
    """An endpoint that misbehaves by path: an HTTP 500, a non-JSON body, no choices, an unparseable reply, a stall."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            kind = self.path.split("/")[1]
            if kind == "slow":
                time.sleep(1.5)
            status, body = {
                "http500": (500, b"overloaded"),
                "notjson": (200, b"<html>oops</html>"),
                "nochoices": (200, b'{"error": "no model"}'),
                "unparseable": (200, json.dumps({"choices": [{"message": {"content": "Hard to say."}}]}).encode()),
                "slow": (200, json.dumps({"choices": [{"message": {"content": "Yes"}}]}).encode()),
            }[kind]
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except BrokenPipeError:  # the stalled request's client has given up, as it should
                pass

        def log_message(self, *args):
            pass

    server, url = serve(Handler)
    yield url
    server.shutdown()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("http500", "HTTP 500 Internal Server Error: overloaded"),
        ("notjson", "without choices[0].message.content: b'<html>oops</html>'"),
        ("nochoices", "without choices[0].message.content"),
        ("unparseable", 'did not parse: expected "Yes" or "No", got \'Hard to say.\''),
        ("slow", "timed out"),
    ],
)
def test_endpoint_failures_become_verdict_errors_within_the_timeout(faulty_server, kind, message):
    judge = JudgeVerifier(OpenAIBackend(f"{faulty_server}/{kind}", "m", timeout_s=0.5))
    started = time.perf_counter()
    verdict = call_verifier(judge, RIGHT, TASK)
    assert verdict.error is not None and message in verdict.error and verdict.reward == 0.0
    assert time.perf_counter() - started < 1.4


def test_an_unreachable_endpoint_is_an_error_verdict():
    with socket_closed_port() as port:
        verdict = JudgeVerifier(OpenAIBackend(f"http://127.0.0.1:{port}", "m", timeout_s=2))(RIGHT, TASK)
    assert verdict.error is not None and "failed" in verdict.error and "refused" in verdict.error.lower()


class socket_closed_port:
    """A port on 127.0.0.1 that nothing listens on (bound then closed)."""

    def __enter__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc):
        return False


def test_bad_backend_settings_are_refused():
    with pytest.raises(VerifierError, match="http"):
        OpenAIBackend("localhost:8000", "m")
    with pytest.raises(VerifierError, match="timeout_s"):
        OpenAIBackend("http://x", "m", timeout_s=0)
    with pytest.raises(VerifierError, match="Likert"):
        Likert(1)
    with pytest.raises(VerifierError, match="two"):
        RubricLevels(["only"])


@pytest.mark.slow
def test_smollm2_as_judge_gives_a_verdict_or_an_error_for_every_arithmetic_answer():
    judge = JudgeVerifier(PolicyBackend.load("smollm2-135m", max_new_tokens=8))
    tasks = [Task(f"What is {a} + {b}?", answer=str(a + b)) for a, b in [(2, 3), (4, 4)]]
    verdicts = judge.verify_batch([t.answer for t in tasks] + ["0", "0"], tasks + tasks)
    assert len(verdicts) == 4
    for verdict in verdicts:
        assert verdict.error is not None or verdict.reward in (0.0, 1.0)
        assert verdict.details["replies"]["judge"] is not None


# -- a constitution judge as GRPO's reward ----------------------------------------------------------------

TWO_PRINCIPLES = constitution_from_json(
    {
        "name": "two",
        "principles": [
            {"name": "brief", "critique": "Too long?", "revision": "Shorten it.", "criterion": "Is it brief?"},
            {"name": "polite", "critique": "Rude?", "revision": "Be polite.", "criterion": "Is it polite?"},
        ],
    }
)


@pytest.fixture(scope="module")
def constant_judge(tok):
    """A tiny judge taught, on many random responses, to say Yes to "brief" and No to "polite" whatever it reads."""
    rng = np.random.default_rng(0)
    judge = JudgeVerifier(Unused(), criteria=TWO_PRINCIPLES)
    examples = []
    for _ in range(24):
        ids = rng.integers(3, len(tok), size=int(rng.integers(1, 12))).tolist()
        for messages, reply in zip(judge.judge_messages(tok.decode(ids), TASK), ["Yes", "No"]):
            examples.append((messages, reply))
    return teach(tok, examples)


def test_a_constitution_judge_is_grpos_reward_with_every_principle_in_the_metrics(
    constant_judge, tok, tiny_dir, tmp_path
):
    judge = JudgeVerifier(PolicyBackend(constant_judge, tok, max_new_tokens=4), criteria=TWO_PRINCIPLES)
    llmenv.register_task("judge-reward-test-v0", source=generate_arith, verifier=judge, replace=True)
    config = GRPOConfig(task="llmenv/judge-reward-test-v0", model=tiny_dir, task_params={"digits": 1}, steps=1,
                        prompts_per_step=2, group_size=2, max_new_tokens=6, seed=0, out=str(tmp_path))  # fmt: skip
    train(config, progress=False)
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["verifier_error_fraction"] == 0.0
    assert row["reward_mean"] == pytest.approx(0.5) and row["parts/judge"] == pytest.approx(0.5)
    assert row["parts/judge/brief"] == 1.0 and row["parts/judge/polite"] == 0.0
