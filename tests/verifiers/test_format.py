"""Tests of llmenv.verifiers.format: each verifier's pass and fail cases with their reasons,
construction errors, and the `check_verifier` contract (hostile inputs, determinism)."""

from __future__ import annotations

import json
import re
import time

import pytest

from llmenv.errors import VerifierError
from llmenv.testing import tiny_tokenizer
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import call_verifier, check_verifier
from llmenv.verifiers.format import (
    INTEGER,
    MAX_REPORTED_ERRORS,
    BoxedFormat,
    JSONFormat,
    LengthBounds,
    RegexFormat,
    ThinkAnswerFormat,
    boxed_contents,
    validate_json,
)

TASK = Task("q")
HANG_S = 10.0
"""Wall-clock bound of the hostile-input checks below: they take about 0.05 s, so this only catches a hang
(quadratic or worse work on 50k-character input), it claims no speed."""


def reason(verifier, completion: str) -> str | None:
    verdict = verifier(completion, TASK)
    assert isinstance(verdict, Verdict)
    assert verdict.reward in (0.0, 1.0) and verdict.passed is (verdict.reward == 1.0)
    assert dict(verdict.parts) == {verifier.name: verdict.reward}
    assert (verdict.reward == 0.0) == ("reason" in verdict.details)
    return verdict.details.get("reason")


# --------------------------------------------------------------------------- ThinkAnswerFormat


@pytest.mark.parametrize(
    "completion",
    ["<think>add them</think>42", "  \n<think>a\nb</think>\n\nThe answer is 42.\n"],
)
def test_think_answer_accepts(completion):
    assert reason(ThinkAnswerFormat(), completion) is None


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("42", "missing <think>"),
        ("<think>a</think><think>b</think>42", "2 <think> found, expected 1"),
        ("<think>a 42", "missing </think>"),
        ("<think>a</think></think>42", "2 </think> found, expected 1"),
        ("So: <think>a</think>42", "text before <think>: the completion must start with it"),
        ("<think>a</think>   \n", "empty answer after </think>"),
        ("<think> \n</think>42", "empty <think> block"),
    ],
)
def test_think_answer_rejects(completion, expected):
    assert reason(ThinkAnswerFormat(), completion) == expected


def test_think_answer_reports_answer_and_honours_require_nonempty():
    assert ThinkAnswerFormat()("<think>x</think> 42 ", TASK).details["answer"] == "42"
    assert reason(ThinkAnswerFormat(require_nonempty=False), "<think></think>") is None


def test_think_answer_with_answer_tag():
    verifier = ThinkAnswerFormat(think_tag="reasoning", answer_tag="answer")
    assert reason(verifier, "<reasoning>r</reasoning>\n<answer> 7 </answer>\n") is None
    assert verifier("<reasoning>r</reasoning><answer>7</answer>", TASK).details["answer"] == "7"
    assert reason(verifier, "<reasoning>r</reasoning> 7") == "missing <answer>"
    assert reason(verifier, "<reasoning>r</reasoning><answer>7") == "missing </answer>"
    assert reason(verifier, "<reasoning>r</reasoning><answer>7</answer><answer>8</answer>") == (
        "2 <answer> found, expected 1"
    )
    assert reason(verifier, "<reasoning>r</reasoning> so <answer>7</answer>") == (
        "text between </reasoning> and <answer>"
    )
    assert reason(verifier, "<reasoning>r</reasoning><answer>7</answer> done") == "text after </answer>"
    assert reason(verifier, "<reasoning>r</reasoning><answer> </answer>") == "empty answer after </reasoning>"
    assert reason(verifier, "<think>r</think><answer>7</answer>") == "missing <reasoning>"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"think_tag": "<think>"}, "think_tag must be a tag name"),
        ({"think_tag": ""}, "think_tag must be a tag name"),
        ({"answer_tag": "a b"}, "answer_tag must be a tag name"),
        ({"answer_tag": "think"}, "must differ"),
    ],
)
def test_think_answer_construction_errors(kwargs, message):
    with pytest.raises(VerifierError, match=message):
        ThinkAnswerFormat(**kwargs)


# --------------------------------------------------------------------------- BoxedFormat


def test_boxed_contents_balances_braces_in_one_pass():
    assert boxed_contents(r"\boxed{\frac{1}{2}} x \boxed{3") == (["\\frac{1}{2}"], 1)
    assert boxed_contents(r"} \boxed{a} { \boxed{b}") == (["a", "b"], 0)  # stray braces do not count
    assert boxed_contents(r"\boxed{\boxed{1}}") == (["1", "\\boxed{1}"], 0)
    started = time.perf_counter()
    assert boxed_contents("\\boxed{" * 50_000) == ([], 50_000)
    assert time.perf_counter() - started < HANG_S


def test_boxed_accepts_and_reports_last_box():
    verdict = BoxedFormat()(r"first \boxed{1}, finally \boxed{\frac{2}{3}}", TASK)
    assert verdict.reward == 1.0 and verdict.details["boxed"] == "\\frac{2}{3}"
    assert reason(BoxedFormat(exactly_one=True), r"so \boxed{x^{2}}.") is None


@pytest.mark.parametrize(
    ("completion", "exactly_one", "expected"),
    [
        ("the answer is 3", False, "no \\boxed{} found"),
        (r"\boxed{\frac{1}{2}", False, "\\boxed{ is never closed"),
        (r"\boxed{  }", False, "empty \\boxed{}"),
        (r"\boxed{1} or \boxed{2}", True, "2 \\boxed{} found, expected 1"),
    ],
)
def test_boxed_rejects(completion, exactly_one, expected):
    assert reason(BoxedFormat(exactly_one=exactly_one), completion) == expected


def test_boxed_content_pattern_refuses_a_copied_placeholder():
    integer_box = BoxedFormat(exactly_one=True, content=INTEGER)
    assert reason(integer_box, r"8 + \boxed{N}") == r"\boxed{N} does not match the pattern [-+]?\d+"
    assert reason(integer_box, r"so \boxed{ -12 }") is None and reason(integer_box, r"\boxed{7}.") is None
    assert reason(integer_box, r"\boxed{7.5}") is not None and reason(BoxedFormat(), r"\boxed{N}") is None
    with pytest.raises(VerifierError, match="content pattern '\\[' does not compile"):
        BoxedFormat(content="[")


# --------------------------------------------------------------------------- RegexFormat


def test_regex_search_fullmatch_and_flags():
    assert reason(RegexFormat(r"answer: \d+"), "so the answer: 42.") is None
    assert RegexFormat(r"\d+")("x 42 y", TASK).details["match"] == "42"
    assert reason(RegexFormat(r"answer: \d+", fullmatch=True), "so the answer: 42.") == (
        "does not fully match pattern 'answer: \\\\d+'"
    )
    assert reason(RegexFormat(r"ANSWER"), "answer") == "no match for pattern 'ANSWER'"
    assert reason(RegexFormat(r"ANSWER", flags=re.IGNORECASE), "answer") is None
    assert reason(RegexFormat(re.compile(r"^\w+$"), fullmatch=True), "word") is None


def test_regex_caps_input_length():
    verifier = RegexFormat(r"x", max_chars=10)
    assert reason(verifier, "x" * 10) is None
    assert reason(verifier, "x" * 11) == "length 11 chars > max_chars 10"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("(unclosed",), {}, "does not compile"),
        ((42,), {}, "does not compile"),
        ((r"x",), {"max_chars": -1}, "max_chars must be a non-negative int"),
        ((r"x",), {"max_chars": True}, "max_chars must be a non-negative int"),
    ],
)
def test_regex_construction_errors(args, kwargs, message):
    with pytest.raises(VerifierError, match=message):
        RegexFormat(*args, **kwargs)


# --------------------------------------------------------------------------- JSONFormat

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8, "pattern": "^[a-z]+$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "kind": {"enum": ["a", "b", 1]},
        "version": {"const": 2},
        "note": {"type": ["string", "null"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
    "title": "person",
}


@pytest.mark.parametrize(
    ("completion", "source"),
    [
        ('Here:\n```json\n{"name": "ann", "age": 3}\n```\nDone.', "fenced"),
        ('  {"name": "ann", "age": 3.0, "note": null}  ', "whole"),
        ('I think [the answer] is {"name": "ann", "age": 3, "tags": ["x"]} ok?', "first"),
        ('prose {"name": "ann", "age": 3, "kind": "b", "version": 2.0} trailing', "first"),
    ],
)
def test_json_accepts(completion, source):
    verdict = JSONFormat(SCHEMA)(completion, TASK)
    assert verdict.reward == 1.0, verdict.details
    assert verdict.details["source"] == source and verdict.details["value"]["name"] == "ann"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], "$: [] is not of type 'object'"),
        ({"name": "ann"}, "$: 'age' is a required property"),
        ({"name": "a", "age": 1.5}, "$.age: 1.5 is not of type 'integer'"),
        ({"name": "a", "age": True}, "$.age: True is not of type 'integer'"),  # JSON true is not a number
        ({"name": "a", "age": 151}, "$.age: 151 is greater than the maximum of 150"),
        ({"name": "Ann", "age": 1}, "$.name: 'Ann' does not match '^[a-z]+$'"),
        ({"name": "a", "age": 1, "tags": ["x", "y", 3]}, "$.tags[2]: 3 is not of type 'string'"),
        ({"name": "a", "age": 1, "kind": True}, "$.kind: True is not one of ['a', 'b', 1]"),
        ({"name": "a", "age": 1, "extra": 1}, "$: Additional properties are not allowed ('extra' was unexpected)"),
    ],
)
def test_validate_json_reports_jsonschemas_path_and_message(value, expected):
    assert validate_json(value, SCHEMA) == expected
    assert validate_json({"name": "ann", "age": 3.0, "kind": 1, "version": 2}, SCHEMA) is None


def test_json_failure_details_list_every_violation_with_its_path():
    verdict = JSONFormat(SCHEMA)('{"name": "", "age": -1, "tags": [1]}', TASK)
    assert verdict.reward == 0.0 and verdict.details["source"] == "whole"
    assert verdict.details["errors"] == [
        {"path": "$.name", "message": "'' should be non-empty"},
        {"path": "$.name", "message": "'' does not match '^[a-z]+$'"},
        {"path": "$.age", "message": "-1 is less than the minimum of 0"},
        {"path": "$.tags[0]", "message": "1 is not of type 'string'"},
    ]
    assert verdict.details["reason"] in {f"{e['path']}: {e['message']}" for e in verdict.details["errors"]}
    many = JSONFormat({"items": {"type": "string"}})(json.dumps(list(range(50))), TASK)
    assert len(many.details["errors"]) == MAX_REPORTED_ERRORS
    huge = JSONFormat({"type": "object"})(json.dumps(["x" * 1000] * 100), TASK)
    assert huge.details["reason"].startswith("$: ['xxx") and huge.details["reason"].endswith("...")
    assert len(huge.details["reason"]) <= 300


def test_json_ref_and_defs():
    schema = {
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
        "type": "array",
        "items": {"$ref": "#/$defs/point"},
    }
    verifier = JSONFormat(schema)
    assert reason(verifier, '[{"x": 1}, {"x": 2.5}]') is None
    assert reason(verifier, '[{"x": 1}, {"y": 2}]') == "$[1]: 'x' is a required property"
    tree = {"$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "$ref": "#/$defs/node"}
    assert reason(JSONFormat(tree), "[[], [[]]]") is None
    assert reason(JSONFormat(tree), "[[], [[3]]]") == "$[1][0][0]: 3 is not of type 'array'"
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"s": {"type": "string"}},
        "items": {"$ref": "#/definitions/s"},
    }
    assert reason(JSONFormat(draft7), '["a", 1]') == "$[1]: 1 is not of type 'string'"


def test_json_one_of_and_any_of():
    one_of = JSONFormat({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]})
    assert reason(one_of, "3") is None and reason(one_of, "10.5") is None
    assert reason(one_of, "12").startswith("$: 12 is valid under each of")  # both branches match
    assert reason(one_of, '"a"').startswith("$: 'a' is not valid under any of the given schemas")
    any_of = JSONFormat({"anyOf": [{"type": "string", "maxLength": 2}, {"type": "null"}]})
    assert reason(any_of, "null") is None and reason(any_of, '"ab"') is None
    assert reason(any_of, '"abc"') == "$: 'abc' is too long"  # the closest branch's message


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("email", "ann@example.com", "ann.example.com"),
        ("date", "2024-02-29", "2023-02-29"),
        ("ipv4", "10.0.0.1", "10.0.0.256"),
        ("uuid", "12345678-1234-5678-1234-567812345678", "1234"),
    ],
)
def test_json_format_is_checked(fmt, good, bad):
    verifier = JSONFormat({"type": "string", "format": fmt})
    assert reason(verifier, json.dumps(good)) is None
    assert reason(verifier, json.dumps(bad)) == f"$: {bad!r} is not a {fmt!r}"


TOOL_CALL = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "when": {"anyOf": [{"type": "string", "format": "date"}, {"const": "now"}]},
                "location": {"$ref": "#/$defs/location"},
            },
            "oneOf": [{"required": ["city"]}, {"required": ["location"]}],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "$defs": {
        "location": {
            "type": "object",
            "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90}, "lon": {"type": "number"}},
            "required": ["lat", "lon"],
        }
    },
}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"city": "Paris", "unit": "celsius", "when": "2025-01-31"}, None),
        ({"location": {"lat": 48.8, "lon": 2.3}, "when": "now"}, None),
        ({"city": "Paris", "location": {"lat": 0, "lon": 0}}, "$.arguments: {'city': 'Paris', 'location':"),
        ({"city": "Paris", "unit": "kelvin"}, "$.arguments.unit: 'kelvin' is not one of ['celsius', 'fahrenheit']"),
        (
            {"city": "Paris", "when": "tomorrow"},
            "$.arguments.when: 'tomorrow' is not a 'date'",
        ),  # anyOf: the closest branch
        ({"location": {"lat": 91, "lon": 0}}, "$.arguments.location.lat: 91 is greater than the maximum of 90"),
        ({"city": "Paris", "country": "FR"}, "$.arguments: Additional properties are not allowed"),
    ],
)
def test_json_tool_call_schema(arguments, expected):
    completion = f"<tool_call>\n{json.dumps({'name': 'get_weather', 'arguments': arguments})}\n</tool_call>"
    got = reason(JSONFormat(TOOL_CALL), completion)
    assert got is None if expected is None else got.startswith(expected), got


def test_json_rejects_with_reasons():
    verifier = JSONFormat(SCHEMA)
    assert reason(verifier, '{"name": "a", "age": "3"}') == "$.age: '3' is not of type 'integer'"
    assert reason(verifier, '```json\n{"name": \n```') == "JSON error at line 2 col 1: Expecting value"
    assert reason(verifier, "no json here") == "no JSON object or array found"
    assert reason(verifier, 'see {"name": "a",} ok') == (
        "JSON error at line 1 col 14: Expecting property name enclosed in double quotes"
    )
    assert reason(JSONFormat(), "[" * 100_000) == "no JSON object or array found"
    assert reason(JSONFormat(extract="whole"), "[" * 100_000) == "JSON error: nested too deeply"
    assert reason(JSONFormat(extract="whole"), "9" * 5000).startswith("JSON error: Exceeds the limit")
    recursive = {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    deep = "[" * 900 + "]" * 900  # parses, but validating it recurses past Python's limit
    assert reason(JSONFormat(recursive, extract="whole"), deep) == "JSON value nested too deeply to validate"


def test_json_extract_modes_are_strict():
    text = 'x {"a": 1} y'
    assert reason(JSONFormat(extract="whole"), text) == "JSON error at line 1 col 1: Expecting value"
    assert reason(JSONFormat(extract="fenced"), text) == "no ```json fenced block found"
    assert JSONFormat(extract="first")(text, TASK).details["value"] == {"a": 1}
    assert JSONFormat(extract="first")('{"s": "}{]["} tail', TASK).details["value"] == {"s": "}{]["}
    assert JSONFormat(extract="first")('{"s": "\\"}"}', TASK).details["value"] == {"s": '"}'}
    assert JSONFormat(extract="first")("[1, 2} then [3]", TASK).details["value"] == [3]
    assert JSONFormat()("7", TASK).details["value"] == 7  # schema None accepts any JSON value
    assert (
        reason(JSONFormat(True), "7") is None and reason(JSONFormat(False), "7") == "$: False schema does not allow 7"
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"type": "str"},
            r"not a valid Draft202012 schema: \$.type: 'str' is not valid under any .*'str' is not one of",
        ),
        ({"properties": {"a": {"minLength": -1}}}, r"\$.properties.a.minLength: -1 is less than the minimum of 0"),
        ({"required": "a"}, r"\$.required: 'a' is not of type 'array'"),
        ({"pattern": "("}, r"\$.pattern: '\(' is not a 'regex'"),
        ({"items": {"$ref": "#/$defs/missing"}}, r"\$ref '#/\$defs/missing' does not resolve"),
        ({"$ref": "https://example.com/schema.json"}, "does not resolve .* nothing is fetched"),
        ({"$schema": "http://example.com/my-draft"}, "unknown \\$schema 'http://example.com/my-draft'"),
        (
            {"$schema": "http://json-schema.org/draft-04/schema#", "exclusiveMinimum": 1},
            r"not a valid Draft4 schema: \$.exclusiveMinimum: 1 is not of type 'boolean'",
        ),
        ([], "schema must be a dict"),
    ],
)
def test_json_schema_errors_fail_at_construction(schema, message):
    with pytest.raises(VerifierError, match=message):
        JSONFormat(schema)
    with pytest.raises(VerifierError, match=message):
        validate_json(None, schema)


def test_json_bad_extract_mode():
    with pytest.raises(VerifierError, match="extract must be one of"):
        JSONFormat(extract="last")


# --------------------------------------------------------------------------- LengthBounds


def test_length_bounds_in_chars():
    verifier = LengthBounds(min_chars=2, max_chars=5)
    assert reason(verifier, "ab") is None and reason(verifier, "abcde") is None
    assert reason(verifier, "a") == "length 1 chars < min 2"
    assert reason(verifier, "abcdef") == "length 6 chars > max 5"
    assert verifier("abc", TASK).details == {"chars": 3}


def test_length_bounds_in_tokens_with_a_real_tokenizer():
    tokenizer = tiny_tokenizer()
    text = "The answer is 42."
    n = len(tokenizer.encode(text, add_special_tokens=False))
    assert 1 < n < len(text)  # tokens, not chars
    assert reason(LengthBounds(max_tokens=n, tokenizer=tokenizer), text) is None
    too_long, too_short = (
        LengthBounds(max_tokens=n - 1, tokenizer=tokenizer),
        LengthBounds(min_tokens=n + 1, tokenizer=tokenizer),
    )
    assert reason(too_long, text) == f"length {n} tokens > max {n - 1}"
    assert reason(too_short, text) == f"length {n} tokens < min {n + 1}"
    raw = LengthBounds(min_tokens=n, tokenizer=tokenizer.backend_tokenizer)  # a `tokenizers.Tokenizer`
    assert raw(text, TASK).details == {"chars": len(text), "tokens": n}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a bound"),
        ({"min_chars": 5, "max_chars": 4}, "min_chars=5 > max_chars=4"),
        ({"min_chars": -1}, "min_chars must be None or a non-negative int"),
        ({"max_chars": 2.5}, "max_chars must be None or a non-negative int"),
        ({"max_tokens": True, "tokenizer": object()}, "max_tokens must be None or a non-negative int"),
        ({"max_tokens": 10}, "need a tokenizer"),
        ({"min_tokens": 3, "max_tokens": 2, "tokenizer": "t"}, "min_tokens=3 > max_tokens=2"),
        ({"max_tokens": 10, "tokenizer": object()}, "tokenizer must have an encode"),
    ],
)
def test_length_bounds_construction_errors(kwargs, message):
    with pytest.raises(VerifierError, match=message):
        LengthBounds(**kwargs)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize(
    ("verifier", "cases"),
    [
        (ThinkAnswerFormat(), [("<think>t</think>a", 1.0), ("a", 0.0)]),
        (
            ThinkAnswerFormat(answer_tag="answer"),
            [("<think>t</think><answer>a</answer>", 1.0), ("<think>t</think>", 0.0)],
        ),
        (BoxedFormat(exactly_one=True), [(r"\boxed{1}", 1.0), (r"\boxed{1}\boxed{2}", 0.0)]),
        (RegexFormat(r"(\d+\s*)+$"), [("1 2 3", 1.0), ("x", 0.0)]),
        (JSONFormat(SCHEMA), [('{"name": "a", "age": 1}', 1.0), ('{"name": "a"}', 0.0)]),
        (LengthBounds(max_chars=3), [("abc", 1.0), ("abcd", 0.0)]),
    ],
    ids=["think", "think-answer", "boxed", "regex", "json", "length"],
)
def test_check_verifier_contract(verifier, cases):
    assert verifier.time_bounded is True
    check_verifier(verifier, [(completion, TASK, expected) for completion, expected in cases], timeout_s=2.0)


def test_token_bounds_are_deterministic_and_linear():
    verifier = LengthBounds(min_tokens=1, max_tokens=50, tokenizer=tiny_tokenizer())
    assert [verifier("short answer", TASK).reward for _ in range(2)] == [1.0, 1.0]
    assert reason(verifier, "") == "length 0 tokens < min 1"
    started = time.perf_counter()
    assert reason(verifier, "\\boxed{" * 10_000).startswith("length ")
    assert time.perf_counter() - started < HANG_S


def test_every_verifier_is_called_directly_and_never_errors_on_garbage():
    garbage = "\x00<think></think></answer>```json\n{]\\boxed{" * 1000
    for verifier in (
        ThinkAnswerFormat(answer_tag="answer"),
        BoxedFormat(),
        RegexFormat("zzz"),
        JSONFormat(SCHEMA),
        LengthBounds(max_chars=10),
    ):
        verdict = call_verifier(verifier, garbage, TASK)
        assert verdict.error is None and verdict.reward == 0.0 and verdict.details["reason"]
