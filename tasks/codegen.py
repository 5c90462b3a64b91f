"""`llmenv/codegen-v0`: procedurally generated "write this function" tasks with generated tests.

Each template is a short spec, a reference implementation (a plain function below) and an input
generator; a task draws a template, a function name and random inputs from the seeded `rng`,
and computes the expected outputs with the reference. Tests are MBPP-style assert statements,
checked by `llmenv.verifiers.code.CodeVerifier`. Fully offline and deterministic per seed. This
module never runs model output: it only writes prompts and tests.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmenv.errors import TaskConfigError
from llmenv.types import Task

INSTRUCTION = "Reply with the complete function in a ```python code block."


def sum_even(xs: list[int]) -> int:
    return sum(x for x in xs if x % 2 == 0)


def count_greater(xs: list[int], k: int) -> int:
    return sum(1 for x in xs if x > k)


def running_max(xs: list[int]) -> list[int]:
    out: list[int] = []
    for x in xs:
        out.append(x if not out else max(out[-1], x))
    return out


def second_largest(xs: list[int]) -> int | None:
    distinct = sorted(set(xs))
    return distinct[-2] if len(distinct) >= 2 else None


def reverse_words(s: str) -> str:
    return " ".join(reversed(s.split()))


def count_vowels(s: str) -> int:
    return sum(1 for c in s.lower() if c in "aeiou")


def run_length(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        out.append(f"{s[i]}{j - i}")
        i = j
    return "".join(out)


def is_clean_palindrome(s: str) -> bool:
    kept = [c.lower() for c in s if c.isalnum()]
    return kept == kept[::-1]


def digit_sum(n: int) -> int:
    return sum(int(d) for d in str(abs(n)))


def gcd_all(xs: list[int]) -> int:
    result = 0
    for x in xs:
        result = math.gcd(result, x)
    return result


def merge_sorted(a: list[int], b: list[int]) -> list[int]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]


def longest_increasing_run(xs: list[int]) -> int:
    best = run = 0
    for i, x in enumerate(xs):
        run = run + 1 if i and x > xs[i - 1] else 1
        best = max(best, run)
    return best


@dataclass(frozen=True)
class Template:
    """One kind of function: its spec, its reference and how to draw arguments."""

    reference: Callable[..., Any]
    names: tuple[str, ...]
    params: tuple[str, ...]
    spec: str
    draw: Callable[[np.random.Generator], tuple[Any, ...]]


def _ints(rng: np.random.Generator, low: int = -20, high: int = 20, max_len: int = 10) -> list[int]:
    return [int(v) for v in rng.integers(low, high + 1, size=int(rng.integers(0, max_len + 1)))]


def _word(rng: np.random.Generator, alphabet: str = "abcdefghijklmnopqrstuvwxyz", max_len: int = 7) -> str:
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), size=int(rng.integers(1, max_len + 1))))


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(_word(rng) for _ in range(int(rng.integers(0, 6))))


def _palindrome_like(rng: np.random.Generator) -> str:
    half = _word(rng, "abcAB ,!", 5)
    return half + half[::-1] if rng.random() < 0.5 else half + _word(rng, "abcAB ,!", 4)


TEMPLATES: tuple[Template, ...] = (
    Template(
        sum_even,
        ("sum_even", "even_total", "add_evens"),
        ("xs: list[int]",),
        "returns the sum of the even elements of `xs` (0 if there are none)",
        lambda r: (_ints(r),),
    ),
    Template(
        count_greater,
        ("count_greater", "num_above", "count_over"),
        ("xs: list[int]", "k: int"),
        "returns how many elements of `xs` are strictly greater than `k`",
        lambda r: (_ints(r), int(r.integers(-10, 11))),
    ),
    Template(
        running_max,
        ("running_max", "prefix_maxima", "cumulative_max"),
        ("xs: list[int]",),
        "returns the list whose i-th element is the largest of `xs[0..i]`",
        lambda r: (_ints(r),),
    ),
    Template(
        second_largest,
        ("second_largest", "runner_up", "second_max"),
        ("xs: list[int]",),
        "returns the second largest distinct value of `xs`, or None if there are fewer than two distinct values",
        lambda r: (_ints(r, -5, 5),),
    ),
    Template(
        reverse_words,
        ("reverse_words", "flip_words", "words_backwards"),
        ("s: str",),
        "returns the words of `s` (separated by whitespace) in reverse order, joined by single spaces",
        lambda r: (_sentence(r),),
    ),
    Template(
        count_vowels,
        ("count_vowels", "vowel_count", "num_vowels"),
        ("s: str",),
        "returns how many characters of `s` are vowels (a, e, i, o, u, either case)",
        lambda r: (_word(r, "abeiouxyzAEI ", 12),),
    ),
    Template(
        run_length,
        ("run_length", "rle_encode", "compress_runs"),
        ("s: str",),
        "returns the run-length encoding of `s`: each maximal run of a character c of length n "
        'becomes c followed by n ("aaab" -> "a3b1"); "" -> ""',
        lambda r: ("".join(c * int(r.integers(1, 4)) for c in _word(r, "abc", 5)) if r.random() < 0.9 else "",),
    ),
    Template(
        is_clean_palindrome,
        ("is_clean_palindrome", "loose_palindrome", "reads_same"),
        ("s: str",),
        "returns True if `s` reads the same forwards and backwards when only letters and digits are kept "
        "and case is ignored, else False",
        lambda r: (_palindrome_like(r),),
    ),
    Template(
        digit_sum,
        ("digit_sum", "sum_digits", "add_digits"),
        ("n: int",),
        "returns the sum of the decimal digits of `n` (the sign is ignored)",
        lambda r: (int(r.integers(-(10**6), 10**6)),),
    ),
    Template(
        gcd_all,
        ("gcd_all", "common_divisor", "list_gcd"),
        ("xs: list[int]",),
        "returns the greatest common divisor of the non-negative integers in `xs` (0 for an empty list)",
        lambda r: ([int(v) * int(r.integers(1, 7)) for v in r.integers(0, 30, size=int(r.integers(0, 5)))],),
    ),
    Template(
        merge_sorted,
        ("merge_sorted", "merge_lists", "combine_sorted"),
        ("a: list[int]", "b: list[int]"),
        "returns the ascending list holding the elements of both ascending lists `a` and `b`",
        lambda r: (sorted(_ints(r, max_len=6)), sorted(_ints(r, max_len=6))),
    ),
    Template(
        longest_increasing_run,
        ("longest_increasing_run", "longest_climb", "max_rising_run"),
        ("xs: list[int]",),
        "returns the length of the longest run of consecutive, strictly increasing elements of `xs` "
        "(0 for an empty list)",
        lambda r: (_ints(r, 0, 9),),
    ),
)


def reference_source(template: Template, name: str) -> str:
    """The reference implementation's source, renamed to `name` (for tests and examples)."""
    source = inspect.getsource(template.reference)
    if "math." in source:
        source = "import math\n\n\n" + source
    return re.sub(rf"^def {template.reference.__name__}\(", f"def {name}(", source, count=1, flags=re.M)


def _call(name: str, args: tuple[Any, ...]) -> str:
    return f"{name}({', '.join(repr(a) for a in args)})"


def generate_codegen(rng: np.random.Generator, *, n_tests: int = 8, templates: tuple[str, ...] | None = None) -> Task:
    """A function-writing task: a spec, a signature, one worked example and `n_tests` generated asserts."""
    if not isinstance(n_tests, int) or n_tests < 1:
        raise TaskConfigError(f"n_tests must be a positive int, got {n_tests!r}")
    pool = TEMPLATES
    if templates is not None:
        known = {t.reference.__name__: t for t in TEMPLATES}
        unknown = [name for name in templates if name not in known]
        if unknown or not templates:
            raise TaskConfigError(f"unknown templates {unknown}; choose from {sorted(known)}")
        pool = tuple(known[name] for name in templates)
    template = pool[int(rng.integers(len(pool)))]
    name = template.names[int(rng.integers(len(template.names)))]
    cases: list[tuple[tuple[Any, ...], Any]] = []
    for _ in range(20 * (n_tests + 1)):  # distinct inputs when the template has enough of them
        args = template.draw(rng)
        if all(args != seen for seen, _ in cases):
            cases.append((args, template.reference(*args)))
        if len(cases) == n_tests + 1:
            break
    while len(cases) < n_tests + 1:
        args = template.draw(rng)
        cases.append((args, template.reference(*args)))
    (example_args, example_out), tests = cases[0], cases[1:]
    returns = inspect.signature(template.reference).return_annotation
    signature = f"{name}({', '.join(template.params)}) -> {returns}"
    prompt = (
        f"Write a Python function `{signature}` that {template.spec}.\n"
        f"For example, `{_call(name, example_args)}` returns `{example_out!r}`.\n{INSTRUCTION}"
    )
    return Task(
        prompt=prompt,
        tests=[f"assert {_call(name, args)} == {expected!r}" for args, expected in tests],
        meta={
            "entry_point": name,
            "test_type": "asserts",
            "template": template.reference.__name__,
            "reference_solution": reference_source(template, name),
        },
    )
