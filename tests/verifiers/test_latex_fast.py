"""The fast answer reader agrees with latex2sympy wherever it accepts, refuses the rest, and stays cheap."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
import sympy
from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy, normalize_latex
from sympy.core.relational import Relational
from sympy.matrices import MatrixBase

from llmenv.verifiers._latex_fast import Unsupported, parse_latex

CONFIG = NormalizationConfig(units=True, malformed_operators=True, nits=True, boxed="all")

# Answers the fast reader must accept (and agree on): one or more per construct it claims.
ACCEPTED = [
    # numbers
    "42", "-17", "007", "0", "3.75", "0.5", "2.125", "1,000", "12,345,678", "-1,000", "100000000000000000000",
    # arithmetic, juxtaposition, mixed fractions
    "2x", "xyz", "ab", "2\\pi r", "\\alpha\\beta", "x(x+1)", "2(x+1)", "(x+1)(x-1)", "3x^2-2x+1",
    "x^2+2x+1", "-x^2", "-3^2", "a/2b", "2x/3", "8/4/2", "6 \\div 4", "3 \\cdot 4", "3 \\times x", "2*3",
    "2\\frac{1}{2}", "-2\\frac{3}{4}", "2\\frac{1}{2}x", "2(3)", "x(x-1)(x+2)", "2x(x+1)", "-(x+1)",
    "+5", "x-1", "1-x-y", "(2x+1)^2", "4!", "(n+1)!", "n!", "x^2!",
    # symbols
    "X", "A_1", "x_1", "x_{12}", "x_{n+1}", "x_{n + 1}", "x^{2}_{1}", "x_1^2", "a_n", "\\Delta", "\\Theta",
    "\\theta", "\\lambda", "\\omega_0", "e", "e^x", "e^{2x}", "ex", "2e", "E", "i", "I", "2I", "3+4I", "\\pi",
    "2\\pi", "\\frac{\\pi}{4}", "\\infty", "-\\infty",
    # fractions and roots
    "\\frac{1}{2}", "\\frac{a}{b}", "\\frac{1}{-2}", "\\dfrac{3}{4}", "\\tfrac{x}{2}", "\\frac{x+1}{x-1}",
    "\\frac{\\sqrt{3}}{2}", "\\sqrt{x}", "\\sqrt{2}", "2\\sqrt{3}", "\\sqrt[3]{x}", "\\sqrt[3]{8}",
    "\\frac{1+\\sqrt{5}}{2}", "\\sqrt{x^2+1}", "\\frac{1}{0}",
    # powers
    "2^10", "2^{10}", "2^{3}^{2}", "x^{y^z}", "x^{-1}", "2^{-3}", "x^\\pi", "x^ab", "2^1.5", "10^{100}",
    "|x|", "|x-1|", "2|x|", "|x||y|", "|x|^2",
    # functions
    "\\sin x", "\\sin(x)", "\\sin x^2", "\\sin^2 x", "\\cos^{2}(x)", "\\tan\\theta", "\\sin 2x", "\\sin x y",
    "\\sin x \\cos x", "\\sin(x)y", "\\sin(x)^2", "\\sin^{-1} x", "\\arcsin x", "\\arctan(1)", "\\cosh x",
    "\\log(8)", "\\log 8", "\\ln x", "\\ln(x+1)", "\\log_2 8", "\\log_{2}(8)", "\\log_{10} x", "\\exp(x)",
    "\\exp x", "\\sin\\frac{\\pi}{6}", "\\sin\\sqrt{x}", "\\sin x\\sqrt{2}", "2\\sin x\\cos x", "\\ln|x|",
    "\\cos(2\\pi x)", "\\sin 2e", "\\sin^2 x+\\cos^2 x", "x\\sin x",
    # relations
    "x=1", "y=2x+3", "x\\le 2", "x\\leq 2", "x\\ge 2", "x\\geq -1", "x<3", "x>3", "x\\neq 0", "1<x<2",
    "1<x\\le 2", "a^2+b^2=c^2", "a=b=c", "x^2-1=0",
    # lists, sets, intervals, tuples
    "1,2", "1;2", "1, 2, 3", "x=1,y=2", "x=1, 2", "1,2;3,4", "\\{1,2\\}", "\\{1\\}", "\\{\\}", "\\{x, y\\}",
    "(3,2)", "(3,3)", "(1,2)", "(x,y)", "(1,2,3)", "[1,2,3]", "[3,2]", "[0,1]", "[1,1]", "(1,2]", "[2,5)",
    "(1, \\infty)", "(-\\infty, 0) \\cup (1, 2)", "[0,1] \\cup \\{2\\}", "(0,1) \\cap (\\frac{1}{2}, 2)", "(x)",
    "[x]", "(-1,-2)", "(\\infty,1)", "(1,\\sqrt{2})", "\\{(1,2),(3,4)\\}", "(1,2),(3,4)", "x \\in (0,1)",
    "x \\in [0,1)", "x = [2, 5]", "x \\in \\mathbb{R}", "\\emptyset", "\\mathbb{R}", "\\mathbb{Z}",
    "(2,1]", "(x+1, x)", "[1, \\infty]", "\\{1,2\\}\\cap\\{2\\}", "x_1 = 1, 2", "x=\\frac{1}{2}, -\\frac{1}{2}",
    "(1,2);(3,4)", "0,5", "3 \\times 10^{8}", "2(3)(4)", "(-2)\\frac{1}{2}", "\\log_{e} x", "\\cos^{3}{2}x",
    # matrices
    "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", "\\begin{bmatrix}1 & 2\\end{bmatrix}",
    "\\begin{matrix}x\\\\y\\end{matrix}", "\\begin{pmatrix}\\frac{1}{2} & -1\\end{pmatrix}",
    "\\begin{pmatrix}1&0\\\\-\\sin(x)&0\\\\\\end{pmatrix}", "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\\\ \\end{bmatrix}",
    "\\begin{pmatrix}x\\\\\\end{pmatrix}",
    # ratios: latex2sympy reads a:b as a/b, with the precedence of /
    "a:b", "2:3", "6:4", "1:2:3", "S_{MBCN}:S=7:32", "V_{1}:V_{2}=11:21", "2x:3", "a+b:c", "a \\cdot b:c", "a:b/c",
    "-a:b", "2:-3", "2:3x", "x=1:2", "1:2, 3", "\\frac{1}{2}:3", "\\sin x:2",
    # applied functions: a letter before ( with one atom or a list of atoms; f(x+1) stays a product
    "f(x)", "f(x)=1", "0<f(x)<1", "g(2)", "f(x,y)", "f(a, b, c)", "x(2)", "x(2)=3", "a(b)", "F(X)", "I(x)",
    "\\alpha(x)", "\\Delta(t)", "f(E)", "f(I)", "f(\\pi)", "f(\\infty)", "f(1.5)", "f(x_1)", "f(x_{12})", "f(x^2)",
    "f(x_1^2)", "f^2(x)", "f^{2}(x)", "f(x)^2", "f(x)!", "2f(x)", "f(x)g(x)", "f(x)y", "f(2)(3)", "f(x)(x+1)",
    "f(x) = x^2+1", "f'(x)", "h(t)=-5t^2", "f(0)=1,f(1)=2", "\\{f(1), f(2)\\}", "2x(3)", "xy(2)", "\\sin x(2)",
    "\\ln f(x)", "\\frac{f(x)}{g(x)}", "|f(x)|", "f(x):g(x)", "P(A)=\\frac{1}{2}", "f(1)+f(2)=3", "d(x)",
    # tuple equations: (p, q) before = or \\in is a tuple of symbols; the right side may read as an interval
    "(p,q)=(3,2)", "(p, q, r) = (3, 2, 7)", "(a,b)=(1,2)", "(a,b)=[1,2]", "(x,y)=(1,2),(3,4)", "(x_1,y_1)=(3,2)",
    "(x_{12},y)=(3,2)", "(\\alpha,\\beta)=(3,2)", "(X,Y)=(3,2)", "(p,q)=(x,y)", "(p,q)=(3,2,1)", "(a,b,c)=(1,2)",
    "(p,q)\\in\\{(3,2)\\}", "(p,q)=\\{(3,2),(1,0)\\}", "(x,y)=(1,2)\\cup(3,4)", "(a,b)\\in\\mathbb{R}", "(p)=(3,2)",
    "(x, y) = (\\frac{1}{2}, -3)", "(x,y)=(1,2), 3", "x=[1,2], 3",
    # \\pm b is the two items -b, b of a list, a \\pm b is a + b, a - b; numbers drop their base subscript
    "\\pm 3", "\\mp 3", "\\pm 0", "\\pm -3", "\\pm 3.5", "\\pm x^2", "\\pm\\frac{x}{2}", "1 \\pm \\sqrt{2}",
    "x \\pm 1", "2\\pm 3",
    "1\\mp 2", "-1\\pm 2i", "a\\pm b+c", "2x\\pm 3y", "-b\\pm\\sqrt{b^2-4ac}", "\\frac{1}{2}\\pm\\frac{\\sqrt{3}}{2}i",
    "\\pm 3, 4", "1\\pm 2, 3\\pm 4", "1\\pm 2; 3", "\\sin x \\pm 1", "1112112_3", "101_{2}", "10_{16}", "1.5_3",
    "12_x", "101_2+1", "101_{2}=5", "2\\cdot 101_2",
]  # fmt: skip

# Forms the fast reader must refuse: outside its subset, or read by latex2sympy in a surprising way.
REFUSED = [
    "f(2x)", "f(\\frac{1}{2})", "f_1(x)", "E(x)", "\\pi(x)", "f(x,)", "f^2(x)^3",
    "2 3", "x^-1", "x=\\pm 3", "x=1\\pm 2", "1\\pm 2\\pm 3", "(1\\pm 2)",
    "x\\pm 1 = 0", "-\\pm 3", "101_2^2", "101_23", "\\text{yes}", "\\sum_{i=1}^n i",
    "\\int_0^1 x dx", "\\binom{5}{2}", "\\overline{AB}", "\\angle A", "50\\%", "\\lfloor x \\rfloor",
    "\\gamma", "\\Gamma", "\\Pi", "dx", "x^e", "{1}", "\\begin{vmatrix}1 & 2\\\\3 & 4\\end{vmatrix}",
    "\\sin^-1 x", "\\sqrt[3]8", "1.", "x \\approx 2", "\\varnothing", "||x|-1|", "(1,2)^2", "(1,2)\\cup 3",
    "(3,2)=(p,q)", "(x,y)<(3,2)", "(x,y)=(3,2)=(1,0)", "(x+1,y)=(3,2)", "(p,q)=3", "(E,q)=(3,2)", "(x^2,y)=(3,2)",
    "(x,y)=(1,2), x=3", "x=(1,2), y=3", "x=1, y\\in(1,2)", "(p,q)=(3,2);(1,0)",
    "\\{x=1\\}", "x=1, 2, y=3", "\\sin x \\cdot \\cos x", "1\\,000", "x \\in 5", "5!=3", "I^2",
]  # fmt: skip


def _slow(text: str) -> Any:
    return latex2sympy(text, normalization_config=None)


def _kind(value: Any) -> str:
    return "Expr" if isinstance(value, sympy.Expr) else type(value).__name__


def _elements(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, "_unsorted_args", value.args))


def _agree(fast: Any, slow: Any) -> bool:
    """Same kind of object and the same value: sides of relations, elements of sets, entries of matrices."""
    if _kind(fast) != _kind(slow):
        return False
    if fast == slow:
        return True
    if isinstance(fast, sympy.Expr):
        return sympy.simplify(fast.doit() - slow.doit()) == 0
    if isinstance(fast, MatrixBase):
        return fast.shape == slow.shape and all(_agree(a, b) for a, b in zip(fast, slow))
    if isinstance(fast, Relational):
        return _agree(fast.lhs, slow.lhs) and _agree(fast.rhs, slow.rhs)
    if isinstance(fast, sympy.Interval):
        return (
            fast.left_open == slow.left_open
            and fast.right_open == slow.right_open
            and _agree(fast.start, slow.start)
            and _agree(fast.end, slow.end)
        )  # noqa: E501
    fast_items, slow_items = _elements(fast), _elements(slow)
    return len(fast_items) == len(slow_items) and all(_agree(a, b) for a, b in zip(fast_items, slow_items))


def _check(answer: str) -> bool:
    """Assert agreement when the fast reader accepts `answer` (normalized first); return whether it did."""
    text = normalize_latex(answer, CONFIG)
    try:
        fast = parse_latex(text)
    except Unsupported:
        return False
    slow = _slow(text)  # latex2sympy failing where the fast reader accepted is a disagreement too
    assert _agree(fast, slow), f"{answer!r} -> {text!r}: fast {sympy.srepr(fast)} != latex2sympy {sympy.srepr(slow)}"
    return True


@pytest.mark.parametrize("answer", ACCEPTED)
def test_accepted_answers_agree_with_latex2sympy(answer: str) -> None:
    assert _check(answer), f"{answer!r} (normalized {normalize_latex(answer, CONFIG)!r}) was refused"


@pytest.mark.parametrize("answer", REFUSED)
def test_unsupported_forms_are_refused(answer: str) -> None:
    with pytest.raises(Unsupported):
        parse_latex(normalize_latex(answer, CONFIG))


def test_types_that_matter_to_the_comparison() -> None:
    assert isinstance(parse_latex("(1,2)"), sympy.Interval)
    assert isinstance(parse_latex("(3,2)"), sympy.Tuple)
    assert isinstance(parse_latex("1,2"), sympy.FiniteSet)
    assert parse_latex("E") == sympy.Symbol("e") and parse_latex("e") == sympy.E
    assert parse_latex("\\log(8)") == sympy.log(8, 10, evaluate=False)
    assert parse_latex("x_{n+1}") == sympy.Symbol("x_{n+1}")
    assert parse_latex("2\\frac{1}{2}") == sympy.Rational(5, 2)


FACTORS = ["x", "y", "\\pi", "(x+1)", "\\sqrt{2}"]
FUNCTIONS = ["\\sin", "\\cos", "\\tan", "\\ln", "\\log", "\\exp"]
PLUS_MINUS = ["\\pm", "\\mp"]
CALLED = ["f", "g", "x", "F", "\\alpha"]
RELATIONS = ["=", "<", "\\le", ">", "\\geq", "\\neq"]


def _random_expr(rng: random.Random, depth: int) -> str:
    """A random expression from the supported grammar (it may still hit a refused corner)."""
    atoms = ["x", "y", "a", "n", "2", "3", "7", "10", "\\pi", "\\theta", "x_1", "e", "1.5", "I"]
    if depth <= 0:
        return rng.choice(atoms)
    sub = lambda: _random_expr(rng, depth - 1)  # noqa: E731
    forms = [
        lambda: rng.choice(atoms),
        lambda: f"{sub()}+{sub()}",
        lambda: f"{sub()}-{sub()}",
        lambda: f"{sub()} \\cdot {sub()}",
        lambda: f"{sub()}/{sub()}",
        lambda: f"{rng.choice(['2', '3', 'x', 'a'])}{rng.choice(FACTORS)}",
        lambda: f"-{sub()}",
        lambda: f"\\frac{{{sub()}}}{{{sub()}}}",
        lambda: f"\\sqrt{{{sub()}}}",
        lambda: f"\\sqrt[3]{{{sub()}}}",
        lambda: f"({sub()})^{{{rng.randint(-3, 4)}}}",
        lambda: f"{rng.choice(['x', 'y', '2'])}^{rng.choice(['2', '3', 'n', '{n+1}', '{-1}'])}",
        lambda: f"{rng.choice(FUNCTIONS)}({sub()})",
        lambda: rng.choice(FUNCTIONS[:2]) + f"^{rng.choice(['2', '{3}'])} " + rng.choice(["x", "2x", "\\theta"]),
        lambda: f"\\log_{{{rng.randint(2, 9)}}}({sub()})",
        lambda: f"|{sub()}|",
        lambda: f"({sub()})!" if rng.random() < 0.5 else f"{rng.randint(0, 9)}!",
        lambda: f"{sub()}({sub()}+1)",
        lambda: f"{sub()}:{sub()}",
        lambda: rng.choice(CALLED) + "(" + ", ".join(rng.sample(atoms, rng.randint(1, 3))) + ")",
    ]
    return rng.choice(forms)()


def _random_answer(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.6:
        return _random_expr(rng, 2)
    if kind < 0.75:
        return f"{_random_expr(rng, 1)} {rng.choice(RELATIONS)} {_random_expr(rng, 1)}"
    if kind < 0.85:
        opening, closing = rng.choice("(["), rng.choice(")]")
        return f"{opening}{_random_expr(rng, 1)}, {_random_expr(rng, 1)}{closing}"
    if kind < 0.95:
        items = ", ".join(_random_expr(rng, 1) for _ in range(rng.randint(2, 4)))
        return rng.choice([items, f"\\{{{items}\\}}", f"({items})"])
    if kind < 0.96:
        return f"{rng.choice(['', _random_expr(rng, 1)])} {rng.choice(PLUS_MINUS)} {_random_expr(rng, 1)}"
    if kind < 0.97:
        names = rng.sample(["p", "q", "x", "y", "a_1", "\\alpha"], rng.randint(2, 3))
        values = [_random_expr(rng, 0) for _ in range(rng.choice([len(names), 2]))]
        return "(" + ", ".join(names) + ") " + rng.choice(["=", "\\in"]) + " (" + ", ".join(values) + ")"
    return f"({rng.randint(-5, 5)}, {rng.randint(-5, 5)}) \\cup [{rng.randint(6, 9)}, \\infty)"


def test_random_answers_agree_with_latex2sympy() -> None:
    rng = random.Random(20261201)
    answers = [_random_answer(rng) for _ in range(300)]
    accepted = sum(_check(answer) for answer in answers)
    assert accepted >= 0.5 * len(answers), f"only {accepted} of {len(answers)} random answers accepted"


HOSTILE = [
    "100000000!",
    "10^{10^{10}}!",
    "10^{10^{10^{10}}}",
    "(10^{10^{10}}, 1)",
    "2^{10^{10}} < 3",
    "\\{100000000!, 10^{10^{10}}\\}",
    "{" * 10_000 + "1" + "}" * 10_000,
    "(" * 1_000 + "1" + ")" * 1_000,
    "-" * 1_500 + "1",
    "x" * 1_999,
    "1" * 1_999,
    "1+" * 999 + "1",
    "x" * 1_000_000,
]


@pytest.mark.parametrize("answer", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_answers_return_quickly_and_unevaluated(answer: str) -> None:
    start = time.perf_counter()
    try:
        value = parse_latex(answer)
    except Unsupported:
        value = None
    assert time.perf_counter() - start < 10
    if value is not None:  # nothing big was computed: every numeric power and factorial stayed a node
        for node in sympy.preorder_traversal(value):
            assert not (isinstance(node, sympy.Integer) and node > 10**4000)
