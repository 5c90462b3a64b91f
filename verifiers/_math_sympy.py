"""The math verifier's slow path: parse answers into sympy objects and compare them, inside a worker process.

`llmenv.verifiers.math` decides what it can in the caller (plain numbers, clock times, answers
written the same way) and sends the rest here, to a persistent worker started with `serve(fd)` that
answers (gold, pred, precision, strict, allow_set_relation) requests over a socket and is killed by
the caller when a request overruns its deadline. Answers are read by the fast reader
(`_latex_fast`) or latex2sympy2_extended and compared structurally: numeric probes before
`simplify`, linear relations solved directly, constants by value, and size guards that refuse
huge powers and factorials before anything evaluates them. This module runs only in workers: it
imports sympy, must never be imported by the caller, and never evaluates text with
eval/exec/sympify.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any

from llmenv.verifiers.math import (
    _DECIMAL_RE,
    _PRIME_RE,
    MAX_POWER_DIGITS,
    WORKER_MEMORY_BYTES,
    Comparison,
    _close,
    _normalize,
    _text_form,
    _top_level_split,
    _unwrap,
)


class _TooLarge(Exception):
    """A power whose exact value would be too big to compute."""


class _Unparsed(Exception):
    """latex2sympy could not read the answer."""


@dataclass(frozen=True)
class _Parsed:
    value: Any  # a sympy object, or a list of them (None for an ellipsis) for sequences
    inexact: bool
    percent: bool
    degrees: bool


_LABEL_RE = re.compile(r"\s*((?:[A-Za-z]|\\[A-Za-z]+)(?:_\{[^{}]*\}|_\w)?(?:\s*\([^()=]*\))?)\s*=\s*([^=<>]+)")
_ELLIPSIS_RE = re.compile(r"\\[lc]?dots[bc]?(?![A-Za-z])|\\ldotp|\.\.\.|…")


def _latex(text: str) -> Any:
    """The sympy reading of an answer: the fast reader for everyday LaTeX, latex2sympy for the rest."""
    from latex2sympy2_extended.latex2sympy2 import latex2sympy, normalize_latex

    from llmenv.verifiers._latex_fast import Unsupported, parse_latex

    normalized = normalize_latex(text, _latex_config())
    try:
        return parse_latex(normalized)  # the same objects latex2sympy builds, ~100x faster
    except Unsupported:
        pass
    try:
        return latex2sympy(normalized, normalization_config=None)
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # antlr raises bare Exception for text it cannot read
        raise _Unparsed(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}") from exc


@functools.cache
def _latex_config() -> Any:
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig

    return NormalizationConfig(units=True, malformed_operators=True, nits=True, boxed="all")


def _parse(answer: str) -> _Parsed:
    norm = _normalize(answer)
    text = norm.text
    if not text:
        raise _Unparsed("empty answer")
    inexact = bool(_DECIMAL_RE.search(text))
    if _ELLIPSIS_RE.search(text):
        items = [item.strip() for item in _top_level_split(_unwrap(text))]
        value: Any = [None if _ELLIPSIS_RE.fullmatch(item) else _latex(item) for item in items]
    else:
        try:
            value = _latex(text)
        except _Unparsed:
            label = _LABEL_RE.fullmatch(text)  # "I_{\max} = ...": a name latex2sympy cannot read, then the value
            if label is None:
                raise
            import sympy

            value = sympy.Eq(sympy.Symbol(re.sub(r"\s+", "", label.group(1))), _latex(label.group(2)))
    return _Parsed(value, inexact, norm.percent, norm.degrees)


_parse_gold = functools.lru_cache(maxsize=4096)(_parse)


def _check_size(expr: Any) -> None:
    """Raise _TooLarge when a power or factorial in `expr` would have more than MAX_POWER_DIGITS digits."""
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and node.base.is_number and node.exp.is_number:
            _log10_size(node)
        elif isinstance(node, sympy.factorial) and node.args[0].is_number:
            _log10_size(node)


def _log10_size(expr: Any) -> float:
    """An upper bound of log10 |expr| for a number expression, computed without evaluating big powers."""
    import math

    import sympy

    if isinstance(expr, sympy.Pow) and expr.base.is_number and expr.exp.is_number:
        base, exponent = _log10_size(expr.base), _log10_size(expr.exp)
        if exponent > 6:  # the exponent alone is over a million
            raise _TooLarge(f"{expr.base} to a power of about 10^{exponent:.0f}")
        digits = abs(float(sympy.N(expr.exp, 15))) * max(base, 0.0)
        if digits > MAX_POWER_DIGITS:
            raise _TooLarge(f"a power with about {digits:.3g} digits")
        return digits
    if isinstance(expr, sympy.factorial) and expr.args[0].is_number:
        if _log10_size(expr.args[0]) > 5:
            raise _TooLarge(f"the factorial of a number over 10^5 ({expr.args[0]})")
        n = abs(float(sympy.N(expr.args[0], 15)))
        digits = n * math.log10(max(n, 2.0))  # log10(n!) < n log10(n)
        if digits > MAX_POWER_DIGITS:
            raise _TooLarge(f"a factorial with about {digits:.3g} digits")
        return digits
    if isinstance(expr, sympy.Add) and expr.is_number:  # |a + b| <= n max(|a|, |b|)
        return max((_log10_size(arg) for arg in expr.args), default=0.0) + math.log10(len(expr.args))
    if isinstance(expr, sympy.Mul) and expr.is_number:  # |a b| = |a| |b|; factors below 1 only shrink it
        return sum(max(_log10_size(arg), 0.0) for arg in expr.args)
    if expr.is_Rational:  # in integers: a float of a big numerator would overflow
        return max(math.log10(abs(expr.p)) - math.log10(expr.q), 0.0) if expr.p else 0.0
    if expr.is_Number and expr.is_finite:
        return math.log10(max(abs(float(expr)), 1.0))
    return 1.0


def _numbers_close(a: Any, b: Any, precision: int, inexact: bool) -> bool:
    """Two constant expressions: exact rationals exactly, the rest by value at precision + 25 digits.

    Inexact answers (written with a decimal point) are rounded to `precision` decimals as the fast
    path does. Exact ones ("\\sqrt{2}\\sqrt{3}" against "\\sqrt{6}") are equal when they agree to
    within 10^-(precision+20) relatively, which no two different closed forms of an answer's size
    do; `simplify` would often need seconds to say the same (a product of roots of unity that is 1).
    """
    import sympy

    if not inexact and a.is_Rational and b.is_Rational:
        return bool(a == b)
    digits = precision + 25
    x, y = sympy.N(a, digits), sympy.N(b, digits)
    if not (x.is_number and y.is_number):
        return False
    if x.is_infinite or y.is_infinite:
        return bool(x == y)
    if inexact and x.is_real and y.is_real:  # the fast path's rule: rounded to `precision` decimals
        return _close(Fraction(str(x)), Fraction(str(y)), False, precision)
    tolerance = sympy.Rational(1, 10**precision) if inexact else sympy.Rational(1, 10 ** (digits - 5))
    return bool(abs(x - y) <= tolerance * max(abs(x), abs(y)))


def _expr_equal(a: Any, b: Any, precision: int, inexact: bool, strict: bool = True) -> bool:
    import sympy

    if a == b:
        return True
    _check_size(a)
    _check_size(b)
    a, b = a.doit(), b.doit()
    if a == b:
        return True
    if a.is_number and b.is_number:
        return _numbers_close(a, b, precision, inexact)
    imaginary = sympy.Symbol("i")
    if imaginary in a.free_symbols | b.free_symbols:  # "1+2i" against "i(2-i)": i is the imaginary unit
        a_i, b_i = a.subs(imaginary, sympy.I), b.subs(imaginary, sympy.I)
        if a_i.is_number and b_i.is_number:
            return _numbers_close(a_i, b_i, precision, inexact)
        if a_i.free_symbols == b_i.free_symbols and _same_value(a_i, b_i):
            return True
    if a.free_symbols != b.free_symbols:
        if not strict and len(a.free_symbols) == len(b.free_symbols) == 1:  # f(x) against f(y)
            b = b.subs(next(iter(b.free_symbols)), next(iter(a.free_symbols)))
            return _same_value(a, b)
        return False
    if inexact:  # equal up to float rounding of coefficients: compare at a few rational points
        points = [{s: sympy.Rational(k + 2, 7 + k) for s in a.free_symbols} for k in range(3)]
        try:
            return all(_numbers_close(a.subs(p), b.subs(p), precision, True) for p in points)
        except (TypeError, ValueError, ZeroDivisionError):
            return _same_value(a, b)
    return _same_value(a, b)


_PROBES = ("0.61803398874989484820458683436563811", "1.3247179572447460259609088544780973")


def _clearly_different(a: Any, b: Any) -> bool:
    """Whether `a` and `b` are numerically far apart at a probe point (so no simplification can make them equal).

    `simplify` costs 5-200 ms and is what most unequal answers spent their time on; evaluating both
    sides at two fixed irrational-looking points costs well under a millisecond. A value that is not
    a finite number there (a pole, a log of a negative) decides nothing.
    """
    import sympy

    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    for probe in _PROBES if symbols else _PROBES[:1]:
        point = {s: sympy.Float(probe, 40) + j for j, s in enumerate(symbols)}
        try:
            x, y = (sympy.N(side.subs(point) if point else side, 30) for side in (a, b))
        except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
            return False
        finite = all(v.is_number and not v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo) for v in (x, y))
        if finite and abs(x - y) > sympy.Float("1e-12") * max(1, abs(x), abs(y)):
            return True
    return False


def _varies(expr: Any) -> bool:
    """Whether `expr` clearly takes two different values at the probe points (so it is not a constant)."""

    symbols = sorted(expr.free_symbols, key=str)
    if not symbols:
        return False
    shifted = expr.subs({s: s + 1 for s in symbols})  # the second probe point, one further along each axis
    return _clearly_different(expr, shifted)


def _same_value(a: Any, b: Any) -> bool:
    """Whether `a - b` simplifies to 0, after a numeric probe (a clear difference decides at once)."""
    import sympy

    return not _clearly_different(a, b) and bool(sympy.simplify(a - b) == 0)


def _is_label(equation: Any) -> bool:
    """An equation `name = value` (or `f(x) = value`) whose left side is only a name for its right side."""
    import sympy
    from sympy.core.function import AppliedUndef

    lhs = equation.lhs
    names = lhs.args if isinstance(lhs, sympy.Mul) else (lhs,)  # "\\Delta p" reads as delta*p
    if not names or not all(isinstance(name, (sympy.Symbol, AppliedUndef)) for name in names):
        return False
    return not any(equation.rhs.has(name) for name in names)


def _is_named(equation: Any) -> bool:
    """A gold `names = value` whose left side is built of names only ((p,q), V_1:V_2, NO/BO), no numbers."""
    import sympy

    lhs = equation.lhs
    atoms = lhs.atoms() if isinstance(lhs, sympy.Basic) else set()
    symbols = lhs.free_symbols if isinstance(lhs, sympy.Basic) else set()
    numbers = {a for a in atoms if isinstance(a, sympy.Number) and abs(a) != 1}
    return bool(symbols) and not numbers and not (equation.rhs.free_symbols & symbols)


def _as_set(value: Any) -> Any:
    """The set a relation in one unknown describes ("0 < f(x) < 1" is (0, 1)), or None."""
    import sympy

    if isinstance(value, sympy.Set):
        return value
    from sympy.core.function import AppliedUndef

    subjects = {side for rel in _relations(value) for side in (rel.lhs, rel.rhs) if not side.is_number}
    if len(subjects) == 1 and isinstance(subject := next(iter(subjects)), AppliedUndef):
        value = value.subs(subject, sympy.Dummy("t"))  # the unknown is a function's value, e.g. f(x)
    if len(value.free_symbols) != 1:
        return None
    linear = _linear_set(value, next(iter(value.free_symbols)))
    return linear if linear is not None else value.as_set()


def _linear_set(value: Any, x: Any) -> Any:
    """The solution set of relations linear in `x`, joined by And / Or, without sympy's general solver.

    `as_set` solves every inequality with `solve_univariate_inequality`, which first looks for a
    period of the expression: about 50 ms for "x < 1", most of the time a relation comparison costs.
    None when some relation is not linear (the caller then asks `as_set`).
    """
    import sympy

    if isinstance(value, (sympy.And, sympy.Or)):
        parts = [_linear_set(arg, x) for arg in value.args]
        if any(part is None for part in parts):
            return None
        return sympy.Intersection(*parts) if isinstance(value, sympy.And) else sympy.Union(*parts)
    if not isinstance(value, sympy.Rel):
        return None
    difference = sympy.expand(value.lhs - value.rhs)
    slope, rest = difference.coeff(x, 1), difference.coeff(x, 0)
    if not (slope.is_number and rest.is_number and slope.is_nonzero) or difference != slope * x + rest:
        return None
    root = -rest / slope
    if not root.is_real:
        return None
    if isinstance(value, sympy.Eq):
        return sympy.FiniteSet(root)
    if isinstance(value, sympy.Ne):
        return sympy.Union(sympy.Interval.open(-sympy.oo, root), sympy.Interval.open(root, sympy.oo))
    op = value.rel_op if slope.is_positive else {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[value.rel_op]
    if op in ("<", "<="):
        return sympy.Interval(-sympy.oo, root, True, op == "<")
    return sympy.Interval(root, sympy.oo, op == ">", True)


def _relations(value: Any) -> list[Any]:
    import sympy

    if isinstance(value, (sympy.And, sympy.Or)):
        return [rel for arg in value.args for rel in _relations(arg)]
    return [value] if isinstance(value, sympy.Rel) else []


def _equal(g: Any, p: Any, precision: int, inexact: bool, allow_set_relation: bool, strict: bool = True) -> bool:
    import sympy
    from sympy.matrices import MatrixBase
    from sympy.matrices.expressions import MatrixExpr

    def same(x: Any, y: Any) -> bool:
        return _equal(x, y, precision, inexact, allow_set_relation, strict)

    def same_elements(xs: Sequence[Any], ys: Sequence[Any]) -> bool:
        return all(any(same(x, y) for y in ys) for x in xs) and all(any(same(x, y) for x in xs) for y in ys)

    if isinstance(g, MatrixExpr) or isinstance(p, MatrixExpr):  # a sum or product of matrices: its value
        g, p = (x.doit() if isinstance(x, MatrixExpr) else x for x in (g, p))
    if isinstance(g, list) or isinstance(p, list):  # sequences with ellipses: element-wise, in order
        if not (isinstance(g, list) and isinstance(p, list)) or len(g) != len(p):
            return False
        pairs = zip(g, p, strict=True)
        return all((x is None and y is None) or (x is not None and y is not None and same(x, y)) for x, y in pairs)
    if isinstance(g, MatrixBase) or isinstance(p, MatrixBase):
        return (
            isinstance(g, MatrixBase)
            and isinstance(p, MatrixBase)
            and g.shape == p.shape
            and all(same(x, y) for x, y in zip(g, p, strict=True))
        )
    g_eq, p_eq = isinstance(g, sympy.Eq), isinstance(p, sympy.Eq)
    g_rel = isinstance(g, (sympy.Rel, sympy.And, sympy.Or))
    p_rel = isinstance(p, (sympy.Rel, sympy.And, sympy.Or))
    if g_eq and p_eq:
        if _is_label(g) and _is_label(p) and (g.lhs == p.lhs or not isinstance(g.lhs, sympy.Symbol)):
            return same(g.rhs, p.rhs)  # assignments x = v, f(x) = 2x + 3 against y = 2x + 3: compare values
        g_zero, p_zero = g.lhs - g.rhs, p.lhs - p.rhs  # equations: same up to a nonzero constant factor
        if g_zero == 0 or p_zero == 0:
            return bool(g_zero == p_zero)
        if g_zero.free_symbols != p_zero.free_symbols or _varies(g_zero / p_zero):
            return False
        ratio = sympy.simplify(g_zero / p_zero)
        return bool(ratio.is_number and ratio != 0 and ratio.is_finite)
    if p_eq and not g_rel:  # "x = 5" or "2 + 3 = 5" for a gold of 5: the last value is the answer
        return same(g, p.rhs)
    if g_eq and (_is_label(g) or _is_named(g)) and not p_rel:  # a gold "f(x) = 2x + 3" or "(p,q) = (3,2)"
        return same(g.rhs, p)
    g_set, p_set = isinstance(g, sympy.Set), isinstance(p, sympy.Set)
    if g_eq and isinstance(g.rhs, sympy.Set) and isinstance(g.lhs, sympy.Symbol):  # "x \in [-2, 7]"
        return same(g.rhs, p)
    if p_eq and isinstance(p.rhs, sympy.Set) and isinstance(p.lhs, sympy.Symbol):
        return same(g, p.rhs)
    # a gold -2 <= x <= 7 is answered by [-2, 7]; a gold set is answered by a relation only when allowed
    if (isinstance(g, sympy.And) and p_set) or (isinstance(p, sympy.And) and g_set and allow_set_relation):
        g_as, p_as = (_as_set(g), p) if isinstance(g, sympy.And) else (g, _as_set(p))
        return g_as is not None and p_as is not None and bool(g_as == p_as)
    if g_rel or p_rel:
        if (g_rel and p_rel) or (allow_set_relation and (g_set or p_set)):
            g_as, p_as = _as_set(g), _as_set(p)
            if g_rel and p_rel and g.free_symbols != p.free_symbols:
                return False
            return g_as is not None and p_as is not None and bool(g_as == p_as)
        return False
    if isinstance(g, sympy.FiniteSet) and isinstance(p, sympy.FiniteSet):
        return same_elements(list(g.args), list(p.args))
    if isinstance(g, sympy.Interval) and g.left_open and g.right_open and isinstance(p, sympy.FiniteSet):
        return len(p.args) == 2 and same_elements([g.start, g.end], list(p.args))  # a gold pair (1,3) as "1, 3"
    if isinstance(g, sympy.Interval) and isinstance(p, sympy.Interval):
        return (
            g.left_open == p.left_open
            and g.right_open == p.right_open
            and same(g.start, p.start)
            and same(g.end, p.end)
        )
    if isinstance(g, sympy.Union) and isinstance(p, sympy.Union):
        return len(g.args) == len(p.args) and same_elements(list(g.args), list(p.args))
    if g_set or p_set:
        return g_set and p_set and bool(g == p)
    if isinstance(g, sympy.Tuple) or isinstance(p, sympy.Tuple):
        return (
            isinstance(g, sympy.Tuple)
            and isinstance(p, sympy.Tuple)
            and len(g) == len(p)
            and all(same(x, y) for x, y in zip(g, p, strict=True))
        )
    if isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr):
        return _expr_equal(g, p, precision, inexact, strict)
    return bool(g == p)


def _slow_compare(gold: str, pred: str, precision: int, strict: bool, allow_set_relation: bool) -> Comparison:
    """Parse both answers with latex2sympy and compare them structurally (worker side)."""
    import sympy

    if _text_form(gold) and _text_form(gold) == _text_form(pred):
        return Comparison(True, "slow")
    if len(_PRIME_RE.findall(_normalize(gold).text)) != len(_PRIME_RE.findall(_normalize(pred).text)):
        return Comparison(False, "slow", note="the answers differ in primes (E against E')")
    try:
        g = _parse_gold(gold)
    except _Unparsed as exc:
        return Comparison(False, "slow", error=f"reference answer did not parse: {exc}")
    try:
        p = _parse(pred)
    except _Unparsed as exc:
        return Comparison(False, "slow", note=f"prediction did not parse: {exc}")
    inexact = g.inexact or p.inexact
    gv, pv = g.value, p.value
    if g.degrees != p.degrees:  # 30^\circ against pi/6
        degrees_to_radians = sympy.pi / 180
        if g.degrees and isinstance(gv, sympy.Expr) and isinstance(pv, sympy.Expr) and pv.has(sympy.pi):
            gv = gv * degrees_to_radians
        elif p.degrees and isinstance(pv, sympy.Expr) and isinstance(gv, sympy.Expr) and gv.has(sympy.pi):
            pv = pv * degrees_to_radians
    try:
        if _equal(gv, pv, precision, inexact, allow_set_relation, strict):
            return Comparison(True, "slow")
        exprs = isinstance(gv, sympy.Expr) and isinstance(pv, sympy.Expr)
        if g.percent != p.percent and exprs:  # 10\% is also 0.1 (and, above, 10)
            gv, pv = (gv / 100 if g.percent else gv), (pv / 100 if p.percent else pv)
            return Comparison(_equal(gv, pv, precision, inexact, allow_set_relation, strict), "slow")
    except _TooLarge as exc:
        return Comparison(False, "slow", error=f"refused to evaluate {exc}")
    return Comparison(False, "slow")


def serve(fd: int) -> None:
    """Worker main loop: answer (gold, pred, options) requests on socket `fd` until it closes."""
    import logging
    import resource
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ValueError, OSError):
        pass  # a lower hard limit is already in place
    sys.setrecursionlimit(5000)
    conn = Connection(fd)
    _latex("1")  # import and warm both readers before saying ready (the fast one refuses \\pm)
    _latex("x \\pm 1")
    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = _slow_compare(*request)
            reply = (result.equal, result.error, result.note)
        except Exception as exc:  # noqa: BLE001 - sent back as Comparison.error, never swallowed
            reply = (False, f"comparison crashed: {type(exc).__name__}: {str(exc)[:200]}", None)
        conn.send(reply)
