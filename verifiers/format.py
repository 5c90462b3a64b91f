"""Format verifiers: does a completion have the shape a task asks for, whatever its content?

Each verifier here checks one shape (a `<think>` block followed by an answer, a balanced
`\\boxed{}`, a regex, JSON that fits a small schema, a length window), returns a `Verdict` whose
single part is named after the check and whose `details["reason"]` says what was wrong, and runs
in time linear in the completion (`time_bounded = True`: `call_verifier` calls them directly).
They must not judge correctness (that is the math, code and task verifiers' job), must not
evaluate anything the completion contains, and must not raise on any completion: a bad option
raises `VerifierError` at construction instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from llmenv.errors import VerifierError
from llmenv.types import Task, Verdict

__all__ = ["ThinkAnswerFormat", "BoxedFormat", "RegexFormat", "JSONFormat", "LengthBounds", "boxed_contents",
           "validate_json"]


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

    def __init__(self, think_tag: str = "think", answer_tag: str | None = None,
                 require_nonempty: bool = True) -> None:
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


class BoxedFormat:
    """A `\\boxed{...}` with balanced braces and non-blank content is present.

    Options:
        exactly_one: fail when more than one complete `\\boxed{}` is found (nested ones count).
    """

    time_bounded = True
    name = "boxed"

    def __init__(self, exactly_one: bool = False) -> None:
        self.exactly_one = exactly_one

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Check for a complete `\\boxed{}`; `details["boxed"]` holds the last one's content."""
        found, unclosed = boxed_contents(completion)
        if not found:
            return _verdict(self.name, "\\boxed{ is never closed" if unclosed else "no \\boxed{} found")
        if self.exactly_one and len(found) != 1:
            return _verdict(self.name, f"{len(found)} \\boxed{{}} found, expected 1")
        if not found[-1].strip():
            return _verdict(self.name, "empty \\boxed{}")
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

    def __init__(self, pattern: str | re.Pattern[str], *, fullmatch: bool = False, flags: int = 0,
                 max_chars: int = 100_000) -> None:
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


_TYPES = dict(object=dict, array=list, string=str, integer=int, number=(int, float), boolean=bool,
              null=type(None))


def _is_count(arg: Any) -> bool:
    return isinstance(arg, int) and not isinstance(arg, bool) and arg >= 0


def _is_number(arg: Any) -> bool:
    return isinstance(arg, (int, float)) and not isinstance(arg, bool)


# keyword -> (is its argument usable, what it must be); annotations accept anything
_KEYWORDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "type": (lambda a: bool(a) and all(n in _TYPES for n in ([a] if isinstance(a, str) else a)),
             f"a type name or a non-empty list of them, from {sorted(_TYPES)}"),
    "properties": (lambda a: isinstance(a, Mapping), "a dict of schemas"),
    "required": (lambda a: isinstance(a, list) and all(isinstance(r, str) for r in a), "a list of names"),
    "additionalProperties": (lambda a: isinstance(a, bool), "a bool (sub-schemas are not supported)"),
    "items": (lambda a: isinstance(a, Mapping), "a single schema (a dict)"),
    "enum": (lambda a: isinstance(a, list), "a list"),
    "const": (lambda a: True, ""),
    **dict.fromkeys(("minimum", "maximum"), (_is_number, "a number")),
    **dict.fromkeys(("minLength", "maxLength", "minItems", "maxItems"), (_is_count, "a non-negative int")),
    "pattern": (lambda a: bool(re.compile(a)), "a valid regular expression"),
    **dict.fromkeys(("title", "description", "default", "examples", "$schema", "$id", "$comment"),
                    (lambda a: True, "")),
}


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return name == "boolean"
    if name == "integer" and isinstance(value, float):
        return value.is_integer()  # JSON Schema: 1.0 is an integer
    return isinstance(value, _TYPES[name])


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: `true` is not `1`, `1` is `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _check_schema(schema: Any, where: str = "schema") -> None:
    """Raise VerifierError, naming the keyword, on anything `validate_json` does not implement."""
    if not isinstance(schema, Mapping):
        raise VerifierError(f"{where} must be a dict, got {type(schema).__name__}")
    for key, arg in schema.items():
        if key not in _KEYWORDS:
            raise VerifierError(f"{where}: unsupported JSON Schema keyword {key!r}; "
                                f"supported: {list(_KEYWORDS)}")
        usable, expected = _KEYWORDS[key]
        try:
            ok = usable(arg)
        except (TypeError, re.error):
            ok = False
        if not ok:
            raise VerifierError(f"{where}: {key!r} must be {expected}, got {arg!r:.100}")
    for prop, sub in schema.get("properties", {}).items():
        _check_schema(sub, f"{where}.properties.{prop}")
    if "items" in schema:
        _check_schema(schema["items"], f"{where}.items")


def validate_json(value: Any, schema: Mapping[str, Any], path: str = "$") -> str | None:
    """The first violation of `schema` by `value`, as `"<json path>: <what>"`, or None if it conforms.

    Supports the subset `JSONFormat` accepts; keywords apply only to values of their type, as in
    JSON Schema. `schema` is trusted to have passed `JSONFormat`'s construction check.

    >>> schema = {"properties": {"items": {"items": {"properties": {"name": {"type": "string"}}}}}}
    >>> validate_json({"items": [{"name": "a"}, {"name": 3}]}, schema)
    '$.items[1].name: expected string, got int'
    """
    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not any(_is_type(value, n) for n in names):
            got = "null" if value is None else type(value).__name__
            return f"{path}: expected {' or '.join(names)}, got {got}"
    if "const" in schema and not _json_equal(value, schema["const"]):
        return f"{path}: expected {json.dumps(schema['const'])}, got {json.dumps(value)[:100]}"
    if "enum" in schema and not any(_json_equal(value, option) for option in schema["enum"]):
        return f"{path}: {json.dumps(value)[:100]} is not one of {json.dumps(schema['enum'])[:200]}"
    if _is_number(value):
        size, low, high, what = value, "minimum", "maximum", "value"
    elif isinstance(value, str):
        size, low, high, what = len(value), "minLength", "maxLength", "string length"
    elif isinstance(value, list):
        size, low, high, what = len(value), "minItems", "maxItems", "number of items"
    else:
        size, low, high, what = 0, "", "", ""  # "" is never a keyword: no size bound applies
    if low in schema and size < schema[low]:
        return f"{path}: {what} {size} < {low} {schema[low]}"
    if high in schema and size > schema[high]:
        return f"{path}: {what} {size} > {high} {schema[high]}"
    if isinstance(value, str) and "pattern" in schema and re.search(schema["pattern"], value) is None:
        return f"{path}: {json.dumps(value)[:100]} does not match pattern {schema['pattern']!r}"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            if error := validate_json(item, schema["items"], f"{path}[{i}]"):
                return error
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return f"{path}: missing required property {key!r}"
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                child = f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"
                if error := validate_json(item, properties[key], child):
                    return error
            elif schema.get("additionalProperties", True) is False:
                return f"{path}: unexpected property {key!r}"
    return None


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
    """The completion holds JSON that conforms to a schema (a common subset of JSON Schema).

    Supported keywords: type (a name or a list), properties, required, additionalProperties
    (bool), items (one schema), enum, const, minimum, maximum, minLength, maxLength, minItems,
    maxItems, pattern; annotations (title, description, default, examples, $schema, $id,
    $comment) are ignored. Any other keyword raises `VerifierError` at construction.

    Options:
        schema: the JSON Schema subset the value must satisfy; None accepts any JSON value.
        extract: where the JSON is: "fenced" (the first ```json block), "whole" (the whole
            completion, stripped), "first" (the first balanced {...} or [...] that parses), or
            "auto": the fenced block if there is one, else the whole text, else "first".
    """

    time_bounded = True
    name = "json"
    EXTRACT_MODES = ("auto", "fenced", "whole", "first")

    def __init__(self, schema: dict[str, Any] | None = None, *, extract: str = "auto") -> None:
        if extract not in self.EXTRACT_MODES:
            raise VerifierError(f"extract must be one of {self.EXTRACT_MODES}, got {extract!r}")
        if schema is not None:
            _check_schema(schema)
        self.schema, self.extract = schema, extract

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Parse and validate; `details["value"]` holds the parsed JSON on success."""
        value, reason, source = self._extract(completion)
        if reason is None and self.schema is not None:
            reason = validate_json(value, self.schema)
        if reason is not None:
            return _verdict(self.name, reason, source=source)
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

    def __init__(self, min_tokens: int | None = None, max_tokens: int | None = None,
                 min_chars: int | None = None, max_chars: int | None = None, tokenizer: Any = None) -> None:
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
        for unit, low, high in (("chars", self.min_chars, self.max_chars),
                                ("tokens", self.min_tokens, self.max_tokens)):
            if low is not None and measured[unit] < low:
                return _verdict(self.name, f"length {measured[unit]} {unit} < min {low}", **measured)
            if high is not None and measured[unit] > high:
                return _verdict(self.name, f"length {measured[unit]} {unit} > max {high}", **measured)
        return _verdict(self.name, None, **measured)
