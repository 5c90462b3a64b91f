"""Safe evaluation of arithmetic that a model wrote: the one evaluator behind the `calculator` tool and
the countdown verifier.

`evaluate(text, grammar)` lets only digits, `.eE`, operators, parentheses and whitespace through to
Python's `ast` parser (the parser only), walks the tree itself, accepting number literals, the
operators its `Grammar` allows and parentheses, and computes in exact rational arithmetic
(`Fraction`; a float only where a fractional power makes one). Work is bounded before it can grow:
the text's length and parentheses depth, each literal's size, and the digits of every exact
intermediate value (a power is refused before it is computed). It must never `eval`, `exec` or
`compile` what it is given, never look a name up, and never raise anything but `ExpressionError`
on any text.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from llmenv.errors import ExpressionError

__all__ = ["Evaluation", "ExpressionError", "Grammar", "evaluate"]


Number = Fraction | float


@dataclass(frozen=True)
class Grammar:
    """What `evaluate` accepts and how large it lets an expression and its values grow."""

    power: bool = False
    """`**` is allowed: exact for an integer exponent, a float for a fractional one."""
    caret_is_power: bool = False
    """`^` means `**`, as in math notation (Python's `^` is xor); needs `power`."""
    decimals: bool = False
    """Literals may be decimals (`1.5`, `.5`, `2.`, `1e3`), read exactly; otherwise only integers."""
    unary_plus: bool = False
    """`+x` is allowed (`-x` always is)."""
    max_chars: int = 1000
    """Longest text accepted."""
    max_depth: int = 64
    """Deepest nesting of parentheses (under 200, where Python's parser stops)."""
    max_literal_digits: int = 18
    """Most digits in one literal (a decimal's exponent counts towards `max_digits` instead)."""
    max_digits: int = 10_000
    """Most digits (about) of the numerator and denominator of every exact value, literals included."""

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_depth", "max_literal_digits", "max_digits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Grammar.{name} must be a positive int, got {value!r}")
        if self.max_depth >= 200:
            raise ValueError(f"Grammar.max_depth must be under 200 (Python's parser limit), got {self.max_depth}")
        if self.caret_is_power and not self.power:
            raise ValueError("Grammar.caret_is_power needs power=True")

    def hint(self) -> str:
        """What an expression may contain, for error messages."""
        operators = "+ - * / **" if self.power else "+ - * /"
        return f"use {'numbers' if self.decimals else 'whole numbers'}, {operators} and parentheses"


@dataclass(frozen=True)
class Evaluation:
    """An expression's value and the literals it contains, unsigned, in the order they are written."""

    value: Number
    literals: tuple[Fraction, ...]


_ARITHMETIC: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_SYMBOLS = {ast.Pow: "**", ast.FloorDiv: "//", ast.BitXor: "^", ast.UAdd: "+"}  # what a grammar may refuse
_KINDS: dict[type[ast.AST], str] = {ast.Name: "names", ast.Call: "function calls", ast.Attribute: "attributes"}
# Only these reach Python's parser: no string, keyword or comment, so it has nothing to warn about
# (`"\\d"`, `1if`) and everything it can build is the arithmetic below, or a name `e`, a call `2 (3)`,
# an attribute `(1).e` or `...`, which the walk refuses.
_NOT_ARITHMETIC = re.compile(r"[^0-9\s.eE+\-*/()^]")
_WHITESPACE = re.compile(r"\s")
_LEADING_ZEROS = re.compile(r"(?<![\w.])(?<![eE][+-])0+(?=[0-9])")  # `007` is 7 as people write it; Python refuses it
_INTEGER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?(?:[eE](?P<exponent>[+-]?[0-9]+))?")
_LOG10_2 = math.log10(2)


def evaluate(text: str, grammar: Grammar) -> Evaluation:
    """The exact value of the arithmetic expression `text` and its literals; `ExpressionError` says what is wrong.

    >>> evaluate("(19 + 36) * 7 / 5", Grammar())
    Evaluation(value=Fraction(77, 1), literals=(Fraction(19, 1), Fraction(36, 1), Fraction(7, 1), Fraction(5, 1)))
    >>> evaluate("0.1 + 0.2", Grammar(decimals=True)).value
    Fraction(3, 10)
    >>> evaluate("9 ** 9 ** 9", Grammar(power=True))
    Traceback (most recent call last):
    ...
    llmenv.errors.ExpressionError: the result would have more than 10000 digits
    """
    if not isinstance(text, str):
        raise ExpressionError(f"the expression must be a string, got {type(text).__name__}")
    if len(text) > grammar.max_chars:
        raise ExpressionError(f"the expression is longer than {grammar.max_chars} characters")
    if (stray := _NOT_ARITHMETIC.search(text)) is not None:
        raise ExpressionError(f"unexpected character {stray.group()!r} at position {stray.start()}; {grammar.hint()}")
    # Equal-length replacements keep positions in messages those of `text` (each `^` shifts later ones by one).
    source = _LEADING_ZEROS.sub(lambda zeros: " " * len(zeros.group()), _WHITESPACE.sub(" ", text))
    if grammar.caret_is_power:
        source = source.replace("^", "**")
    lead = len(source) - len(source.lstrip())
    source = source.strip()  # a leading space is an "unexpected indent" to Python
    if not source:
        raise ExpressionError("the expression is empty")
    if _parentheses_depth(source) > grammar.max_depth:
        raise ExpressionError(f"parentheses nested deeper than {grammar.max_depth} levels")
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(_syntax_message(exc, source, lead)) from None
    except (ValueError, MemoryError, RecursionError) as exc:  # limits of Python's own parser
        raise ExpressionError(f"the expression cannot be parsed: {exc}") from None
    return _evaluate(tree, source, grammar)


def _parentheses_depth(source: str) -> int:
    depth = deepest = 0
    for char in source:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(depth - 1, 0)
    return deepest


def _syntax_message(exc: SyntaxError, source: str, lead: int) -> str:
    """Python's complaint with the position in the caller's text; "invalid syntax" made specific."""
    if exc.offset is None or not 1 <= exc.offset <= len(source):  # no position, or past the end
        return "the expression ends where a number or '(' was expected" if exc.msg == "invalid syntax" else exc.msg
    position = exc.offset - 1
    if exc.msg.startswith("invalid syntax"):
        return f"unexpected {source[position]!r} at position {lead + position}"
    return f"{exc.msg} at position {lead + position}"


def _evaluate(tree: ast.expr, source: str, grammar: Grammar) -> Evaluation:
    """Post-order walk with an explicit stack: a 500-deep `1+1+...` or `----1` never meets Python's recursion limit."""
    literals: list[Fraction] = []
    values: list[Number] = []
    todo: list[tuple[ast.expr, bool]] = [(tree, False)]  # (node, whether its operands are on `values`)
    while todo:
        node, ready = todo.pop()
        if isinstance(node, ast.Constant):
            literals.append(_literal(node, source, grammar))
            values.append(literals[-1])
        elif isinstance(node, ast.UnaryOp):
            if ready:
                values.append(-values.pop() if isinstance(node.op, ast.USub) else values.pop())
            else:
                _check_operator(node.op, grammar)
                todo += [(node, True), (node.operand, False)]
        elif isinstance(node, ast.BinOp):
            if ready:
                right = values.pop()
                values.append(_binary(node.op, values.pop(), right, grammar))
            else:
                _check_operator(node.op, grammar)
                todo += [(node, True), (node.right, False), (node.left, False)]  # left on top: reading order
        else:
            kind = _KINDS.get(type(node), f"Python {type(node).__name__} expressions")
            text = _segment(source, node)
            raise ExpressionError(f"{kind} are not allowed: {text!r:.80}; {grammar.hint()}")
    return Evaluation(values.pop(), tuple(literals))


def _check_operator(op: ast.operator | ast.unaryop, grammar: Grammar) -> None:
    """Raise unless `grammar` allows `op`: unary minus always, + - * / always, unary plus and ** if asked."""
    allowed: tuple[type[ast.AST], ...] = (ast.USub, ast.Add, ast.Sub, ast.Mult, ast.Div)
    allowed += (ast.UAdd,) * grammar.unary_plus + (ast.Pow,) * grammar.power
    if not isinstance(op, allowed):
        unary = "unary " if isinstance(op, ast.unaryop) else ""
        symbol = _SYMBOLS.get(type(op), type(op).__name__)
        raise ExpressionError(f"the operator {unary}{symbol} is not allowed; {grammar.hint()}")


def _segment(source: str, node: ast.expr) -> str:
    """The text of `node`: `source` is one ASCII line, so ast's byte offsets are character offsets."""
    return source[node.col_offset : node.end_col_offset]


def _literal(node: ast.Constant, source: str, grammar: Grammar) -> Fraction:
    """The exact value of a number literal, read from its text (`0.1` is 1/10, not the float nearest it)."""
    text = _segment(source, node)
    if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
        raise ExpressionError(f"{text!r:.80} is not a number; {grammar.hint()}")
    if not grammar.decimals and not _INTEGER.fullmatch(text):
        raise ExpressionError(f"only whole numbers are allowed, got {text!r:.80}")
    number = _DECIMAL.fullmatch(text)
    if number is None:  # hexadecimal or `1_000`: the alphabet keeps them out today, a wider one would fail safe
        raise ExpressionError(f"unsupported number literal {text!r:.80}; write it in decimal digits")
    digits = len(number["whole"]) + len(number["fraction"] or "")
    if digits > grammar.max_literal_digits:
        raise ExpressionError(f"number literal too long: {digits} digits > {grammar.max_literal_digits}")
    exponent = number["exponent"] or "0"
    if len(exponent) > 9 or abs(int(exponent)) + digits > grammar.max_digits:
        raise ExpressionError(f"number literal {text!r:.80} is too large: more than {grammar.max_digits} digits")
    return Fraction(text)


def _binary(op: ast.operator, left: Number, right: Number, grammar: Grammar) -> Number:
    if isinstance(op, ast.Pow):
        return _power(left, right, grammar)
    if isinstance(op, ast.Div) and right == 0:
        raise ExpressionError("division by zero")
    try:
        value = _ARITHMETIC[type(op)](left, right)
    except OverflowError:  # a huge Fraction met a float
        raise ExpressionError("the result is too large") from None
    return _bounded(value, grammar)


def _power(base: Number, exponent: Number, grammar: Grammar) -> Number:
    """`base ** exponent`, exact for a rational base and an integer exponent, refused before it is too big."""
    if isinstance(base, Fraction) and isinstance(exponent, Fraction) and exponent.denominator == 1:
        n = exponent.numerator
        if base == 0 and n < 0:
            raise ExpressionError("division by zero (0 raised to a negative power)")
        size = max(abs(base.numerator), base.denominator)  # 1 for 0, 1 and -1, whose powers stay small
        if size > 1 and abs(n) > grammar.max_digits / math.log10(size):  # no float of a huge `n`
            raise ExpressionError(f"the result would have more than {grammar.max_digits} digits")
        return _bounded(base**n, grammar)
    integral = exponent.denominator == 1 if isinstance(exponent, Fraction) else exponent.is_integer()
    if base < 0 and not integral:
        raise ExpressionError("a negative number raised to a fractional power is not a real number")
    try:
        return _bounded(float(base) ** float(exponent), grammar)
    except OverflowError:
        raise ExpressionError("the result is too large") from None
    except ZeroDivisionError:
        raise ExpressionError("division by zero (0 raised to a negative power)") from None


def _bounded(value: Number, grammar: Grammar) -> Number:
    """`value`, unless it is an infinite float or a Fraction with more than `grammar.max_digits` digits."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError("the result is too large")
        return value
    bits = max(abs(value.numerator).bit_length(), value.denominator.bit_length())
    if bits * _LOG10_2 > grammar.max_digits:
        raise ExpressionError(f"the result would have more than {grammar.max_digits} digits")
    return value
