"""A fast recursive-descent reader for the common subset of final-answer LaTeX.

The math verifier reads answers with latex2sympy2_extended, whose ANTLR parser costs milliseconds per
answer. This module reads the everyday subset (numbers, symbols, arithmetic, ratios, fractions, roots,
powers, elementary and applied functions, relations, \\pm, lists, sets, intervals, tuple equations and
matrices) in tens of microseconds and builds the same sympy objects latex2sympy would, quirks included,
from text already passed through ``normalize_latex``. Whatever it is not sure about it refuses with
`Unsupported`, so that the caller falls back to latex2sympy: a refusal is always safe, a different
reading is a bug. It must never hand the text to eval, exec, sympify or parse_expr, and never build a
value that is expensive to compute (numeric powers and factorials stay unevaluated, input length and
nesting depth are capped).
"""

from __future__ import annotations

import re
from typing import Any

import sympy
from latex2sympy2_extended.logic import And
from latex2sympy2_extended.sets import FiniteSet

MAX_LENGTH = 2000
MAX_DEPTH = 64


class Unsupported(Exception):
    """The text is outside the fast parser's subset: use latex2sympy."""


class _Compound:
    """A set, interval, tuple or matrix: a whole answer, never an operand of arithmetic."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _Both:
    """The two values an element a \\pm b stands for, each one item of the answer's list."""

    def __init__(self, values: list[Any]) -> None:
        self.values = values


_TOKEN_RE = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z])|(\\[A-Za-z]+|\\[{}\\])|([-+*/:^_()\[\]{}|!=<>,;&]))")
_COMMA_NUMBER_RE = re.compile(r"^\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*$")  # latex2sympy's rule for 1,000

_TRIG = {"sin", "cos", "tan", "csc", "sec", "cot", "sinh", "cosh", "tanh"}
_ARC = {f"arc{name}" for name in ("sin", "cos", "tan", "csc", "sec", "cot", "sinh", "cosh", "tanh")}
_FUNCTIONS = _TRIG | _ARC | {"log", "ln", "exp"}
# Greek letters that latex2sympy reads as plain (lowercased) symbols; \pi, \Pi, \gamma and \Gamma are
# constants there, and only \pi is common enough in answers to mirror.
_GREEK = {
    "alpha", "beta", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
    "Delta", "Theta", "Lambda", "Xi", "Sigma", "Upsilon", "Phi", "Psi", "Omega",
}  # fmt: skip
_RELATIONS = {
    "=": sympy.Eq, "<": sympy.StrictLessThan, ">": sympy.StrictGreaterThan, r"\le": sympy.LessThan,
    r"\leq": sympy.LessThan, r"\ge": sympy.GreaterThan, r"\geq": sympy.GreaterThan, r"\neq": sympy.Ne,
    r"\ne": sympy.Ne,
}  # fmt: skip
_MUL_OPS = {"*", r"\cdot", r"\times", "/", r"\div", ":"}  # latex2sympy reads a ratio a:b as a/b
_SETS = {
    "R": sympy.S.Reals,
    "Z": sympy.S.Integers,
    "N": sympy.S.Naturals,
    "Q": sympy.S.Rationals,
    "C": sympy.S.Complexes,
}
_MATRICES = {"pmatrix", "bmatrix", "matrix"}
_COMMANDS = (
    _FUNCTIONS | _GREEK | {"pi", "infty", "frac", "dfrac", "tfrac", "sqrt", "cup", "cap", "in", "emptyset"}
    | {"mathbb", "begin", "end", "cdot", "times", "div", "pm", "mp"}
    | {name[1:] for name in _RELATIONS if name[0] == "\\"}
)  # fmt: skip


def _tokenize(text: str) -> list[str]:
    """Split `text` into tokens; any character or command outside the subset refuses the whole text."""
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos:].isspace():
                break
            raise Unsupported(f"unsupported character {text[pos]!r} at {pos}")
        token = match.group(match.lastindex or 0)
        if token[0] == "\\" and token[1:].isalpha() and token[1:] not in _COMMANDS:
            raise Unsupported(f"unsupported command {token}")
        tokens.append(token)
        pos = match.end()
    return tokens


def _is_set(value: Any) -> bool:
    return isinstance(value, _Compound) and not isinstance(value.value, sympy.MatrixBase)


def _mul_flat(left: Any, right: Any) -> Any:
    """latex2sympy's product: unevaluated, with nested products flattened."""
    args = [*(left.args if left.is_Mul else [left]), *(right.args if right.is_Mul else [right])]
    return sympy.Mul(*args, evaluate=False)


def _add_flat(left: Any, right: Any) -> Any:
    args = [*(left.args if left.is_Add else [left]), *(right.args if right.is_Add else [right])]
    return sympy.Add(*args, evaluate=False)


def _negate(value: Any) -> Any:
    return -value if value.is_Number else _mul_flat(sympy.Integer(-1), value)


def _cheap_to_compare(value: Any) -> bool:
    """Whether comparing `value` (an interval end) stays cheap: no factorials, no big numeric powers."""
    for node in sympy.preorder_traversal(value):
        if isinstance(node, sympy.factorial):
            return False
        if node.is_Pow and node.base.is_number and not (node.exp.is_Rational and abs(node.exp) <= 64):
            return False
    return True


class _Parser:
    """Recursive descent over the token list; each method mirrors one rule of latex2sympy's grammar."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.in_abs = False

    def peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if not token or (expected is not None and token != expected):
            raise Unsupported(f"expected {expected or 'more'} at token {self.pos}, found {token!r}")
        self.pos += 1
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unsupported(f"nesting deeper than {MAX_DEPTH}")

    # -- answers: lists, sets and relations -------------------------------------------------------

    def answer(self) -> Any:
        groups: list[list[Any]] = [[self.element()]]
        while self.peek() in (",", ";"):
            if self.take() == ";":
                groups.append([])
            groups[-1].append(self.element())
        if self.peek():
            raise Unsupported(f"unexpected {self.peek()!r} at token {self.pos}")
        both = any(isinstance(item, _Both) for group in groups for item in group)
        groups = [
            [value for item in group for value in (item.values if isinstance(item, _Both) else [item])]
            for group in groups
        ]
        items = [item for group in groups for item in group]
        if both and any(isinstance(item, sympy.core.relational.Relational | And | _Compound) for item in items):
            raise Unsupported("\\pm in a list with relations or sets")
        if len(items) == 1:
            return items[0].value if isinstance(items[0], _Compound) else items[0]
        first, rest = items[0], items[1:]
        if any(isinstance(item, _Compound) and not _is_set(item) for item in items):
            raise Unsupported("a matrix inside a list")
        relations = [isinstance(item, sympy.core.relational.Relational | And) for item in items]
        if sum(relations) > 1 and any(map(_is_set_equation, items)):
            raise Unsupported("a set equation in a list of relations (latex2sympy rejects x = (1, 2), y = 3)")
        if all(relations) or not any(relations):
            return _set_or_tuple([[_unwrap(item) for item in group] for group in groups])
        # "x = 1, 2" reads as x = {1, 2} when the left side is a lone symbol (or a tuple of symbols, as in
        # "(x, y) = (1, 2), (3, 4)") and nothing else relates
        lone = isinstance(first, sympy.Eq) and (first.lhs.is_Symbol or isinstance(first.lhs, sympy.Tuple))
        if lone and not any(relations[1:]) and len(groups) == 1:
            return sympy.Eq(first.lhs, _set_or_tuple([[first.rhs, *map(_unwrap, rest)]]), evaluate=False)
        raise Unsupported("a list mixing relations and values")

    def element(self) -> Any:
        """A relation, an expression, a set expression joined by \\cup and \\cap, or a \\pm b."""
        if self.peek() in (r"\pm", r"\mp"):  # latex2sympy's plus_minus_expr: \pm b is the two items -b, b
            self.take()
            right = _expr(self.additive())
            return _Both([_as_unary_minus(right), right])
        value = self.relation()
        if self.peek() in (r"\pm", r"\mp"):  # a \pm b is a + b, a - b (the order does not matter in a set)
            self.take()
            left, right = _expr(value), _expr(self.additive())
            return _Both(
                [sympy.Add(left, right, evaluate=False), sympy.Add(left, _as_unary_minus(right), evaluate=False)]
            )
        if self.peek() in (r"\cup", r"\cap"):
            value = self.set_operations(value)
        return value

    def set_operations(self, left: Any) -> _Compound:
        while self.peek() in (r"\cup", r"\cap"):
            operation = sympy.Union if self.take() == r"\cup" else sympy.Intersection
            right = self.additive()
            if not (_is_set(left) and _is_set(right)):
                raise Unsupported("\\cup or \\cap of something that is not a set")
            # latex2sympy turns tuples into finite sets here: (1, 3) \cup (2, 3) is {1, 3} U {2, 3}
            sides = [
                FiniteSet(*side.value) if isinstance(side.value, sympy.Tuple) else side.value for side in (left, right)
            ]
            left = _Compound(operation(*sides, evaluate=False))
        return left

    def relation(self) -> Any:
        names = self.symbol_tuple() if self.peek() == "(" else None
        if names is not None:
            return self.tuple_equation(names)
        left = self.additive()
        if self.peek() == r"\in":
            self.take()
            return self.set_equation(left, self.element())
        while self.peek() in _RELATIONS:
            make = _RELATIONS[self.take()]
            right = self.additive()
            if make is sympy.Eq and _is_set(right):
                # latex2sympy's set relation: x = [0, 1] (like x \in [0, 1]) reads as Eq(x, set)
                return self.set_equation(left, self.set_operations(right))
            if isinstance(left, _Compound) or isinstance(right, _Compound):
                raise Unsupported("a relation between sets")
            if isinstance(left, And):
                left = And(*left._unsorted_args, make(left._unsorted_args[-1].rhs, right, evaluate=False))
            elif isinstance(left, sympy.core.relational.Relational):
                left = And(left, make(left.rhs, right, evaluate=False))
            else:
                left = make(left, right, evaluate=False)
        return left

    def symbol_tuple(self) -> sympy.Tuple | None:
        """latex2sympy's atom list: (p, q) right before = or \\in is a tuple of symbols, never an interval."""
        start, names = self.pos, []
        self.take("(")
        while (self.peek().isalpha() and self.peek() not in "eEI") or self.peek()[1:] in _GREEK:
            token = self.take()
            subscript = ""
            if self.peek() == "_":
                self.take()
                subscript = self.subscript()
            names.append(sympy.Symbol(((token[1:] if token[0] == "\\" else token) + subscript).lower()))
            if self.peek() != ",":
                break
            self.take()
        if len(names) >= 2 and self.peek() == ")" and self.peek(1) in ("=", r"\in"):
            self.take()
            return sympy.Tuple(*names)
        self.pos = start
        return None

    def tuple_equation(self, names: sympy.Tuple) -> Any:
        """(p, q) = (3, 2) is Eq(Tuple(p, q), Tuple(3, 2)), and (a, b) = (1, 2) equates the tuple to an interval."""
        self.take()
        right = self.additive()
        if self.peek() in (r"\cup", r"\cap"):
            right = self.set_operations(right)
        if not _is_set(right) or self.peek() in _RELATIONS or self.peek() == r"\in":
            raise Unsupported("a tuple of symbols equated to something that is not a set")
        return sympy.Eq(names, right.value, evaluate=False)

    def set_equation(self, left: Any, right: Any) -> Any:
        if not (isinstance(left, sympy.Symbol) and _is_set(right)) or self.peek() in _RELATIONS:
            raise Unsupported("\\in or = with a set needs a lone symbol on the left")
        return sympy.Eq(left, right.value, evaluate=False)

    # -- arithmetic ---------------------------------------------------------------------------------

    def additive(self) -> Any:
        left = self.multiplicative()
        while self.peek() in ("+", "-"):
            operator = self.take()
            right = _expr(self.multiplicative())
            left = _add_flat(_expr(left), right if operator == "+" else _negate(right))
        return left

    def multiplicative(self, nofunc: bool = False) -> Any:
        left = self.unary(nofunc)
        while self.peek() in _MUL_OPS:
            operator = self.take()
            if nofunc and self.starts_function():
                raise Unsupported("an operator followed by a function inside a bare function argument")
            right, left = _expr(self.unary(nofunc)), _expr(left)
            if operator in ("/", r"\div", ":"):
                if left.is_Integer and right.is_Integer:
                    left = sympy.Rational(left, right)
                else:
                    left = sympy.Mul(left, sympy.Pow(right, -1, evaluate=False), evaluate=False)
            else:
                left = _mul_flat(left, right)
        return left

    def unary(self, nofunc: bool = False) -> Any:
        if self.peek() in ("+", "-"):
            sign = self.take()
            self.enter()
            value = _expr(self.unary(nofunc))
            self.depth -= 1
            return value if sign == "+" else _negate(value)
        factors = [self.postfix(nofunc)]
        while self.starts_factor(nofunc):
            if self.peek()[0].isdigit():
                raise Unsupported("a number right after another factor (latex2sympy adds 2 3 into 5)")
            factors.append(_expr(self.postfix(nofunc)))
        if len(factors) == 1:
            return factors[0]
        value = _expr(factors[-1])
        for factor in reversed(factors[:-1]):  # latex2sympy folds from the right
            factor = _expr(factor)
            if factor.is_Integer and value.is_Rational and value.p > 0 and value.q > 0:
                # its mixed fractions: 2\frac{1}{2} is 5/2 (and so, quirkily, is 2(3) = 5)
                value = sympy.Rational(factor * value.q + (value.p if factor >= 0 else -value.p), value.q)
            else:
                value = _mul_flat(factor, value)
        return value

    def starts_function(self) -> bool:
        token = self.peek()
        return token == "e" or token == r"\sqrt" or token[1:] in _FUNCTIONS

    def starts_factor(self, nofunc: bool) -> bool:
        token = self.peek()
        if not token or token in ("+", "-", "^", "_", "!", ")", "]", "}", r"\}", ",", ";", "&", r"\\"):
            return False
        if token in _RELATIONS or token in _MUL_OPS or token in (r"\cup", r"\cap", r"\in", r"\end", r"\pm", r"\mp"):
            return False
        if token == "|":
            return not self.in_abs  # inside |...| a bar closes; outside, |x||y| is a product
        # a bare function argument ends where the next function starts: \sin x \cos x
        return not (nofunc and self.starts_function())

    def postfix(self, nofunc: bool) -> Any:
        value = self.power(nofunc)
        while self.peek() == "!":
            if self.peek(1) == "=":  # latex2sympy lexes != as a relation
                raise Unsupported("!= is ambiguous")
            self.take()
            value = sympy.factorial(_expr(value), evaluate=False)
        return value

    def power(self, nofunc: bool) -> Any:
        value = self.primary(nofunc)
        while self.peek() == "^":
            self.take()
            value = sympy.Pow(_expr(value), self.exponent(), evaluate=False)
        return value

    def exponent(self) -> Any:
        """What follows ^ (or the _ of \\log): a braced expression or one atom (a whole digit run)."""
        token = self.take()
        if token == "{":
            return self.braced_rest()
        if token[0].isdigit():
            return _number(token)
        if token.isalpha() and token not in "eE" and self.peek() not in ("_", "^"):
            return sympy.I if token == "I" else sympy.Symbol(token.lower())
        if token[1:] in _GREEK or token in (r"\pi", r"\infty"):
            return _command_atom(token)
        raise Unsupported(f"unsupported exponent {token!r}")

    def braced_rest(self) -> Any:
        """The expression after an opening brace, through its closing brace."""
        self.enter()
        value = _expr(self.additive())
        self.take("}")
        self.depth -= 1
        return value

    # -- atoms ----------------------------------------------------------------------------------------

    def primary(self, nofunc: bool) -> Any:
        token = self.take()
        self.enter()
        try:
            return self.primary_inner(token, nofunc)
        finally:
            self.depth -= 1

    def primary_inner(self, token: str, nofunc: bool) -> Any:
        if token[0].isdigit():
            if self.peek() == "_":  # latex2sympy drops a number's subscript: 1112_3 is 1112
                self.number_subscript()
            return _number(token)
        if token in ("(", "["):
            return self.bracket(token)
        if token == "|":
            if self.in_abs:
                raise Unsupported("nested absolute values are ambiguous")
            self.in_abs = True
            value = _expr(self.additive())
            self.take("|")
            self.in_abs = False
            return sympy.Abs(value, evaluate=False)
        if token == r"\{":
            return self.finite_set()
        if token == "{" and nofunc:  # normalization writes \log_2 8 as \log_{2}{8}: a group in a bare argument
            return self.braced_rest()
        if token in (r"\frac", r"\dfrac", r"\tfrac"):
            self.take("{")
            top = self.braced_rest()
            self.take("{")
            bottom = self.braced_rest()
            if top.is_Integer and bottom.is_Integer:
                return sympy.Rational(top, bottom)
            return sympy.Mul(top, sympy.Pow(bottom, -1, evaluate=False), evaluate=False)
        if token == r"\sqrt":
            root = None
            if self.peek() == "[":
                self.take()
                root = _expr(self.additive())
                self.take("]")
            self.take("{")
            radicand = self.braced_rest()
            return sympy.Pow(radicand, sympy.S.Half if root is None else 1 / root, evaluate=False)
        if token == r"\emptyset":
            return _Compound(sympy.S.EmptySet)
        if token == r"\mathbb":
            self.take("{")
            name = self.take()
            self.take("}")
            if name not in _SETS:
                raise Unsupported(f"unsupported \\mathbb{{{name}}}")
            return _Compound(_SETS[name])
        if token == r"\begin":
            return self.matrix()
        if token[1:] in _FUNCTIONS:
            return self.function(token[1:])
        if token == "e":
            if self.peek() == "^":  # e^x is exp(x), evaluated as latex2sympy does
                self.take()
                return sympy.exp(self.exponent())
            if self.peek() == "_":
                raise Unsupported("a subscripted e")
            return sympy.E
        if token.isalpha() or token[1:] in _GREEK or token in (r"\pi", r"\infty"):
            return self.symbol(token)
        raise Unsupported(f"unexpected {token!r}")

    def number_subscript(self) -> None:
        """Skip a number's base subscript (one digit or letter, or a braced digit run or letter)."""
        self.take("_")
        token = self.take()
        braced = token == "{"
        if braced:
            token = self.take()
            self.take("}")
        if not (token.isalpha() or token.isdigit() and (braced or len(token) == 1)):  # 101_23: where does it end?
            raise Unsupported(f"unsupported number subscript {token!r}")
        if self.peek() in ("^", "_", "!") or self.starts_factor(False):
            raise Unsupported("a subscripted number followed by more")

    def symbol(self, token: str) -> Any:
        if token == "d" and (self.peek().isalpha() or self.peek()[:1] == "\\"):
            raise Unsupported("d followed by a letter is latex2sympy's differential")
        subscript, power = "", None
        for _ in range(2):  # x_1^2 and x^2_1 are both (x_1)^2
            if self.peek() == "_" and not subscript:
                if token in ("E", "I", r"\pi", r"\infty"):  # latex2sympy drops I's exponent and sub
                    raise Unsupported(f"a subscripted {token}")
                self.take()
                subscript = self.subscript()
            elif self.peek() == "^" and power is None:
                if token == "I":  # latex2sympy reads I^2 as I
                    raise Unsupported("a power of I")
                self.take()
                power = self.exponent()
        if self.peek() == "(" and self.call_follows():
            return self.call(token, subscript, power)
        if self.peek() == "(":
            self.check_call()
        if subscript:
            value = sympy.Symbol(((token[1:] if token[0] == "\\" else token) + subscript).lower())
        elif token == "I":
            value = sympy.I
        else:
            value = _command_atom(token) if token[0] == "\\" else sympy.Symbol(token.lower())
        return value if power is None else sympy.Pow(value, power, evaluate=False)

    def subscript(self) -> str:
        """latex2sympy names x_1 'x_1' and x_{n+1} 'x_{n+1}': the subscript's text without spaces."""
        token = self.take()
        if token == "{":
            parts = []
            while self.peek() != "}":
                part = self.take()
                if not (part.isalnum() or part in ("+", "-")):
                    raise Unsupported(f"unsupported subscript part {part!r}")
                parts.append(part)
            self.take("}")
            text = "".join(parts)
        elif token.isalnum():
            text = token
        else:
            raise Unsupported(f"unsupported subscript {token!r}")
        if not text or "." in text:
            raise Unsupported("an empty or decimal subscript")
        return f"_{{{text}}}" if len(text) > 1 else f"_{text}"

    def call_follows(self) -> bool:
        """Whether ( opens latex2sympy's function arguments: one atom, or atoms separated by commas.

        An atom is a number, a letter other than e, a Greek letter, \\pi or \\infty, a letter may take a
        subscript and a power of digits; f(2x), f(-x) and f(\\frac{1}{2}) are products there instead.
        """
        index = self.pos + 1
        while True:
            token = self.tokens[index] if index < len(self.tokens) else ""
            if token[:1].isdigit():
                index += 1
            elif token.isalpha() and token != "e" or token[1:] in _GREEK or token in (r"\pi", r"\infty"):
                index += 1
                if token.isalpha():
                    index = self.skip_script(index, "_")
                    index = self.skip_script(index, "^")
            else:
                return False
            token = self.tokens[index] if index < len(self.tokens) else ""
            if token == ")":
                return True
            if token != ",":
                return False
            index += 1

    def skip_script(self, index: int, mark: str) -> int:
        """The index past a subscript (alphanumeric) or power (digits) at `index`, if one is there."""
        tokens = self.tokens[index : index + 4]
        fits = str.isalnum if mark == "_" else str.isdigit
        if len(tokens) >= 2 and tokens[0] == mark and fits(tokens[1]) and "." not in tokens[1]:
            return index + 2
        if len(tokens) == 4 and tokens[0] == mark and tokens[1] == "{" and fits(tokens[2]) and tokens[3] == "}":
            return index + 4
        return index

    def call(self, token: str, subscript: str, power: Any) -> Any:
        """latex2sympy's applied function f(x): named by its text (F stays F, \\alpha keeps its backslash)."""
        if subscript or token in ("E", r"\pi", r"\infty"):
            raise Unsupported(f"a function call on {token}{subscript}")
        self.take("(")
        arguments = [_expr(self.additive())]
        while self.take() == ",":
            arguments.append(_expr(self.additive()))
        if power is not None and self.peek() == "^":
            raise Unsupported("a function with powers on both sides of its arguments")
        value = sympy.Function(token)(*arguments)
        return value if power is None else sympy.Pow(value, power, evaluate=False)

    def check_call(self) -> None:
        """A symbol before ( is a product only when the parenthesis holds a sum: f(x) is a function."""
        depth, index = 0, self.pos
        while index < len(self.tokens):
            token = self.tokens[index]
            if token in ("(", "[", "{", r"\{"):
                depth += 1
            elif token in (")", "]", "}", r"\}"):
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1 and token in ("+", "-"):
                return
            index += 1
        raise Unsupported("a symbol before a parenthesis without a sum reads as a function call")

    def bracket(self, opening: str) -> Any:
        items = [_expr(self.additive())]
        while self.peek() == ",":
            self.take()
            items.append(_expr(self.additive()))
        closing = self.take()
        if closing not in (")", "]") or (len(items) != 2 and closing != {"(": ")", "[": "]"}[opening]):
            raise Unsupported(f"unsupported bracket {opening}...{closing}")
        if len(items) == 1:
            return items[0]
        if len(items) > 2:
            return _Compound(sympy.Tuple(*items))
        left, right = items
        left_open, right_open = opening == "(", closing == ")"
        if not (_cheap_to_compare(left) and _cheap_to_compare(right)):
            raise Unsupported("interval ends too costly to compare")
        # latex2sympy's rule: an interval that would be empty is a tuple instead, (3, 2) is a point
        try:
            if (left_open and right_open and right <= left) or (not left_open and not right_open and right < left):
                return _Compound(sympy.Tuple(left, right))
        except TypeError:  # symbolic ends do not compare: an interval
            pass
        return _Compound(sympy.Interval(left, right, left_open=left_open, right_open=right_open))

    def finite_set(self) -> _Compound:
        items: list[Any] = []
        while self.peek() != r"\}":
            if items:
                self.take(",")
            item = self.additive()
            items.append(item.value if _is_set(item) else _expr(item))
        self.take(r"\}")
        return _Compound(FiniteSet(*items) if items else sympy.S.EmptySet)

    def matrix(self) -> _Compound:
        environment = self.environment_name()
        if environment not in _MATRICES:
            raise Unsupported(f"unsupported environment {environment}")
        rows: list[list[Any]] = [[]]
        while self.peek() != r"\end":
            rows[-1].append(_expr(self.additive()))
            separator = self.peek()
            if separator in ("&", r"\\"):
                self.take()
                if separator == r"\\":
                    rows.append([])
        self.take(r"\end")
        if len(rows) > 1 and not rows[-1]:  # a row separator right before \end ends no new row
            rows.pop()
        if self.environment_name() != environment or not rows[-1]:
            raise Unsupported("a malformed matrix")
        return _Compound(sympy.Matrix(rows))

    def environment_name(self) -> str:
        self.take("{")
        name = ""
        while self.peek() != "}":
            name += self.take()
        self.take("}")
        return name

    def function(self, name: str) -> Any:
        base: Any = None
        power: Any = None
        for _ in range(2):
            if self.peek() == "_" and name in ("log", "ln") and base is None:
                self.take()
                base = self.exponent()
            elif self.peek() == "^" and power is None:
                self.take()
                power = self.exponent()
        if self.peek() == "(":
            self.take()
            self.enter()
            argument = _expr(self.additive())
            self.take(")")
            self.depth -= 1
        else:
            if self.peek() == "e" or self.starts_function() and self.peek() != r"\sqrt":
                raise Unsupported("a bare function argument that starts with a function")
            self.enter()
            argument = _expr(self.multiplicative(nofunc=True))
            self.depth -= 1
        if name in ("log", "ln"):
            value = sympy.log(
                argument, base if base is not None else (10 if name == "log" else sympy.E), evaluate=False
            )
        elif name == "exp":
            value = sympy.exp(argument, evaluate=False)
        else:
            if name.startswith("arc"):
                name = "a" + name[3:]
            elif power == -1:  # \sin^{-1} is arcsin
                name, power = "a" + name, None
            value = getattr(sympy, name)(argument, evaluate=False)
        return sympy.Pow(value, power, evaluate=False) if power is not None and power != 0 else value


def _expr(value: Any) -> Any:
    """`value` as an arithmetic operand: sets, tuples and matrices are refused."""
    if isinstance(value, _Compound) or not isinstance(value, sympy.Expr):
        raise Unsupported("a set, tuple, matrix or relation used in arithmetic")
    return value


def _is_set_equation(value: Any) -> bool:
    """Whether `value` is x = [0, 1] or (p, q) = (3, 2): an equation with a set or tuple on one side."""
    return isinstance(value, sympy.Eq) and not (isinstance(value.lhs, sympy.Expr) and isinstance(value.rhs, sympy.Expr))


def _as_unary_minus(value: Any) -> Any:
    return sympy.Rational(-value.p, value.q) if value.is_Rational else sympy.Mul(-1, value, evaluate=False)


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, _Compound) else value


def _number(token: str) -> Any:
    """A digit run or decimal as latex2sympy's Number(text) gives it, built without sympify's eval."""
    if "." in token:
        return sympy.Float(token)
    return sympy.Integer(int(token))


def _command_atom(token: str) -> Any:
    if token == r"\pi":
        return sympy.pi
    if token == r"\infty":
        return sympy.oo
    return sympy.Symbol(token[1:].lower())


def _set_or_tuple(groups: list[list[Any]]) -> Any:
    """latex2sympy's reading of a list: 1, 2 is {1, 2} and 1, 2; 3, 4 is {(1, 2), (3, 4)}."""
    if len(groups) == 1:
        return groups[0][0] if len(groups[0]) == 1 else FiniteSet(*groups[0])
    if all(len(group) == 1 for group in groups):
        return FiniteSet(*[group[0] for group in groups])
    return FiniteSet(*[sympy.Tuple(*group) for group in groups])


def _comma_number(text: str) -> Any:
    """latex2sympy's reading of a whole answer like 1,000 or 0,5 (a decimal comma)."""
    if "," in text and text.startswith("0"):
        text = text.replace(",", ".")
    return _number(text.translate(str.maketrans("", "", ", ")).lstrip("0") or "0")


def parse_latex(text: str) -> Any:
    """Read normalized answer LaTeX as latex2sympy would, or raise Unsupported."""
    if len(text) > MAX_LENGTH:
        raise Unsupported(f"text longer than {MAX_LENGTH} characters")
    try:
        if _COMMA_NUMBER_RE.match(text):
            return _comma_number(text)
        tokens = _tokenize(text)
        if not tokens:
            raise Unsupported("empty text")
        return _Parser(tokens).answer()
    except Unsupported:
        raise
    except (TypeError, ValueError, ArithmeticError, sympy.SympifyError) as exc:
        # sympy rejected what we built (a non-real interval, a ragged matrix): latex2sympy decides
        raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
