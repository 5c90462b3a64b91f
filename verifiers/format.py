"""Format verifiers: does a completion have the shape a task asks for, whatever its content?

Each verifier here checks one shape (a `<think>` block followed by an answer, a balanced
`\\boxed{}`, a regex, JSON that fits a JSON Schema, a length window), returns a `Verdict` whose
single part is named after the check and whose `details["reason"]` says what was wrong, and runs
in time linear in the completion (`time_bounded = True`: `call_verifier` calls them directly;
a regex or schema the caller writes can break that, see RegexFormat and JSONFormat). Finding the
JSON in a completion is ours; validating it is the `jsonschema` package's.
They must not judge correctness (that is the math, code and task verifiers' job), must not
evaluate anything the completion contains, and must not raise on any completion: a bad option
raises `VerifierError` at construction instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from jsonschema_specifications import REGISTRY as METASCHEMAS  # installed with jsonschema: the drafts' meta-schemas

from llmenv.errors import VerifierError
from llmenv.types import Task, Verdict

__all__ = [
    "ThinkAnswerFormat",
    "BoxedFormat",
    "INTEGER",
    "RegexFormat",
    "JSONFormat",
    "LengthBounds",
    "boxed_contents",
    "schema_validator",
    "validate_json",
]


def _verdict(name: str, reason: str | None, **details: Any) -> Verdict:
    """Reward 1.0 when `reason` is None, else 0.0 with the reason in details."""
    reward = 1.0 if reason is None else 0.0
    if reason is not None:
        details["reason"] = reason
    return Verdict(reward=reward, passed=reason is None, parts={name: reward}, details=details)


_TAG_NAME = re.compile(r"[A-Za-z][\w-]*")


def _not_once(text: str, tag: str) -> str | None:
    """Why `tag` does not occur exactly once in `text`, or None."""
    n = text.count(tag)
    return None if n == 1 else f"missing {tag}" if n == 0 else f"{n} {tag} found, expected 1"


class ThinkAnswerFormat:
    """`<think>...</think>` at the start, then a non-empty answer (optionally `<answer>...</answer>`).

    Exactly one think block is allowed and only whitespace may precede it. With `answer_tag`,
    only whitespace may sit between `</think>` and `<answer>` and after `</answer>`, and the
    answer tag must appear exactly once.

    Options:
        think_tag: name of the reasoning tag (`think` checks `<think>...</think>`).
        answer_tag: name of the answer tag, or None for a bare answer after `</think>`.
        require_nonempty: the think block and the answer must contain non-whitespace text.
    """

    time_bounded = True
    name = "think_format"

    def __init__(self, think_tag: str = "think", answer_tag: str | None = None, require_nonempty: bool = True) -> None:
        for label, tag in (("think_tag", think_tag), ("answer_tag", answer_tag)):
            if tag is not None and not (isinstance(tag, str) and _TAG_NAME.fullmatch(tag)):
                raise VerifierError(f"{label} must be a tag name (letters, digits, _ or -), got {tag!r}")
        if think_tag == answer_tag:
            raise VerifierError(f"think_tag and answer_tag must differ, both are {think_tag!r}")
        self.think_tag, self.answer_tag, self.require_nonempty = think_tag, answer_tag, require_nonempty

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Check the tag structure of `completion`; `details["answer"]` holds the answer on success."""
        reason, answer = self._check(completion)
        return _verdict(self.name, reason) if reason else _verdict(self.name, None, answer=answer)

    def _check(self, completion: str) -> tuple[str | None, str]:
        think_open, think_close = f"<{self.think_tag}>", f"</{self.think_tag}>"
        if reason := _not_once(completion, think_open) or _not_once(completion, think_close):
            return reason, ""
        body = completion.lstrip()
        if not body.startswith(think_open):
            return f"text before {think_open}: the completion must start with it", ""
        end = body.find(think_close)  # after the opening tag: the body starts with it
        thought, rest = body[len(think_open) : end], body[end + len(think_close) :]
        if self.require_nonempty and not thought.strip():
            return f"empty {think_open} block", ""
        if self.answer_tag is None:
            answer = rest.strip()
        else:
            answer_open, answer_close = f"<{self.answer_tag}>", f"</{self.answer_tag}>"
            if reason := _not_once(rest, answer_open) or _not_once(rest, answer_close):
                return reason, ""
            rest = rest.lstrip()
            if not rest.startswith(answer_open):
                return f"text between {think_close} and {answer_open}", ""
            close = rest.find(answer_close)
            if rest[close + len(answer_close) :].strip():
                return f"text after {answer_close}", ""
            answer = rest[len(answer_open) : close].strip()
        if self.require_nonempty and not answer:
            return f"empty answer after {think_close}", ""
        return None, answer


_BOXED_SCAN = re.compile(r"\\boxed\{|[{}]")


def boxed_contents(text: str) -> tuple[list[str], int]:
    """The contents of every complete `\\boxed{...}` in `text`, in order of their closing brace,
    and the number of `\\boxed{` left unclosed. One pass, linear in `len(text)`.

    >>> boxed_contents(r"so \\boxed{\\frac{1}{2}} and \\boxed{3")
    (['\\\\frac{1}{2}'], 1)
    """
    stack: list[int] = []  # start of each open brace's content, -1 for a plain `{`
    found: list[str] = []
    for match in _BOXED_SCAN.finditer(text):
        token = match.group()
        if token == "}":
            if stack and (start := stack.pop()) >= 0:
                found.append(text[start : match.start()])
        else:
            stack.append(match.end() if token != "{" else -1)
    return found, sum(1 for start in stack if start >= 0)


INTEGER = r"[-+]?\d+"
"""`BoxedFormat(content=INTEGER)`: a box holding a whole number."""


class BoxedFormat:
    """A `\\boxed{...}` with balanced braces and non-blank content is present.

    Options:
        exactly_one: fail when more than one complete `\\boxed{}` is found (nested ones count).
        content: a regular expression the last box's content (stripped) must match in full, e.g.
            `INTEGER`, so that a placeholder copied from the prompt (`\\boxed{N}`) is not a format.
    """

    time_bounded = True
    name = "boxed"

    def __init__(self, exactly_one: bool = False, *, content: str | None = None) -> None:
        self.exactly_one = exactly_one
        try:
            self.content = re.compile(content) if content is not None else None
        except (re.error, TypeError) as exc:
            raise VerifierError(f"BoxedFormat content pattern {content!r:.100} does not compile: {exc}") from exc

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Check for a complete `\\boxed{}`; `details["boxed"]` holds the last one's content."""
        found, unclosed = boxed_contents(completion)
        if not found:
            return _verdict(self.name, "\\boxed{ is never closed" if unclosed else "no \\boxed{} found")
        if self.exactly_one and len(found) != 1:
            return _verdict(self.name, f"{len(found)} \\boxed{{}} found, expected 1")
        if not found[-1].strip():
            return _verdict(self.name, "empty \\boxed{}")
        if self.content is not None and not self.content.fullmatch(found[-1].strip()[:1000]):
            return _verdict(
                self.name,
                f"\\boxed{{{found[-1].strip()[:40]}}} does not match the pattern {self.content.pattern}",
                boxed=found[-1],
            )
        return _verdict(self.name, None, boxed=found[-1])


class RegexFormat:
    """The completion matches a Python regular expression (`re.search`, or `re.fullmatch`).

    Time is bounded by refusing completions longer than `max_chars`; a pattern that backtracks
    catastrophically (`(a+)+$`) can still take exponential time on short input, and avoiding
    such patterns is the caller's responsibility.

    Options:
        pattern: the regex, as a string or compiled pattern.
        fullmatch: the whole completion must match, not just a substring.
        flags: `re` flags used to compile a string pattern.
        max_chars: completions longer than this fail without being matched.
    """

    time_bounded = True
    name = "regex"

    def __init__(
        self, pattern: str | re.Pattern[str], *, fullmatch: bool = False, flags: int = 0, max_chars: int = 100_000
    ) -> None:
        try:
            self.pattern = re.compile(pattern, flags)
        except (re.error, TypeError, ValueError) as exc:
            raise VerifierError(f"RegexFormat pattern {pattern!r:.100} does not compile: {exc}") from exc
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 0:
            raise VerifierError(f"max_chars must be a non-negative int, got {max_chars!r}")
        self.fullmatch, self.max_chars = fullmatch, max_chars

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Match `completion`; `details["match"]` holds the matched text on success."""
        if len(completion) > self.max_chars:
            return _verdict(self.name, f"length {len(completion)} chars > max_chars {self.max_chars}")
        match = (self.pattern.fullmatch if self.fullmatch else self.pattern.search)(completion)
        if match is None:
            how = "does not fully match" if self.fullmatch else "no match for"
            return _verdict(self.name, f"{how} pattern {self.pattern.pattern!r:.200}")
        return _verdict(self.name, None, match=match.group())


MAX_REPORTED_ERRORS = 10
"""A failed verdict's `details["errors"]` lists at most this many schema violations."""
_MAX_MESSAGE_CHARS = 300  # jsonschema's messages quote the offending value, which may be the whole completion


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else f"{text[: _MAX_MESSAGE_CHARS - 3]}..."


def _message(error: ValidationError | SchemaError) -> str:
    """`"<json path>: <jsonschema's message>"`, cut to a readable length."""
    return _cut(f"{error.json_path}: {error.message}")


def _check_refs(validator_cls: type[Validator], schema: Mapping[str, Any] | bool) -> None:
    """Raise VerifierError on a `$ref` that does not resolve inside `schema` (nothing is fetched)."""
    # jsonschema's own Validator protocol declares ID_OF; the types-jsonschema stub's does not
    meta_schema_id = validator_cls.ID_OF(validator_cls.META_SCHEMA)  # type: ignore[attr-defined]
    specification = referencing.jsonschema.specification_with(meta_schema_id)
    root = specification.create_resource(schema)
    todo = [(root, METASCHEMAS.resolver_with_root(root))]
    while todo:
        resource, resolver = todo.pop()
        contents = resource.contents if isinstance(resource.contents, Mapping) else {}
        for keyword in ("$ref", "$dynamicRef"):  # both start from a plain lookup of their URI
            if isinstance(ref := contents.get(keyword), str):
                try:
                    resolver.lookup(ref)
                except referencing.exceptions.Unresolvable as exc:
                    raise VerifierError(
                        f"schema: {keyword} {ref!r} does not resolve ({exc}); only references inside the schema "
                        "(e.g. '#/$defs/name') and the JSON Schema meta-schemas are available, nothing is fetched"
                    ) from exc
        todo.extend((sub, resolver.in_subresource(sub)) for sub in resource.subresources())


def schema_validator(schema: Mapping[str, Any] | bool) -> Validator:
    """A `jsonschema` validator for `schema` (its `$schema` draft, else the latest) that checks `format`.

    The schema is checked against its draft's meta-schema and every `$ref` must resolve inside it;
    otherwise `VerifierError` says where the problem is.

    >>> schema_validator({"type": "integer", "minimum": "0"})
    Traceback (most recent call last):
    ...
    llmenv.errors.VerifierError: schema is not a valid Draft202012 schema: $.minimum: '0' is not of type 'number'
    """
    if not isinstance(schema, (Mapping, bool)):
        raise VerifierError(f"schema must be a dict (or a bool), got {type(schema).__name__}")
    if isinstance(schema, Mapping) and "$schema" in schema:
        dialect = schema["$schema"]
        # `default` is returned as given for an unknown $schema; the stub only allows a class there
        validator_cls = validator_for(schema, default=None) if isinstance(dialect, str) else None  # type: ignore[arg-type]
        if validator_cls is None:
            raise VerifierError(
                f"schema: unknown $schema {dialect!r:.200}; use a JSON Schema draft's URI, "
                "e.g. 'https://json-schema.org/draft/2020-12/schema'"
            )
    else:
        validator_cls = validator_for(schema)  # the latest draft
    try:
        validator_cls.check_schema(schema)  # type: ignore[arg-type]  # takes Mapping | bool; the stub says dict
    except SchemaError as exc:
        hint = f" ({best_match(exc.context).message})" if exc.context else ""  # which branch of an anyOf
        draft = validator_cls.__name__.removesuffix("Validator")
        raise VerifierError(f"schema is not a valid {draft} schema: {_message(exc)}{hint}") from exc
    _check_refs(validator_cls, schema)
    # An empty registry: remote `$ref`s are never fetched (jsonschema's default would try the network).
    return validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER, registry=referencing.Registry())


def _violations(validator: Validator, value: Any) -> list[ValidationError] | str:
    """Every violation of the validator's schema by `value`, or why validation could not finish."""
    try:
        return list(validator.iter_errors(value))
    except RecursionError:
        return "JSON value nested too deeply to validate"


def validate_json(value: Any, schema: Mapping[str, Any] | bool) -> str | None:
    """The most relevant violation of `schema` by `value`, as `"<json path>: <message>"`, or None if it conforms.

    Full JSON Schema (every draft `jsonschema` knows, `$ref`, `oneOf`, `format`, ...), with
    jsonschema's messages; a bad schema raises `VerifierError`. `JSONFormat` checks the schema
    once at construction, so prefer it for many values.

    >>> schema = {"properties": {"items": {"items": {"properties": {"name": {"type": "string"}}}}}}
    >>> validate_json({"items": [{"name": "a"}, {"name": 3}]}, schema)
    "$.items[1].name: 3 is not of type 'string'"
    """
    violations = _violations(schema_validator(schema), value)
    if isinstance(violations, str):
        return violations
    return _message(best) if (best := best_match(violations)) is not None else None


_JSON_SCAN = re.compile(r'[\[\]{}"\\]')
_CLOSER = {"{": "}", "[": "]"}


def _bracket_spans(text: str) -> Iterator[str]:
    """Top-level balanced `{...}`/`[...]` spans, skipping brackets inside JSON strings. Linear."""
    stack: list[str] = []
    start, in_string, escaped_at = 0, False, -1
    for match in _JSON_SCAN.finditer(text):
        char, pos = match.group(), match.start()
        if in_string:
            if pos == escaped_at:
                continue
            if char == "\\":
                escaped_at = pos + 1
            elif char == '"':
                in_string = False
        elif not stack:
            if char in _CLOSER:
                stack, start = [char], pos
        elif char == '"':
            in_string = True
        elif char in _CLOSER:
            stack.append(char)
        elif char in "]}":
            if _CLOSER[stack.pop()] != char:
                stack = []  # mismatched: abandon this span
            elif not stack:
                yield text[start : pos + 1]


def _parse(text: str) -> tuple[Any, str | None]:
    """(value, None) or (None, reason)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"JSON error at line {exc.lineno} col {exc.colno}: {exc.msg}"
    except RecursionError:
        return None, "JSON error: nested too deeply"
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        return None, f"JSON error: {exc}"


class JSONFormat:
    """The completion holds JSON that conforms to a JSON Schema, validated by the `jsonschema` package.

    Any draft `jsonschema` supports (the one `$schema` names, else the latest), with `$ref`/`$defs`,
    `oneOf`/`anyOf`/`allOf`, and `format` checked where jsonschema has a checker for it without
    optional packages (`email`, `date`, `ipv4`, `ipv6`, `uuid`, `regex`, ...; others are accepted
    unchecked, as the specification allows). The schema is checked once, at construction: an
    invalid schema, an unknown `$schema` or a `$ref` that does not resolve inside the schema raises
    `VerifierError`. On failure `details["reason"]` is the most relevant violation and
    `details["errors"]` lists up to `MAX_REPORTED_ERRORS` as `{"path", "message"}` (jsonschema's
    JSON path and message). Validation is linear in the value for usual schemas; like a
    backtracking regex, a schema whose `oneOf` branches each recurse into the value can take
    exponential time, and avoiding such schemas is the caller's responsibility.

    Options:
        schema: the JSON Schema the value must satisfy; None accepts any JSON value.
        extract: where the JSON is: "fenced" (the first ```json block), "whole" (the whole
            completion, stripped), "first" (the first balanced {...} or [...] that parses), or
            "auto": the fenced block if there is one, else the whole text, else "first".
    """

    time_bounded = True
    name = "json"
    EXTRACT_MODES = ("auto", "fenced", "whole", "first")

    def __init__(self, schema: Mapping[str, Any] | bool | None = None, *, extract: str = "auto") -> None:
        if extract not in self.EXTRACT_MODES:
            raise VerifierError(f"extract must be one of {self.EXTRACT_MODES}, got {extract!r}")
        self.validator = None if schema is None else schema_validator(schema)
        self.schema, self.extract = schema, extract

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Parse and validate; `details["value"]` holds the parsed JSON on success."""
        value, reason, source = self._extract(completion)
        if reason is not None:
            return _verdict(self.name, reason, source=source)
        if self.validator is not None:
            violations = _violations(self.validator, value)
            if isinstance(violations, str):
                return _verdict(self.name, violations, source=source)
            if (best := best_match(violations)) is not None:
                errors = [{"path": e.json_path, "message": _cut(e.message)} for e in violations[:MAX_REPORTED_ERRORS]]
                return _verdict(self.name, _message(best), source=source, errors=errors)
        return _verdict(self.name, None, source=source, value=value)

    def _extract(self, completion: str) -> tuple[Any, str | None, str | None]:
        """(value, failure reason, where it came from)."""
        if self.extract in ("auto", "fenced"):
            opener = re.search(r"```json[ \t]*\r?\n", completion, re.IGNORECASE)
            close = completion.find("```", opener.end()) if opener else -1
            if opener and close >= 0:
                return *_parse(completion[opener.end() : close]), "fenced"
            if self.extract == "fenced":
                return None, "no ```json fenced block found", None
        if self.extract in ("auto", "whole"):
            value, reason = _parse(completion.strip())
            if reason is None or self.extract == "whole":
                return value, reason, "whole"
        first_reason = None
        for span in _bracket_spans(completion):
            value, reason = _parse(span)
            if reason is None:
                return value, None, "first"
            first_reason = first_reason or reason
        return None, first_reason or "no JSON object or array found", None


def _bound(label: str, value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise VerifierError(f"{label} must be None or a non-negative int, got {value!r}")
    return value


class LengthBounds:
    """The completion's length lies in `[min, max]`, in characters and/or tokens.

    Token counts use `tokenizer.encode(completion, add_special_tokens=False)` (a transformers
    tokenizer, or a `tokenizers.Tokenizer`), so they count what the policy generated, not BOS/EOS.

    Options:
        min_tokens, max_tokens: inclusive token bounds; they need `tokenizer`.
        min_chars, max_chars: inclusive bounds on `len(completion)`.
        tokenizer: used to count tokens; required exactly when a token bound is given.
    """

    time_bounded = True
    name = "length"

    def __init__(
        self,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        min_chars: int | None = None,
        max_chars: int | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.min_tokens, self.max_tokens = _bound("min_tokens", min_tokens), _bound("max_tokens", max_tokens)
        self.min_chars, self.max_chars = _bound("min_chars", min_chars), _bound("max_chars", max_chars)
        for unit, low, high in (("tokens", min_tokens, max_tokens), ("chars", min_chars, max_chars)):
            if low is not None and high is not None and low > high:
                raise VerifierError(f"min_{unit}={low} > max_{unit}={high}")
        wants_tokens = min_tokens is not None or max_tokens is not None
        if wants_tokens and tokenizer is None:
            raise VerifierError("min_tokens/max_tokens need a tokenizer (pass tokenizer=...)")
        if tokenizer is not None and not callable(getattr(tokenizer, "encode", None)):
            raise VerifierError(f"tokenizer must have an encode() method, got {type(tokenizer).__name__}")
        if not wants_tokens and min_chars is None and max_chars is None:
            raise VerifierError("LengthBounds needs a bound: min_tokens, max_tokens, min_chars or max_chars")
        self.tokenizer = tokenizer

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Check every bound; `details` holds the measured `chars` (and `tokens`)."""
        measured = {"chars": len(completion)}
        if self.tokenizer is not None:
            encoded = self.tokenizer.encode(completion, add_special_tokens=False)
            measured["tokens"] = len(getattr(encoded, "ids", encoded))
        for unit, low, high in (
            ("chars", self.min_chars, self.max_chars),
            ("tokens", self.min_tokens, self.max_tokens),
        ):
            if low is not None and measured[unit] < low:
                return _verdict(self.name, f"length {measured[unit]} {unit} < min {low}", **measured)
            if high is not None and measured[unit] > high:
                return _verdict(self.name, f"length {measured[unit]} {unit} > max {high}", **measured)
        return _verdict(self.name, None, **measured)
