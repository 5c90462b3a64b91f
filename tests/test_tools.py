"""The python and calculator tools: outputs, errors, time bounds and JSON schemas."""

from __future__ import annotations

import pytest

from llmenv.sandboxes.base import Limits
from llmenv.tool_env import tool_schema
from llmenv.tools import calculator, python, run_python


def test_python_tool_returns_labelled_stdout_and_stderr():
    assert python("print('hello')") == "stdout:\nhello"
    out = python("import sys\nprint(1)\nsys.stderr.write('warn\\n')\nsys.exit(3)")
    assert out == "stdout:\n1\nstderr:\nwarn\nexit status: 3"
    error = python("1/0")
    assert "stderr:" in error and "ZeroDivisionError" in error and "exit status: 1" in error
    assert python("x = 1") == "(no output)"


def test_python_tool_times_out_and_truncates():
    out = run_python("print('started', flush=True)\nwhile True:\n    pass", limits=Limits(wall_time_s=1.0))
    assert "started" in out and "timed out after 1s" in out
    long = python("print('x' * 10000)")
    assert "[truncated 8001 more characters]" in long and len(long) < 2200


def test_python_tool_has_a_schema():
    schema = tool_schema(python)["function"]
    assert schema["name"] == "python" and schema["description"].startswith("Run Python code in a sandbox")
    assert schema["parameters"]["required"] == ["code"]
    assert tool_schema(calculator)["function"]["parameters"]["properties"]["expression"]["type"] == "string"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1.5 + 2) * 3 ** 2", "31.5"),
        ("0.1 + 0.2", "0.3"),
        ("1 / 3", "0.3333333333333333"),
        ("-2 ** 2", "-4"),
        ("2 ** -1", "0.5"),
        ("2 ** 3 ** 2", "512"),
        ("2 ** 0.5", "1.4142135623730951"),
        ("10 / 4 * 2", "5"),
        ("-(-3)", "3"),
        (".5 * 4", "2"),
        ("1e3 + 1", "1001"),
        ("((((7))))", "7"),
        ("123456789 * 987654321", "121932631112635269"),
        ("2 ^ 3 * 2", "16"),
        ("+4 / 8", "0.5"),
        ("2 ** 0.5 ** 2", "1.189207115002721"),
        ("(2 ** 0.5) ** 2", "2.0000000000000004"),
        ("10 ** 20 / 3", "3.333333333333333e+19"),
        ("10 ** 400 / 3", "10" + "0" * 399 + "/3"),
    ],
)
def test_calculator_evaluates(expression, expected):
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 / 0", "division by zero"),
        ("2 +", "the expression ends where a number or '(' was expected"),
        ("(1 + 2", "'(' was never closed at position 0"),
        ("3 4", "unexpected '4' at position 2"),
        ("9 ** 9 ** 9", "the result would have more than 1000 digits"),
        ("abs(-2)", "unexpected character 'a' at position 0; use numbers, + - * / ** and parentheses"),
    ],
)
def test_calculator_errors_are_strings_for_the_model(expression, expected):
    """What the evaluator refuses comes back as the tool's result; the hostile inputs are in tests/test_arith.py."""
    assert calculator(expression) == f"Error: {expected}"
    assert calculator(12) == "Error: expression must be a string, got int"  # type: ignore[arg-type]
