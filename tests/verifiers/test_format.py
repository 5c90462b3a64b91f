"""Tests of llmenv.verifiers.format: each verifier's pass and fail cases with their reasons,
construction errors, and the `check_verifier` contract (hostile inputs, determinism)."""

from __future__ import annotations

import re
import time

import pytest

from llmenv.errors import VerifierError
from llmenv.testing import tiny_tokenizer
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import call_verifier, check_verifier
from llmenv.verifiers.format import (
    BoxedFormat,
    JSONFormat,
    LengthBounds,
    RegexFormat,
    ThinkAnswerFormat,
    boxed_contents,
    validate_json,
)

TASK = Task("q")


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
    assert time.perf_counter() - started < 1.0


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
        ([], "$: expected object, got list"),
        ({"name": "ann"}, "$: missing required property 'age'"),
        ({"name": 5, "age": 1}, "$.name: expected string, got int"),
        ({"name": "", "age": 1}, "$.name: string length 0 < minLength 1"),
        ({"name": "abcdefghi", "age": 1}, "$.name: string length 9 > maxLength 8"),
        ({"name": "Ann", "age": 1}, "$.name: \"Ann\" does not match pattern '^[a-z]+$'"),
        ({"name": "a", "age": 1.5}, "$.age: expected integer, got float"),
        ({"name": "a", "age": True}, "$.age: expected integer, got bool"),
        ({"name": "a", "age": -1}, "$.age: value -1 < minimum 0"),
        ({"name": "a", "age": 151}, "$.age: value 151 > maximum 150"),
        ({"name": "a", "age": 1, "tags": []}, "$.tags: number of items 0 < minItems 1"),
        ({"name": "a", "age": 1, "tags": ["a"] * 4}, "$.tags: number of items 4 > maxItems 3"),
        ({"name": "a", "age": 1, "tags": ["x", "y", 3]}, "$.tags[2]: expected string, got int"),
        ({"name": "a", "age": 1, "kind": "c"}, '$.kind: "c" is not one of ["a", "b", 1]'),
        ({"name": "a", "age": 1, "kind": True}, '$.kind: true is not one of ["a", "b", 1]'),
        ({"name": "a", "age": 1, "version": 3}, "$.version: expected 2, got 3"),
        ({"name": "a", "age": 1, "note": 1}, "$.note: expected string or null, got int"),
        ({"name": "a", "age": 1, "extra": 1}, "$: unexpected property 'extra'"),
    ],
)
def test_validate_json_names_the_path_of_the_first_violation(value, expected):
    assert validate_json(value, SCHEMA) == expected


def test_validate_json_quotes_odd_keys_and_nests_paths():
    schema = {"properties": {"a b": {"items": {"properties": {"c": {"type": "null"}}}}}}
    assert validate_json({"a b": [{"c": None}, {"c": 0}]}, schema) == '$["a b"][1].c: expected null, got int'
    assert validate_json({"a b": [{"c": None}]}, schema) is None


def test_json_rejects_with_reasons():
    verifier = JSONFormat(SCHEMA)
    assert reason(verifier, '{"name": "a", "age": "3"}') == "$.age: expected integer, got str"
    assert reason(verifier, '```json\n{"name": \n```') == "JSON error at line 2 col 1: Expecting value"
    assert reason(verifier, "no json here") == "no JSON object or array found"
    assert reason(verifier, 'see {"name": "a",} ok') == (
        "JSON error at line 1 col 14: Expecting property name enclosed in double quotes"
    )
    assert reason(JSONFormat(), "[" * 100_000) == "no JSON object or array found"
    assert reason(JSONFormat(extract="whole"), "[" * 100_000) == "JSON error: nested too deeply"
    assert reason(JSONFormat(extract="whole"), "9" * 5000).startswith("JSON error: Exceeds the limit")


def test_json_extract_modes_are_strict():
    text = 'x {"a": 1} y'
    assert reason(JSONFormat(extract="whole"), text) == "JSON error at line 1 col 1: Expecting value"
    assert reason(JSONFormat(extract="fenced"), text) == "no ```json fenced block found"
    assert JSONFormat(extract="first")(text, TASK).details["value"] == {"a": 1}
    assert JSONFormat(extract="first")('{"s": "}{]["} tail', TASK).details["value"] == {"s": "}{]["}
    assert JSONFormat(extract="first")('{"s": "\\"}"}', TASK).details["value"] == {"s": '"}'}
    assert JSONFormat(extract="first")("[1, 2} then [3]", TASK).details["value"] == [3]
    assert JSONFormat()("7", TASK).details["value"] == 7  # schema None accepts any JSON value


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "oneOf": []}, "unsupported JSON Schema keyword 'oneOf'"),
        ({"properties": {"a": {"format": "email"}}}, r"schema.properties.a: unsupported .* 'format'"),
        ({"items": {"$ref": "#"}}, r"schema.items: unsupported .* '\$ref'"),
        ({"type": "str"}, "'type' must be a type name"),
        ({"type": []}, "'type' must be a type name"),
        ({"additionalProperties": {"type": "string"}}, "'additionalProperties' must be a bool"),
        ({"required": "a"}, "'required' must be a list of names"),
        ({"minLength": -1}, "'minLength' must be a non-negative int"),
        ({"maximum": "9"}, "'maximum' must be a number"),
        ({"pattern": "("}, "'pattern' must be a valid regular expression"),
        ({"enum": "ab"}, "'enum' must be a list"),
        ({"items": [{}]}, "'items' must be a single schema"),
        ([], "schema must be a dict"),
    ],
)
def test_json_schema_errors_fail_at_construction(schema, message):
    with pytest.raises(VerifierError, match=message):
        JSONFormat(schema)


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
    assert time.perf_counter() - started < 2.0


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
