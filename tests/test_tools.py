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


@pytest.mark.parametrize(("expression", "expected"), [
    ("1 + 2 * 3", "7"), ("(1.5 + 2) * 3 ** 2", "31.5"), ("0.1 + 0.2", "0.3"), ("1 / 3", "0.3333333333333333"),
    ("-2 ** 2", "-4"), ("2 ** -1", "0.5"), ("2 ** 3 ** 2", "512"), ("2 ** 0.5", "1.4142135623730951"),
    ("10 / 4 * 2", "5"), ("-(-3)", "3"), (".5 * 4", "2"), ("1e3 + 1", "1001"), ("((((7))))", "7"),
    ("123456789 * 987654321", "121932631112635269"),
])
def test_calculator_evaluates(expression, expected):
    assert calculator(expression) == expected


@pytest.mark.parametrize(("expression", "message"), [
    ("1 / 0", "division by zero"), ("", "empty"), ("2 +", "ends where a number"), ("(1 + 2", "missing ')'"),
    ("1 + 2)", "unbalanced ')'"), ("__import__('os')", "unexpected character '_'"), ("2 ** 100000", "digits"),
    ("(-8) ** (1 / 3)", "not a real number"), ("(" * 200 + "1" + ")" * 200, "nested"), ("1" * 2000, "longer than"),
    ("3 4", "unexpected '4'"),
])
def test_calculator_errors_are_clear_strings(expression, message):
    result = calculator(expression)
    assert result.startswith("Error: ") and message in result, result
