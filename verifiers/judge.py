"""Rewards from a judge model: pointwise verdicts (yes/no, Likert, rubric levels) and pairwise preferences.

`JudgeVerifier(backend)` is a verifier: it renders a judge prompt for each completion (the task's
conversation, the response and a criterion, or one prompt per principle of a `Constitution`), asks
a chat model through a backend, and parses the reply on a `Scale` into a score in [0, 1]. A reply
that does not parse, a backend that fails or times out, is an error on the `Verdict` (reward 0,
`error` set, the raw reply in `details`): never a silent 0 and never an exception. `PairwiseJudge`
asks which of two completions is better in both orders and reports a winner only when the two
answers agree; a flip is flagged (`consistent=False`), never resolved to one side.

Prompts are `string.Template` texts filled in one pass, so braces and dollar signs in a completion or
a task are copied as they are. Answers are cached per judge prompt (which holds the task's prompt and
the completion) in a bounded LRU; only answers that parsed are kept, so a failure is asked again.

Backends turn conversations into replies: `PolicyBackend` runs any `Policy` (a local transformers
model through `HFPolicy`, greedy by default) over the model's own chat template; `OpenAIBackend`
posts to an OpenAI-compatible `/chat/completions` endpoint with the standard library, under a hard
wall-clock bound. This module judges; it never trains and never samples the policy being judged.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import math
import re
import string
import threading
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llmenv.agents.policy import HFPolicy, Policy, SamplingParams
from llmenv.chat import shared_codec
from llmenv.constitution import Constitution
from llmenv.deadline import describe_exception
from llmenv.errors import VerifierError
from llmenv.models import load_model, load_tokenizer
from llmenv.types import Completion, Message, Task, Verdict

__all__ = [
    "DEFAULT_CRITERION",
    "DEFAULT_PAIRWISE_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "ChatBackend",
    "JudgeReply",
    "JudgeVerifier",
    "Likert",
    "OpenAIBackend",
    "PairwiseJudge",
    "PairwiseResult",
    "PolicyBackend",
    "RubricLevels",
    "Scale",
    "YesNo",
    "conversation_text",
]

DEFAULT_CRITERION = "Is the response a correct answer to the question?"

DEFAULT_TEMPLATE = """Here is a question and a response to it.

[Question]
$question
[End of question]

[Response]
$response
[End of response]
$reference
$criterion $answer_format"""
"""The pointwise judge prompt. Fields: `$question`, `$response`, `$reference` (empty unless the judge is given the
task's answer), `$criterion` and `$answer_format` (what the scale asks the judge to reply). The delimiters keep a
small judge from obeying instructions inside the question: without them SmolLM2-135M-Instruct answered the
arithmetic question ("The answer is \\boxed{7}.") instead of judging in 7 replies of 8."""

DEFAULT_PAIRWISE_TEMPLATE = """Here is a question and two responses to it.

[Question]
$question
[End of question]

[Response A]
$response_a
[End of response A]

[Response B]
$response_b
[End of response B]

$criterion $answer_format"""
"""The pairwise judge prompt. Fields: `$question`, `$response_a`, `$response_b`, `$criterion`, `$answer_format`."""

DEFAULT_PAIRWISE_CRITERION = "Which response answers the question better?"

_POINTWISE_FIELDS = frozenset({"question", "response", "reference", "criterion", "answer_format"})
_PAIRWISE_FIELDS = frozenset({"question", "response_a", "response_b", "criterion", "answer_format"})


# -- scales: how the judge is asked to answer, and how a reply becomes a score ----------------------


class Scale(Protocol):
    """A way of answering: the instruction put in the prompt and the parser of the reply."""

    name: str
    answer_format: str
    """What the judge is told to reply (the `$answer_format` field)."""
    expected: str
    """The accepted replies, for the error message of a reply that does not parse."""

    def parse(self, reply: str) -> tuple[float, str] | None:
        """The reply's score in [0, 1] and its label, or None when it does not parse."""
        ...


_WORD = re.compile(r"[A-Za-z]+|\d+")


class YesNo:
    """Yes scores 1, no scores 0: the first word of the reply that is "yes" or "no" (any case) decides.

    >>> YesNo().parse("Yes, it is."), YesNo().parse("**No**"), YesNo().parse("maybe")
    ((1.0, 'yes'), (0.0, 'no'), None)
    """

    name = "yes_no"
    answer_format = 'Reply with one word: "Yes" or "No".'
    expected = '"Yes" or "No"'

    def parse(self, reply: str) -> tuple[float, str] | None:
        """1.0 for yes, 0.0 for no (the first of the two words in the reply), None when neither appears."""
        for word in _WORD.findall(reply):
            if word.lower() in ("yes", "no"):
                return (1.0 if word.lower() == "yes" else 0.0), word.lower()
        return None


class Likert:
    """A rating from 1 (worst) to `points` (best), mapped to [0, 1]: `(rating - 1) / (points - 1)`.

    >>> Likert(5).parse("I'd say 4."), Likert(5).parse("7"), Likert(5).parse("good")
    ((0.75, '4'), None, None)
    """

    name = "likert"

    def __init__(self, points: int = 5) -> None:
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise VerifierError(f"a Likert scale needs an integer number of points >= 2, got {points!r}")
        self.points = points
        self.answer_format = f"Rate it from 1 (worst) to {points} (best). Reply with the number only."
        self.expected = f"a whole number from 1 to {points}"

    def parse(self, reply: str) -> tuple[float, str] | None:
        """The first whole number of the reply, when it is in 1..points, as a score in [0, 1]."""
        return _first_number_in_range(reply, self.points)


class RubricLevels:
    """Levels described worst to best; the judge names one by its number, which scores `index / (levels - 1)`.

    >>> rubric = RubricLevels(["wrong", "partly right", "right"])
    >>> rubric.parse("3"), rubric.parse("Level 2"), rubric.parse("4")
    ((1.0, '3'), (0.5, '2'), None)
    """

    name = "rubric"

    def __init__(self, levels: Sequence[str]) -> None:
        if isinstance(levels, str) or len(levels) < 2 or not all(isinstance(x, str) and x.strip() for x in levels):
            raise VerifierError(f"a rubric needs at least two non-empty level descriptions, got {levels!r:.200}")
        self.levels = [level.strip() for level in levels]
        listing = "\n".join(f"{i}. {level}" for i, level in enumerate(self.levels, 1))
        self.answer_format = (
            f"Levels, from worst to best:\n{listing}\nWhich level describes the response? Reply with its number only."
        )
        self.expected = f"a level number from 1 to {len(self.levels)}"

    def parse(self, reply: str) -> tuple[float, str] | None:
        """The first whole number of the reply, when it names a level, as `(number - 1) / (levels - 1)`."""
        return _first_number_in_range(reply, len(self.levels))


def _first_number_in_range(reply: str, top: int) -> tuple[float, str] | None:
    """The first whole number in `reply` as a score `(n - 1) / (top - 1)`, None when absent or outside 1..top."""
    found = re.search(r"(?<![\d.])\d+(?!\d|\.\d)", reply)  # a whole number, not part of a decimal
    if found is None or not 1 <= int(found.group()) <= top:
        return None
    return (int(found.group()) - 1) / (top - 1), str(int(found.group()))


# -- backends: conversations in, reply texts out ----------------------------------------------------


@dataclass(frozen=True)
class JudgeReply:
    """What a backend answered to one conversation: the reply's text, or why there is none."""

    text: str | None
    error: str | None = None


class ChatBackend(Protocol):
    """A chat model behind the judge: one reply per conversation, in order; failures are replies with `error`."""

    time_bounded: bool
    """True when `chat` bounds its own wall-clock time (see `llmenv.verifiers.base.Verifier`)."""

    def chat(self, conversations: Sequence[Sequence[Message]]) -> list[JudgeReply]:
        """One reply per conversation, in order."""
        ...


_POLICY_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_POLICY_LOCKS_GUARD = threading.Lock()
_UNREFERENCEABLE_LOCK = threading.Lock()


def _policy_lock(policy: Any) -> threading.Lock:
    """The one lock of a policy: `HFPolicy.generate` patches the model while it runs, so calls on one model
    (env worker threads, several backends over the same policy) must not overlap."""
    with _POLICY_LOCKS_GUARD:
        try:
            return _POLICY_LOCKS.setdefault(policy, threading.Lock())
        except TypeError:  # not weakly referenceable: one lock shared by all such policies
            return _UNREFERENCEABLE_LOCK


class PolicyBackend:
    """A `Policy` as a chat model: conversations rendered by the model's chat template, replies decoded.

    Greedy by default (`temperature=0`), so a judge gives the same answer to the same prompt. Generation
    is bounded in tokens (`max_new_tokens`), not in time, so `time_bounded` is False and callers put a
    deadline around it (`call_verifier`).
    """

    time_bounded = False

    def __init__(
        self,
        policy: Policy,
        tokenizer: Any,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = 0,
    ) -> None:
        self.policy = policy
        self.codec = shared_codec(load_tokenizer(tokenizer))
        self.sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)

    @classmethod
    def load(
        cls, model: Any = "smollm2-135m", tokenizer: Any = None, *, batch_size: int = 16, device: str = "cpu",
        **options: Any,
    ) -> PolicyBackend:  # fmt: skip
        """A backend over a causal LM loaded by `llmenv.models` (a folder, a Hub id or `smollm2-135m`)."""
        loaded_tokenizer = load_tokenizer(tokenizer if tokenizer is not None else model)
        policy = HFPolicy(load_model(model, device=device), loaded_tokenizer, batch_size=batch_size)
        return cls(policy, loaded_tokenizer, **options)

    def chat(self, conversations: Sequence[Sequence[Message]]) -> list[JudgeReply]:
        """Generate one reply per conversation (one batched `generate`)."""
        if not conversations:
            return []
        prompts = [self.codec.encode(list(messages), add_generation_prompt=True).tolist() for messages in conversations]
        with _policy_lock(self.policy):
            generations = self.policy.generate(prompts, self.sampling)
        return [JudgeReply(self.codec.decode(g.tokens).strip()) for g in generations]


class OpenAIBackend:
    """An OpenAI-compatible chat endpoint: `POST {base_url}/chat/completions`, `choices[0].message.content`.

    Uses only the standard library. Each request has a socket timeout of `timeout_s`, and a whole
    `chat` call returns within `timeout_s` per round of `max_workers` concurrent requests, whatever the
    server does (so `time_bounded` is True). HTTP errors, timeouts and bodies without a string
    `choices[0].message.content` are replies with `error` set.
    """

    time_bounded = True

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 64,
        timeout_s: float = 30.0,
        max_workers: int = 4,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise VerifierError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not (timeout_s > 0 and math.isfinite(timeout_s)) or max_workers < 1 or max_tokens < 1:
            raise VerifierError(
                f"timeout_s must be a positive number and max_workers, max_tokens >= 1; got {timeout_s}, "
                f"{max_workers}, {max_tokens}"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.temperature, self.max_tokens = temperature, max_tokens
        self.timeout_s, self.max_workers = timeout_s, max_workers

    def chat(self, conversations: Sequence[Sequence[Message]]) -> list[JudgeReply]:
        """Post every conversation (up to `max_workers` at once); one reply each, in order."""
        if not conversations:
            return []
        rounds = math.ceil(len(conversations) / self.max_workers)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.max_workers)
        try:
            futures = [pool.submit(self._post, list(messages)) for messages in conversations]
            concurrent.futures.wait(futures, timeout=self.timeout_s * rounds + 1.0)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        late = JudgeReply(None, f"judge endpoint {self.url} gave no reply within {self.timeout_s:g}s")
        return [f.result() if f.done() and not f.cancelled() else late for f in futures]

    def _post(self, messages: list[Message]) -> JudgeReply:
        """One request; every failure is a reply with `error` (this runs on a pool thread)."""
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        where = f"judge endpoint {self.url}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            return JudgeReply(None, f"{where} answered HTTP {exc.code} {exc.reason}: {detail}")
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            said = describe_exception(reason) if isinstance(reason, BaseException) else str(reason)
            return JudgeReply(None, f"{where} failed: {said}")
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return JudgeReply(None, f"{where} sent a body without choices[0].message.content: {raw[:200]!r}")
        if not isinstance(content, str):
            return JudgeReply(None, f"{where} sent a non-string message content: {content!r:.200}")
        return JudgeReply(content.strip())


# -- asking, with a cache ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    parsed: Any
    reply: str | None
    error: str | None


class _Asker:
    """Asks a backend, deduplicating the batch and caching answers that parsed (bounded, least recently used)."""

    def __init__(self, backend: ChatBackend, cache_size: int) -> None:
        if cache_size < 0:
            raise VerifierError(f"cache_size must be >= 0, got {cache_size}")
        self.backend, self.cache_size = backend, cache_size
        self._cache: collections.OrderedDict[tuple[tuple[str, str], ...], _Answer] = collections.OrderedDict()
        self._lock = threading.Lock()

    def ask(
        self, conversations: Sequence[list[Message]], parse: Callable[[str], Any | None], expected: str
    ) -> list[_Answer]:
        """One answer per conversation: cached, else asked (each distinct conversation once) and parsed."""
        keys = [tuple((m["role"], m["content"]) for m in messages) for messages in conversations]
        answers: dict[tuple[tuple[str, str], ...], _Answer] = {}
        with self._lock:
            for key in keys:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    answers[key] = self._cache[key]
        missing = list(dict.fromkeys(key for key in keys if key not in answers))
        for key, reply in zip(
            missing, self._replies([[Message(role=r, content=c) for r, c in key] for key in missing])
        ):
            answers[key] = _parsed(reply, parse, expected)
        with self._lock:
            for key in missing:
                if answers[key].parsed is not None and self.cache_size:
                    self._cache[key] = answers[key]
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return [answers[key] for key in keys]

    def _replies(self, conversations: list[list[Message]]) -> list[JudgeReply]:
        if not conversations:
            return []
        try:
            replies = list(self.backend.chat(conversations))
        except Exception as exc:  # noqa: BLE001 - recorded on every verdict of the batch, never a silent 0
            return [JudgeReply(None, f"judge backend raised {describe_exception(exc)}")] * len(conversations)
        if len(replies) != len(conversations):
            error = f"judge backend returned {len(replies)} replies for {len(conversations)} conversations"
            return [JudgeReply(None, error)] * len(conversations)
        return replies


def _parsed(reply: JudgeReply, parse: Callable[[str], Any | None], expected: str) -> _Answer:
    if reply.error is not None or reply.text is None:
        return _Answer(None, reply.text, reply.error or "judge backend gave no reply")
    parsed = parse(reply.text)
    if parsed is None:
        return _Answer(None, reply.text, f"judge reply did not parse: expected {expected}, got {reply.text!r:.200}")
    return _Answer(parsed, reply.text, None)


# -- prompts ----------------------------------------------------------------------------------------


def conversation_text(messages: Sequence[Message]) -> str:
    """The conversation a completion answers, as the judge reads it: a lone user message as is, else role-labelled.

    >>> conversation_text([{"role": "user", "content": "2+2?"}])
    '2+2?'
    >>> print(conversation_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]))
    System: Be brief.
    User: 2+2?
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def _checked_template(template: str, fields: frozenset[str], required: Sequence[str]) -> string.Template:
    """`template` as a `string.Template`, refusing unknown `$fields` and missing required ones."""
    named = set()
    for match in string.Template.pattern.finditer(template):
        name = match.group("named") or match.group("braced")
        if name is not None:
            named.add(name)
        elif match.group("invalid") is not None:
            raise VerifierError(f"judge template has a stray '$' at offset {match.start()}; write '$$' for a dollar")
    unknown, missing = sorted(named - fields), [f for f in required if f not in named]
    if unknown or missing:
        raise VerifierError(
            f"judge template fields: unknown {unknown}, missing {missing}; the fields are {sorted(fields)}"
        )
    return string.Template(template)


def _question(completion: str, task: Task) -> str:
    messages = list(completion.messages) if isinstance(completion, Completion) else task.messages()
    return conversation_text(messages)


def _clip(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit] + " [...]", True)


# -- the pointwise judge ----------------------------------------------------------------------------


class JudgeVerifier:
    """A verifier that asks a judge model about each completion, on a scale, against one or more criteria.

    Args:
        backend: the chat model (`PolicyBackend`, `OpenAIBackend`, or anything with `chat`).
        scale: `YesNo()` (default), `Likert(k)` or `RubricLevels([...worst to best])`.
        criteria: the question put to the judge: a string, a `{name: criterion}` mapping, or a
            `Constitution` (one criterion per principle). Each is asked separately; the reward is
            their mean, and every criterion is a part.
        template: the judge prompt (`DEFAULT_TEMPLATE`'s fields; `$response` required).
        reference: show the judge the task's reference answer (`$reference`), when the task has one.
        max_response_chars: longer completions are cut to this many characters for the judge.
        cache_size: judge answers kept (per judge prompt); 0 turns the cache off.
        name: the verdict's part name.

    `Verdict.passed` is the yes/no answer (all criteria yes) on the `YesNo` scale and None on the
    others; `details` hold `replies` and `labels` per criterion, and `truncated`.
    """

    def __init__(
        self,
        backend: ChatBackend,
        *,
        scale: Scale | None = None,
        criteria: str | Mapping[str, str] | Constitution = DEFAULT_CRITERION,
        template: str = DEFAULT_TEMPLATE,
        reference: bool = False,
        max_response_chars: int = 8000,
        cache_size: int = 4096,
        name: str = "judge",
    ) -> None:
        self.backend = backend
        self.scale: Scale = scale if scale is not None else YesNo()
        if isinstance(criteria, Constitution):
            self.criteria = {p.name: p.criterion for p in criteria.principles}
        elif isinstance(criteria, str):
            self.criteria = {name: criteria}
        else:
            self.criteria = dict(criteria)
        if not self.criteria or not all(isinstance(c, str) and c.strip() for c in self.criteria.values()):
            raise VerifierError(f"criteria must be non-empty strings, got {criteria!r:.200}")
        self.template = _checked_template(template, _POINTWISE_FIELDS, ["response"])
        self.reference, self.max_response_chars, self.name = reference, max_response_chars, name
        self._asker = _Asker(backend, cache_size)

    @property
    def time_bounded(self) -> bool:
        """Whether the backend bounds its own time (then callers add no deadline)."""
        return bool(getattr(self.backend, "time_bounded", False))

    def judge_messages(self, completion: str, task: Task) -> list[list[Message]]:
        """The judge conversations for one completion: one per criterion, in `criteria` order."""
        return [messages for messages, _ in self._prompts(completion, task)]

    def _prompts(self, completion: str, task: Task) -> list[tuple[list[Message], bool]]:
        response, truncated = _clip(str(completion), self.max_response_chars)
        reference = f"Reference answer: {task.answer}\n" if self.reference and task.answer is not None else ""
        fields = {"question": _question(completion, task), "response": response, "reference": reference,
                  "answer_format": self.scale.answer_format}  # fmt: skip
        return [
            ([Message(role="user", content=self.template.substitute(fields, criterion=criterion))], truncated)
            for criterion in self.criteria.values()
        ]

    def __call__(self, completion: str, task: Task) -> Verdict:
        """The judge's verdict on one completion."""
        return self.verify_batch([completion], [task])[0]

    def verify_batch(self, completions: Sequence[str], tasks: Sequence[Task]) -> list[Verdict]:
        """One verdict per completion; every judge prompt of the batch goes to the backend in one call."""
        prompts = [self._prompts(c, t) for c, t in zip(completions, tasks, strict=True)]
        flat = [messages for per_completion in prompts for messages, _ in per_completion]
        answers = self._asker.ask(flat, self.scale.parse, self.scale.expected)
        width = len(self.criteria)
        return [
            self._verdict(answers[row * width : (row + 1) * width], truncated=prompts[row][0][1])
            for row in range(len(completions))
        ]

    def _verdict(self, answers: list[_Answer], *, truncated: bool) -> Verdict:
        names = list(self.criteria)
        details = {
            "replies": {n: a.reply for n, a in zip(names, answers)},
            "labels": {n: a.parsed[1] if a.parsed else None for n, a in zip(names, answers)},
            "truncated": truncated,
        }
        scores = {n: a.parsed[0] for n, a in zip(names, answers) if a.parsed is not None}
        parts = {self.name: 0.0} if len(names) == 1 else {f"{self.name}/{n}": s for n, s in scores.items()}
        errors = [f"{n}: {a.error}" if len(names) > 1 else str(a.error) for n, a in zip(names, answers) if a.error]
        if errors:
            return Verdict(reward=0.0, passed=None, parts=parts, details=details, error="; ".join(errors))
        reward = sum(scores.values()) / len(scores)
        parts[self.name] = reward
        passed = all(s == 1.0 for s in scores.values()) if isinstance(self.scale, YesNo) else None
        return Verdict(reward=reward, passed=passed, parts=parts, details=details)


# -- the pairwise judge -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PairwiseResult:
    """A comparison of two completions asked in both orders.

    `winner` is 0 (the first completion) or 1 (the second) when both orders agree, else None;
    `consistent` is False when the judge flipped with the order, None when a reply did not parse
    (then `error` says why); `preferred` holds the completion each order chose (first asked as A,
    then second asked as A), and `replies` the raw replies in that order.
    """

    winner: int | None
    consistent: bool | None
    preferred: tuple[int | None, int | None]
    replies: tuple[str | None, str | None]
    error: str | None = None


def _letter(reply: str) -> str | None:
    """The first standalone capital A or B of a reply (e.g. "A", "Response B", "**B**")."""
    found = re.search(r"(?<![A-Za-z])[AB](?![A-Za-z])", reply)
    return found.group() if found else None


class PairwiseJudge:
    """Which of two completions is better, asked as (A=first, B=second) and again as (A=second, B=first).

    Args:
        backend: the chat model.
        criterion: the question (default: which response answers the question better).
        template: the prompt (`DEFAULT_PAIRWISE_TEMPLATE`'s fields; both responses required).
        max_response_chars: longer completions are cut to this many characters for the judge.
        cache_size: judge answers kept; 0 turns the cache off.
    """

    answer_format = 'Reply with one letter: "A" or "B".'

    def __init__(
        self,
        backend: ChatBackend,
        *,
        criterion: str = DEFAULT_PAIRWISE_CRITERION,
        template: str = DEFAULT_PAIRWISE_TEMPLATE,
        max_response_chars: int = 8000,
        cache_size: int = 4096,
    ) -> None:
        self.backend, self.criterion, self.max_response_chars = backend, criterion, max_response_chars
        self.template = _checked_template(template, _PAIRWISE_FIELDS, ["response_a", "response_b"])
        self._asker = _Asker(backend, cache_size)

    def judge_messages(
        self, prompt: str | Sequence[Message] | Task, first: str, second: str
    ) -> tuple[list[Message], list[Message]]:
        """The two judge conversations: first completion as A, then second completion as A."""
        task = prompt if isinstance(prompt, Task) else Task(prompt)
        question = _question(first, task)
        a, b = (_clip(str(x), self.max_response_chars)[0] for x in (first, second))
        fields = {"question": question, "criterion": self.criterion, "answer_format": self.answer_format}
        return (
            [Message(role="user", content=self.template.substitute(fields, response_a=a, response_b=b))],
            [Message(role="user", content=self.template.substitute(fields, response_a=b, response_b=a))],
        )

    def compare(self, prompt: str | Sequence[Message] | Task, first: str, second: str) -> PairwiseResult:
        """Compare two completions of one prompt in both orders."""
        return self.compare_batch([(prompt, first, second)])[0]

    def compare_batch(self, items: Sequence[tuple[str | Sequence[Message] | Task, str, str]]) -> list[PairwiseResult]:
        """One result per `(prompt, first, second)`; all judge prompts go to the backend in one call."""
        flat = [messages for item in items for messages in self.judge_messages(*item)]
        answers = self._asker.ask(flat, _letter, '"A" or "B"')
        return [_pairwise_result(answers[2 * row], answers[2 * row + 1]) for row in range(len(items))]


def _pairwise_result(forward: _Answer, backward: _Answer) -> PairwiseResult:
    """Map each order's letter back to the completion it names; agree -> winner, disagree -> flagged."""
    preferred = (
        None if forward.parsed is None else (0 if forward.parsed == "A" else 1),
        None if backward.parsed is None else (1 if backward.parsed == "A" else 0),
    )
    replies = (forward.reply, backward.reply)
    errors = [f"{order}: {a.error}" for order, a in (("first as A", forward), ("second as A", backward)) if a.error]
    if errors:
        return PairwiseResult(None, None, preferred, replies, "; ".join(errors))
    consistent = preferred[0] == preferred[1]
    return PairwiseResult(preferred[0] if consistent else None, consistent, preferred, replies)
