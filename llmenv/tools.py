"""Tools for tool-use environments: `python` (sandboxed code execution) and `calculator` (arithmetic).

Each tool is a plain function with type hints and a Google-style docstring, so that
`llmenv.tool_env.tool_schema` can turn it into a JSON schema, and each returns a string for the
model, errors included (an error is a result the model should read, not an exception). `python`
runs code only through a sandbox with hard time and memory bounds; `calculator` evaluates with
`llmenv.arith` (parsed, never executed, with bounds on size). Nothing here may eval or exec
model output in this process.
"""

from __future__ import annotations

from fractions import Fraction

from llmenv.arith import ExpressionError, Grammar, evaluate
from llmenv.sandboxes.base import Limits, Sandbox, SandboxError

__all__ = ["CALCULATOR_GRAMMAR", "PYTHON_LIMITS", "calculator", "python", "run_python"]

PYTHON_LIMITS = Limits(wall_time_s=5.0, memory_mb=256, max_output_bytes=64_000)
"""Bounds of one `python` tool call."""
MAX_TOOL_OUTPUT_CHARS = 2000
"""stdout and stderr are each cut to this many characters, with a marker saying how much was dropped."""


def _truncate(text: str, limit: int = MAX_TOOL_OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n... [truncated {len(text) - limit} more characters]"


def run_python(code: str, *, sandbox: Sandbox | None = None, limits: Limits = PYTHON_LIMITS) -> str:
    """Run `code` in `sandbox` (default: the shared local one) and describe the outcome as the `python` tool does."""
    if not isinstance(code, str):
        return f"Error: code must be a string, got {type(code).__name__}"
    if sandbox is None:
        from llmenv.sandboxes import default_sandbox

        sandbox = default_sandbox()
    try:
        result = sandbox.run(code, limits=limits)
    except SandboxError as exc:
        return f"Error: the sandbox could not run the code: {exc}"
    parts = []
    if result.stdout:
        parts.append("stdout:\n" + _truncate(result.stdout).rstrip("\n"))
    if result.stderr:
        parts.append("stderr:\n" + _truncate(result.stderr).rstrip("\n"))
    if result.output_truncated:
        parts.append(f"(output was cut at {limits.max_output_bytes} bytes)")
    if result.timed_out:
        parts.append(f"timed out after {limits.wall_time_s:g}s")
    elif result.memory_exceeded:
        parts.append(f"memory limit of {limits.memory_mb} MB exceeded")
    elif result.signal is not None:
        parts.append(f"killed by signal {result.signal}")
    elif result.exit_code not in (0, None):
        parts.append(f"exit status: {result.exit_code}")
    return "\n".join(parts) if parts else "(no output)"


def python(code: str) -> str:
    """Run Python code in a sandbox and return its stdout and stderr.

    Args:
        code: The Python program to run. Print what you want to see; the run is limited to 5 seconds and 256 MB.
    """
    return run_python(code)


# ---------------------------------------------------------------- calculator

CALCULATOR_GRAMMAR = Grammar(
    power=True,
    caret_is_power=True,
    decimals=True,
    unary_plus=True,
    max_chars=1000,
    max_depth=100,
    max_literal_digits=1000,
    max_digits=1000,
)
"""What `calculator` accepts: decimals, + - * / ** (or ^), parentheses; results of at most about 1000 digits."""


def _format(value: Fraction | float) -> str:
    """An integer as its digits, another rational as the nearest float (or `p/q` beyond float range)."""
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        try:
            return repr(float(value))
        except OverflowError:
            return f"{value.numerator}/{value.denominator}"
    return repr(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / ** and parentheses over decimal numbers.

    Args:
        expression: The expression to evaluate, e.g. "(1.5 + 2) * 3 ** 2".
    """
    if not isinstance(expression, str):
        return f"Error: expression must be a string, got {type(expression).__name__}"
    try:
        return _format(evaluate(expression, CALCULATOR_GRAMMAR).value)
    except ExpressionError as exc:
        return f"Error: {exc}"
