"""Tools for tool-use environments: `python` (sandboxed code execution) and `calculator` (arithmetic).

Each tool is a plain function with type hints and a Google-style docstring, so that
`llmenv.tool_env.tool_schema` can turn it into a JSON schema, and each returns a string for the
model, errors included (an error is a result the model should read, not an exception). `python`
runs code only through a sandbox with hard time and memory bounds; `calculator` parses with a
small grammar of its own. Nothing here may eval or exec model output in this process.
"""

from __future__ import annotations

from fractions import Fraction

from llmenv.sandboxes.base import Limits, Sandbox, SandboxError

__all__ = ["PYTHON_LIMITS", "calculator", "python", "run_python"]

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

_MAX_EXPRESSION_CHARS = 1000
_MAX_DEPTH = 100
_MAX_DIGITS = 10_000


class _CalcError(Exception):
    pass


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) tokens: numbers, operators (** counted as one), parentheses."""
    tokens, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c.isdigit() or (c == "." and i + 1 < len(text) and text[i + 1].isdigit()):
            j = i
            while j < len(text) and text[j].isdigit():
                j += 1
            if j < len(text) and text[j] == ".":
                j += 1
                while j < len(text) and text[j].isdigit():
                    j += 1
            if j < len(text) and text[j] in "eE" and (
                (j + 1 < len(text) and text[j + 1].isdigit())
                or (j + 2 < len(text) and text[j + 1] in "+-" and text[j + 2].isdigit())
            ):
                j += 2
                while j < len(text) and text[j].isdigit():
                    j += 1
            tokens.append(("num", text[i:j], i))
            i = j
        elif text.startswith("**", i):
            tokens.append(("op", "**", i))
            i += 2
        elif c in "+-*/()^":
            tokens.append(("op", "**" if c == "^" else c, i))
            i += 1
        else:
            raise _CalcError(f"unexpected character {c!r} at position {i}; use numbers, + - * / ** and parentheses")
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*; unary := ('+'|'-') unary | power;
    power := atom ('**' unary)?; atom := number | '(' expr ')'."""

    def __init__(self, tokens: list[tuple[str, str, int]], length: int) -> None:
        self.tokens, self.pos, self.length, self.depth = tokens, 0, length, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def where(self) -> str:
        return f"position {self.tokens[self.pos][2]}" if self.pos < len(self.tokens) else "the end"

    def expr(self) -> Fraction | float:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _CalcError(f"the expression is nested more than {_MAX_DEPTH} levels deep")
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            right = self.term()
            value = value + right if op == "+" else value - right
        self.depth -= 1
        return value

    def term(self) -> Fraction | float:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            right = self.unary()
            if op == "*":
                value = value * right
            elif right == 0:
                raise _CalcError("division by zero")
            else:
                value = value / right
        return value

    def unary(self) -> Fraction | float:
        if self.peek() in ("+", "-"):
            op = self.tokens[self.pos][1]
            self.pos += 1
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise _CalcError(f"the expression is nested more than {_MAX_DEPTH} levels deep")
            value = self.unary()
            self.depth -= 1
            return -value if op == "-" else value
        return self.power()

    def power(self) -> Fraction | float:
        base = self.atom()
        if self.peek() != "**":
            return base
        self.pos += 1
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _CalcError(f"the expression is nested more than {_MAX_DEPTH} levels deep")
        exponent = self.unary()
        self.depth -= 1
        return _power(base, exponent)

    def atom(self) -> Fraction | float:
        if self.pos >= len(self.tokens):
            raise _CalcError("the expression ends where a number or '(' was expected")
        kind, text, position = self.tokens[self.pos]
        if kind == "num":
            self.pos += 1
            return Fraction(text)
        if text == "(":
            self.pos += 1
            value = self.expr()
            if self.peek() != ")":
                raise _CalcError(f"missing ')' at {self.where()} for the '(' at position {position}")
            self.pos += 1
            return value
        raise _CalcError(f"expected a number or '(' at position {position}, got {text!r}")


def _power(base: Fraction | float, exponent: Fraction | float) -> Fraction | float:
    if isinstance(exponent, Fraction) and exponent.denominator == 1 and isinstance(base, Fraction):
        n = exponent.numerator
        if base == 0 and n < 0:
            raise _CalcError("division by zero (0 raised to a negative power)")
        size = max(len(str(abs(base.numerator))), len(str(base.denominator)))
        if abs(n) * size > _MAX_DIGITS and abs(base) != 1 and base != 0:
            raise _CalcError(f"the result would have more than {_MAX_DIGITS} digits")
        return base**n
    if float(base) < 0:
        raise _CalcError("a negative number raised to a fractional power is not a real number")
    try:
        return float(base) ** float(exponent)
    except OverflowError:
        raise _CalcError("the result is too large") from None


def _format(value: Fraction | float) -> str:
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        try:
            return repr(float(value))
        except OverflowError:
            return f"{value.numerator}/{value.denominator}"
    if value != value or value in (float("inf"), float("-inf")):
        raise _CalcError("the result is too large")
    return repr(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / ** and parentheses over decimal numbers.

    Args:
        expression: The expression to evaluate, e.g. "(1.5 + 2) * 3 ** 2".
    """
    if not isinstance(expression, str):
        return f"Error: expression must be a string, got {type(expression).__name__}"
    if len(expression) > _MAX_EXPRESSION_CHARS:
        return f"Error: the expression is longer than {_MAX_EXPRESSION_CHARS} characters"
    try:
        tokens = _tokenize(expression)
        if not tokens:
            return "Error: the expression is empty"
        parser = _Parser(tokens, len(expression))
        value = parser.expr()
        if parser.pos != len(tokens):
            kind, text, position = tokens[parser.pos]
            hint = "unbalanced ')'" if text == ")" else f"unexpected {text!r}"
            return f"Error: {hint} at position {position}"
        return _format(value)
    except _CalcError as exc:
        return f"Error: {exc}"
