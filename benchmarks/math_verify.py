"""Side by side: llmenv.verifiers.math.is_equivalent against math-verify, on accuracy and throughput.

Run: python benchmarks/math_verify.py. Every case carries the truth as labelled by hand (the
generators below say why each label holds). Both verifiers run in this one process, warm, on the
same pairs; math-verify gets its inputs wrapped in "$...$" as its docs ask.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable

# this file's own name would shadow the math_verify package when run as a script
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from math_verify import parse, verify  # noqa: E402

from llmenv.verifiers.math import is_equivalent, warm_up  # noqa: E402

logging.disable(logging.CRITICAL)
Case = tuple[str, str, str, bool]  # (category, gold, pred, expected)


def build_cases(rng: random.Random) -> list[Case]:
    """A labelled case set across categories: about half equal, half not."""
    cases: list[Case] = []
    for _ in range(40):
        n = rng.randint(-999, 99999)
        cases += [
            ("plain", str(n), str(n), True),
            ("plain", str(n), str(n + rng.choice([-2, -1, 1, 10])), False),
        ]
    for _ in range(15):
        n = rng.randint(1000, 9_999_999)
        cases += [("plain", f"{n:,}", str(n), True), ("plain", str(n), f"{n + 1:,}", False)]
    for _ in range(15):
        a, b = rng.randint(1, 40), rng.choice([2, 4, 5, 8, 10, 16, 20, 25])
        dec = f"{a / b:.6f}".rstrip("0").rstrip(".")
        cases += [
            ("fraction", f"\\frac{{{a}}}{{{b}}}", dec, True),
            ("fraction", f"{a}/{b}", f"\\dfrac{{{a * 3}}}{{{b * 3}}}", True),
            ("fraction", f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{a + 1}}}{{{b}}}", False),
        ]
    for _ in range(10):
        k = rng.randint(20, 99)
        cases += [
            ("fraction", f"\\frac{{1}}{{2^{{{k}}}}}", f"\\frac{{1}}{{2^{{{k - 1}}}}}", False),
            ("fraction", f"\\frac{{1}}{{2^{{{k}}}}}", f"2^{{-{k}}}", True),
        ]
    for _ in range(10):
        n = rng.randint(2, 99)
        cases += [
            ("percent", f"{n}\\%", f"{n}", True),
            ("percent", f"{n}\\%", f"{n + 1}\\%", False),
            ("percent", f"{n}\\%", f"{n / 100}", False),
        ]  # strict: a percent is not a fraction
    for _ in range(10):
        n, unit = rng.randint(1, 500), rng.choice(["cm", "meters", "dollars", "km^2", "degrees"])
        cases += [
            ("units", str(n), f"{n} \\text{{ {unit}}}", True),
            ("units", str(n), f"{n + 1} \\text{{ {unit}}}", False),
            ("units", str(n), f"{n}^\\circ", True),
        ]
    latex = [
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{3}}{2}", False),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("2\\sqrt{2}", "\\sqrt{6}", False),
        ("2\\pi", "2 \\cdot \\pi", True),
        ("\\pi", "3.14", False),
        ("12", "3 \\times 4", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("x^2+2x+1", "(x-1)^2", False),
        ("\\frac{x}{2}", "0.5x", True),
        ("e^{2}", "e^2", True),
        ("\\ln 8", "3\\ln 2", True),
        ("\\sqrt{2}", "1.414214", True),
        ("\\sqrt{2}", "1.41", False),
        ("\\infty", "\\infty", True),
        ("\\infty", "-\\infty", False),
        ("\\frac{\\pi}{6}", "30^\\circ", True),
        ("1, 2, \\ldots, n", "1, 3, 5, \\ldots, 2n-1", False),
        ("1, 2, \\ldots, n", "1,2,\\dots,n", True),
        ("2^{10}", "1024", True),
        ("2^{10}", "1000", False),
        ("\\dfrac{9}{7}", "\\frac{9}{7}", True),
    ]
    cases += [("latex", g, p, e) for g, p, e in latex]
    sets = [
        ("\\{1,2\\}", "\\{2,1\\}", True),
        ("\\{1,2\\}", "\\{1,3\\}", False),
        ("\\{1,2,3\\}", "\\{3,2,1\\}", True),
        ("\\{-1, \\frac{1}{2}\\}", "\\{0.5, -1\\}", True),
        ("\\{-1, \\frac{1}{2}\\}", "\\{-1\\}", False),
        ("(1,2,3)", "(1, 2, 3)", True),
        ("(1,2,3)", "(1,3,2)", False),
        ("(3, -1)", "(3,-1)", True),
        ("(3, -1)", "(-1,3)", False),
    ]
    cases += [("set/tuple", g, p, e) for g, p, e in sets]
    intervals = [
        ("(0, 1]", "\\left(0,1\\right]", True),
        ("(0, 1]", "(0, 1)", False),
        ("[0, 1)", "(0, 1)", False),
        ("(-\\infty, 0) \\cup (1, \\infty)", "(1,\\infty)\\cup(-\\infty,0)", True),
        ("(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty, 0] \\cup (1, \\infty)", False),
        ("[2, 5]", "[2,5]", True),
        ("[2, 5]", "[2, 6]", False),
        ("(-\\infty, 3]", "(-\\infty,3]", True),
    ]
    cases += [("interval", g, p, e) for g, p, e in intervals]
    m = "\\begin{{{k}matrix}}{a}&{b}\\\\{c}&{d}\\end{{{k}matrix}}"
    for _ in range(6):
        a, b, c, d = (rng.randint(-9, 9) for _ in range(4))
        cases += [
            ("matrix", m.format(k="p", a=a, b=b, c=c, d=d), m.format(k="b", a=a, b=b, c=c, d=d), True),
            ("matrix", m.format(k="p", a=a, b=b, c=c, d=d), m.format(k="p", a=a, b=b, c=d + 1, d=c), False),
        ]
    for _ in range(8):
        a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 20)
        cases += [
            ("equation", f"{a}x-{b}y+{c}=0", f"-{2 * a}x+{2 * b}y-{2 * c}=0", True),
            ("equation", f"{a}x-{b}y+{c}=0", f"{a}x+{b + 3}y+{c + 1}=0", False),
            ("equation", f"y={a}x+{c}", f"{a}x-y+{c}=0", True),
            ("equation", str(c), f"x = {c}", True),
            ("equation", str(c), f"x = {c + 1}", False),
        ]
    return cases


def numeric_cases(rng: random.Random, n: int = 400) -> list[Case]:
    """Typical RL traffic: integer and decimal golds, a policy right about half the time."""
    cases: list[Case] = []
    for _ in range(n):
        gold = rng.choice(
            [
                str(rng.randint(0, 5000)),
                f"{rng.randint(1, 999)}/{rng.randint(2, 99)}",
                f"{rng.randint(0, 9999) / 100}",
            ]
        )
        kind = rng.random()
        if kind < 0.5:
            cases.append(("numeric", gold, gold, True))
        elif kind < 0.6:
            cases.append(("numeric", gold, f"{gold} \\text{{ dollars}}", True))
        else:
            cases.append(("numeric", gold, str(rng.randint(0, 5000)) + ".5", False))
    return cases


def ours(gold: str, pred: str) -> bool:
    return is_equivalent(gold, pred)


def theirs(gold: str, pred: str) -> bool:
    return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))


def theirs_bare(gold: str, pred: str) -> bool:
    return bool(verify(parse(gold), parse(pred)))


def run(fn: Callable[[str, str], bool], cases: list[Case], repeats: int) -> tuple[list[bool], float]:
    got = [fn(g, p) for _, g, p, _ in cases]  # warm caches and workers
    started = time.perf_counter()
    for _ in range(repeats):
        for _, g, p, _ in cases:
            fn(g, p)
    return got, repeats * len(cases) / (time.perf_counter() - started)


def report(title: str, cases: list[Case], repeats: int) -> None:
    ours_got, ours_rate = run(ours, cases, repeats)
    theirs_got, theirs_rate = run(theirs, cases, repeats)
    expected = [e for *_, e in cases]

    def acc(got: list[bool], idx: list[int] | None = None) -> str:
        idx = idx if idx is not None else list(range(len(cases)))
        return f"{sum(got[i] == expected[i] for i in idx)}/{len(idx)}"

    print(f"\n## {title}: {len(cases)} cases, {repeats} timed repetitions\n")
    agree = sum(a == b for a, b in zip(ours_got, theirs_got, strict=True))
    print(
        f"accuracy vs labels: ours {acc(ours_got)}, math-verify {acc(theirs_got)}; "
        f"ours and math-verify agree on {agree}/{len(cases)}"
    )
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, (cat, *_rest) in enumerate(cases):
        by_cat[cat].append(i)
    print("\n| category | cases | ours | math-verify |\n|---|---|---|---|")
    for cat, idx in by_cat.items():
        print(f"| {cat} | {len(idx)} | {acc(ours_got, idx)} | {acc(theirs_got, idx)} |")
    wrong = [i for i in range(len(cases)) if ours_got[i] != expected[i] or theirs_got[i] != expected[i]]
    if wrong:
        print("\n| gold | pred | expected | ours | math-verify |\n|---|---|---|---|---|")
        for i in wrong:
            _, g, p, e = cases[i]
            print(f"| `{g}` | `{p}` | {e} | {ours_got[i]} | {theirs_got[i]} |")
    print(
        f"\nthroughput: ours {ours_rate:,.0f}/s, math-verify {theirs_rate:,.0f}/s, ratio {ours_rate / theirs_rate:.1f}x"
    )


def known_failures() -> None:
    cases = [
        ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", False),
        ("3x-y+13=0", "3x+4y+14=0", False),
        ("\\dfrac{9}{7}", "\\frac{9}{7}", True),
        ("1, 2, \\ldots, n", "1, 3, 5, \\ldots, 2n-1", False),
    ]
    print(
        "\n## math-verify's known failures\n\n| gold | pred | expected | ours | math-verify $..$ | math-verify bare |"
    )
    print("|---|---|---|---|---|---|")
    for g, p, e in cases:
        print(f"| `{g}` | `{p}` | {e} | {ours(g, p)} | {theirs(g, p)} | {theirs_bare(g, p)} |")


def main() -> None:
    rng = random.Random(0)
    warm_up(1)
    report("Mixed categories", build_cases(rng), repeats=3)
    report("Numeric-only mix (typical RL traffic)", numeric_cases(rng), repeats=5)
    known_failures()


if __name__ == "__main__":
    main()
