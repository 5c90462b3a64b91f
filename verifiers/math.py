"""Math answers: extract the final answer from a completion and decide if it equals the reference.

This is the reward of math tasks, so it is called on every completion of an RL run and must be
fast, correct and bounded. Plain numbers (integers, decimals, fractions, "1,234", "50%", "5 cm",
"x = 5") take a fast path of `fractions.Fraction` arithmetic in the calling process that never
touches sympy. Everything else (LaTeX, sets, intervals, tuples, matrices, equations, sequences with
ellipses) is parsed and compared with sympy in a persistent worker subprocess (the slow path,
`llmenv.verifiers._math_sympy`): the caller waits on a socket with a wall-clock deadline and kills
the worker with SIGKILL when it overruns (sympy and big-integer arithmetic block in C holding the
GIL, where no in-thread timer or `signal.alarm` can interrupt them); the next call starts a fresh
worker. So every
call works from any thread and returns within `timeout` seconds (a cold worker start, about 1 s,
counts against the deadline too), and input guards (a length cap, a nesting cap, a size estimate
of powers before evaluating them) keep hostile answers from costing a worker restart. This module
must not evaluate model output with `eval`/`exec`/`sympy.sympify`, must not use signals, and must
never turn a timeout or a parser crash into a silent 0: `compare` reports them and `MathVerifier`
puts them on `Verdict.error`.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any

from llmenv.errors import VerifierError
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import BaseVerifier

__all__ = ["Comparison", "MathVerifier", "compare", "extract_answer", "is_equivalent", "verify_batch"]

MAX_ANSWER_CHARS = 2000  # longer extracted answers are refused: no real answer is that long
MAX_NESTING = 64  # deeper bracket nesting is refused before it reaches the recursive parser
MAX_POWER_DIGITS = 100_000  # powers whose value would have more digits are never evaluated
MAX_FACTORIAL = 25_000  # n! of a bigger literal n would have more than MAX_POWER_DIGITS digits
WORKER_MEMORY_BYTES = 4 << 30  # address-space limit of a worker, so a blow-up cannot take the host

# ----------------------------------------------------------------------------------------------
# Extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_RE = re.compile(r"\\[\\{}]|[{}]")  # escaped braces (\{ \}) and \\ are not groups
_ANSWER_RE = re.compile(r"(?i)\banswer\b(?:\s{0,20}is\b\s{0,5}:?|\s{0,20}:)")
_NUMBER_RE = re.compile(r"-?\d+\s*/\s*\d+(?!\d|\.\d)|-?\d+(?:,\d{3})+(?:\.\d+)?%?|-?\d+(?:[.,]\d+)?%?|-?\.\d+%?")
_GLUED_RE = re.compile(r"(?<![A-Za-z_])[A-Za-z_]+\d\w*|(?<![\d.])\d+[A-Za-z]\w*")  # "x2", "2nd": no numbers
_END_OF_TURN_RE = re.compile(r"<\|(?:im_start|im_end|endoftext|eot_id|end_of_text)\|>")
_DECIMAL_COMMA_RE = re.compile(r"-?(?:0|\d+(?=,\d{1,2}$|,\d{4,}$)|0\d*),\d+")  # 1000,99 / 1,22 / 0,111
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """Every complete \\boxed{...} / \\fbox{...} (and bare "\\boxed 5") as (start, end, content), in order."""
    starts = [(m.start(), m.end()) for m in _BOX_RE.finditer(text)]
    if not starts:
        return []
    closing: dict[int, int] = {}  # position of "{" -> position of its "}"
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text, starts[0][1]):
        token = m.group()
        if token == "{":
            stack.append(m.start())
        elif token == "}" and stack:
            closing[stack.pop()] = m.start()
    found = []
    for begin, end in starts:
        start = end
        while start < len(text) and text[start] == " ":
            start += 1
        if start < len(text) and text[start] == "{":
            if start in closing:  # an unclosed \boxed{ is skipped
                found.append((begin, closing[start] + 1, text[start + 1 : closing[start]].strip()))
            continue
        bare = re.match(r"[^\s$]+", text[start : start + MAX_ANSWER_CHARS])
        if start > end and bare:  # "\boxed 5"
            found.append((begin, start + bare.end(), bare.group().rstrip(".")))
    return found


def _last_boxed(text: str) -> str | None:
    found = _boxes(text)
    return found[-1][2] if found else None


def _clean_tail(line: str) -> str | None:
    line = line.strip().strip("*").strip()
    end = _SENTENCE_END_RE.search(line)
    if end:
        line = line[: end.start()]
    line = line.strip().rstrip(".").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if line.startswith(left) and line.endswith(right) and len(line) >= len(left) + len(right):
            line = line[len(left) : len(line) - len(right)].strip()
    return line or None


EXTRACTION_MODES = ("auto", "anchored", "boxed")
"""How a completion's answer is found: "boxed" takes the last \\boxed{} only (a run that rewards the format);
"anchored" also takes "the answer is X" / "Answer: X" lines and GSM8K's "#### X"; "auto" (the default)
adds Minerva's "Final Answer: The final answer is X", then the last math block ($...$, $$...$$, \\[...\\],
\\(...\\)), then the last number."""

_QUOTES_RE = re.compile(r'\\?"|``|\'\'')  # quotes around a final answer: "$12$ and $13$"
_FINAL_RE = re.compile(r"(?i)final\s+answer\s*(?::|is\b)")
_IS_RE = re.compile(r"(?i)\s(?:is|are|equals|=)\s+")
_LISTING_GAP_RE = re.compile(r"[^A-Za-z]*|.*\b(?:and|or)\b.*", re.S)  # "++", "papers and": not "no no no"
_HEDGE_GAP_RE = re.compile(r"\s*(?:,|;|or|and|\\text\{\s*(?:or|and)\s*\}|\\quad|\$|\s)*\s*")


def _anchored(text: str) -> tuple[int, str] | None:
    """The answer after the last "answer is" / "Answer:" (or after "####"), with where the answer starts."""
    last = None
    for match in _ANSWER_RE.finditer(text):
        last = match
    if last is not None:
        line_end = text.find("\n", last.end())
        answer = _clean_tail(text[last.end() : line_end if line_end >= 0 else len(text)])
        if answer is not None:
            return last.start() + len("answer"), answer  # the anchor word: a "Final Answer" line around it wins
    hashes = text.rfind("####")
    if hashes >= 0:
        line_end = text.find("\n", hashes)
        answer = _clean_tail(text[hashes + 4 : line_end if line_end >= 0 else len(text)])
        if answer is not None:
            return hashes + 4, answer
    return None


def _final_sentence(text: str) -> tuple[int, str] | None:
    """The answer of the last "Final Answer: ..." line, with where that line's answer starts.

    "Final answer: The largest $n$ is 34." -> "34"; "The final answer is 12,000,023. I hope it is
    correct." -> "12,000,023"; "Final Answer: Jane started 3 hours ago." -> "3" (its only number).
    """
    last = None
    for match in _FINAL_RE.finditer(text):
        last = match
    if last is None:
        return None
    line_end = text.find("\n", last.end())
    tail = _QUOTES_RE.sub("", text[last.end() : line_end if line_end >= 0 else len(text)]).strip()
    end = _SENTENCE_END_RE.search(tail)
    listed = _joined_blocks(tail[: end.start()] if end else tail)
    if listed is not None:  # "The final answer is $12$ and $13$."
        return last.end(), listed
    block = _leading_math_block(tail)
    if block is None and last.group().endswith(":"):  # "Final Answer: <a sentence that says it>"
        sentence = tail[: end.start()] if end else tail
        verb = _IS_RE.search(sentence)
        if verb is not None:
            tail = tail[verb.end() :].lstrip()
            block = _leading_math_block(tail)
        elif _leading_math_block(sentence) is None:
            numbers = _NUMBER_RE.findall(_math_free(sentence))
            if len(numbers) == 1:
                return last.end(), numbers[0]
    answer = block if block is not None else _clean_tail(tail)
    return (last.end(), answer) if answer is not None else None


def _math_free(text: str) -> str:
    """`text` with words glued to digits dropped, so "2nd" or "x2" are not numbers."""
    return _GLUED_RE.sub(" ", text)


_DELIMITER_RE = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)|\n")
_CLOSER = {"$$": "$$", "$": "$", "\\[": "\\]", "\\(": "\\)"}


def _math_blocks(text: str) -> list[tuple[int, int, str]]:
    """Every $...$, $$...$$, \\[...\\] and \\(...\\) as (start, end, content), in one linear pass.

    Inline blocks ($, \\() end at a newline unclosed; display blocks ($$, \\[) may span lines. A regex
    with a lazy `.+?` per opener would rescan the rest of the text for every opener (quadratic).
    """
    blocks: list[tuple[int, int, str]] = []
    opener: str | None = None
    start = 0
    for m in _DELIMITER_RE.finditer(text):
        token = m.group()
        if token == "\\$":
            continue
        if opener is None:
            if token in _CLOSER:
                opener, start = token, m.end()
        elif token == "\n" and opener in ("$", "\\("):
            opener = None
        elif token == _CLOSER[opener]:
            content = text[start : m.start()].strip()
            if content:
                blocks.append((start, m.start(), content))
            opener = None
    return blocks


def _leading_math_block(text: str) -> str | None:
    """The content of the math block `text` starts with, if it starts with one."""
    blocks = _math_blocks(text)
    if blocks and not text[: blocks[0][0]].strip().strip("$").strip("\\[(").strip():
        return blocks[0][2]
    return None


def _last_number(text: str) -> str | None:
    found = _last_number_at(text)
    return found[1] if found is not None else None


def _last_number_at(text: str) -> tuple[int, str] | None:
    """The last number in `text` (a fraction "2/3" and a percentage "100%" included) with its position."""
    number = None
    for match in _NUMBER_RE.finditer(_math_free(text)):
        number = match
    return (number.start(), number.group()) if number is not None else None


def _trailing_boxes(text: str) -> list[str]:
    """The contents of the \\boxed{} answers that end the text one after another ("\\boxed{2}, \\boxed{3}")."""
    found = _boxes(text)
    if not found:
        return []
    run = [found[-1]]
    for earlier in reversed(found[:-1]):
        if _HEDGE_GAP_RE.fullmatch(text[earlier[1] : run[0][0]]) is None:
            break
        run.insert(0, earlier)
    return [content for _, _, content in run]


def extract_answer(text: str, *, mode: str = "auto", fallback_last_number: bool | None = None) -> str | None:
    """The final answer of a completion, found as `mode` says (see EXTRACTION_MODES), or None.

    `fallback_last_number` adds the last number to the "boxed" and "anchored" modes, and False
    takes it away from "auto" (for runs that grade only LaTeX or marked answers). Text after an
    end-of-turn marker ("<|im_start|>", "<|endoftext|>") is not part of the answer.
    """
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"mode must be one of {EXTRACTION_MODES}, got {mode!r}")
    turn_end = _END_OF_TURN_RE.search(text)
    if turn_end is not None:
        text = text[: turn_end.start()]
    last_number = mode == "auto" if fallback_last_number is None else fallback_last_number
    boxes = _boxes(text)
    if mode != "auto":  # the strict modes: the last box first, then the anchors
        if boxes:
            return boxes[-1][2]
        anchored = _anchored(text) if mode == "anchored" else None
        if anchored is not None:
            return anchored[1]
        return _last_number(text) if last_number else None
    # auto: the last explicit answer (a box, a "Final Answer" line, an "answer is"), by position
    marked = [(begin, content) for begin, _, content in boxes[-1:]]
    for found in (_final_sentence(text), _anchored(text)):
        if found is not None:
            marked.append(found)
    if marked:
        return max(marked, key=lambda item: item[0])[1]
    blocks = _math_blocks(text)
    number = _last_number_at(text[blocks[-1][1] :] if blocks else text) if last_number else None
    if number is not None:  # a number written after the last math block is the later answer
        return number[1]
    return blocks[-1][2] if blocks else None


def _looks_like_text(answer: str) -> bool:
    """Whether `answer` is a completion (prose, math delimiters, a box) rather than a bare answer."""
    if "\n" in answer or _BOX_RE.search(answer) or "$" in answer or "\\[" in answer or "\\(" in answer:
        return True
    if "####" in answer or _ANSWER_RE.search(answer) or _FINAL_RE.search(answer):
        return True
    bare = _COMMAND_RE.sub(" ", answer)  # \\begin{array}{cc}, \\text{...}: LaTeX, not prose
    return len(re.findall(r"[A-Za-z]{2,}", bare)) >= 3


# ----------------------------------------------------------------------------------------------
# Normalization and the fast path (no sympy)

_WRAP_PAIRS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_NOISE_RE = re.compile(r"\\\\|\\(?:left|right|displaystyle|mathrm|mathbf|textstyle)(?![A-Za-z])|\\q?quad|\\[!,;: ]|~")
_WRAPPED_MATRIX_RE = re.compile(r"[(\[]\s*(\\begin\{([pb]?)matrix\}.*\\end\{\2matrix\})\s*[)\]]", re.S)
_DOUBLE_ESCAPE_RE = re.compile(r"\\\\(?=[A-Za-z])")  # two backslashes before a command name: escaped twice
_CONJUNCTION_RE = re.compile(
    r"\s*,?\s*\\(?:text|textrm|mbox)\s*\{\s*,?\s*(?:and|or)\s*\}\s*|\s*,\s*(?:and|or)\s+"
)  # "x=1 \\text{ or } x=2" lists two
_DIGIT_GAP_RE = re.compile(r"(?<=\d)\s*(?:\{\s*,\s*\}|,\\!|\\!|\\,)\s*(?=\d)")  # 40,\!000 and 40\,000 and 14{,}916
_ARRAY_RE = re.compile(r"\\begin\{array\}\{[lcr|\s]*\}")  # an array of numbers is a matrix
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![A-Za-z])")
_INNER_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|°")
_TRAILING_TEXT_RE = re.compile(r"\s*\\(?:text|textbf|textrm|mbox|mathrm|operatorname)\s*\{[^{}]*\}\s*$")
_DEGREE_RE = re.compile(r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree)\s*$")
_PERCENT_RE = re.compile(r"\s*(?:\\?%|\\text\{\s*\\?%\s*\}|(?<![A-Za-z])(?:percent(?:age)?|pct)\.?)\s*$", re.I)
_APPROX_RE = re.compile(r"\s*(?:\\approx|\\sim|≈).*$", re.S)
_ASSIGNMENT_RE = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=\s*([^=<>]+)$")
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+"
_UNITS = r"(?:[A-Za-z]{3,}|\s+[A-Za-z][A-Za-z.]+(?:\^\{?\d\}?)?)?(?:\s+[A-Za-z][A-Za-z.]+(?:\^\{?\d\}?)?)*"
_PLAIN_RE = re.compile(
    rf"(?P<sign>-?)\s*(?:(?P<whole>\d+)\s+(?P<mnum>\d+)\s*/\s*(?P<mden>\d+)"  # a mixed number: 3128 1/2
    rf"|(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?"
    rf"|\\frac\s*\{{\s*(?P<fnum>{_NUM})\s*\}}\s*\{{\s*(?P<fden>{_NUM})\s*\}}"
    rf"|\\frac(?P<snum>\d)(?P<sden>\d)){_UNITS}"
)
_DECIMAL_RE = re.compile(r"\d\.\d|(?<!\d)\.\d|\d\.(?!\d)")


@dataclass(frozen=True)
class _Normalized:
    text: str
    percent: bool
    degrees: bool


def _unwrap(text: str) -> str:
    for _ in range(4):
        before = text
        text = text.strip()
        for left, right in _WRAP_PAIRS:
            if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text = text[len(left) : -len(right)].strip()
        if text.startswith(("\\boxed{", "\\fbox{")):
            inner = _last_boxed(text)
            if inner is not None and text.endswith("}"):
                text = inner
        if text == before:
            break
    return text


def _strip_group(text: str) -> str:
    """ "{1,3}" -> "1,3": bare braces around a whole answer are a LaTeX group (they print nothing), not a set."""
    while text.startswith("{") and text.endswith("}"):
        depth, closes = 0, 0
        for closes, char in enumerate(text):  # noqa: B007 - where the first group closes is read below
            depth += (char == "{") - (char == "}")
            if depth == 0:
                break
        if closes != len(text) - 1:  # "{a}+{b}": the first group closes early
            return text
        text = text[1:-1].strip()
    return text


def _join_listed(text: str) -> str:
    """ "a \\text{ and } b" -> "a, b"; "p=5, q=2 \\text{ and } p=7, q=2" -> "p=5, q=2; p=7, q=2" (a list of tuples)."""
    chunks = [chunk.strip().strip(",").strip() for chunk in _CONJUNCTION_RE.split(text)]
    if len(chunks) < 2 or not all(chunks):
        return text
    tuples = all(len(_top_level_split(chunk)) > 1 for chunk in chunks)
    return ("; " if tuples else ", ").join(chunks)


def _normalize(answer: str) -> _Normalized:
    text = _unwrap(answer)
    if "\\\\" in text and "\\begin" not in text:  # outside a matrix "\\\\" + letter is an escaped command
        text = _DOUBLE_ESCAPE_RE.sub(r"\\", text)
    text = _strip_group(_join_listed(text))
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    text = _ARRAY_RE.sub(r"\\begin{pmatrix}", text).replace("\\end{array}", "\\end{pmatrix}")
    text = _DIGIT_GAP_RE.sub(lambda m: "," if "," in m.group() else "", text)
    if _TRIG_RE.search(text):  # degrees inside trigonometry are an angle unit: sin(30^\circ) = 1/2
        text = _INNER_DEGREE_RE.sub(r"\\cdot\\frac{\\pi}{180}", text)
    text = _NOISE_RE.sub(lambda m: m.group() if m.group() == "\\\\" else " ", text).strip().rstrip(".").strip()
    wrapped = _WRAPPED_MATRIX_RE.fullmatch(text) if text.count("\\begin") == 1 else None
    if wrapped is not None:  # "(\\begin{pmatrix}...\\end{pmatrix})" is the matrix
        text = wrapped.group(1)
    if text.startswith("\\$"):
        text = text[2:].strip()
    text = _collapse_chain(_drop_approximation(text))
    percent = degrees = False
    for _ in range(3):
        stripped = _TRAILING_TEXT_RE.sub("", text)
        if stripped and stripped != text:
            text = stripped
        if _PERCENT_RE.search(text):
            percent, text = True, _PERCENT_RE.sub("", text)
        if _DEGREE_RE.search(text):
            degrees, text = True, _DEGREE_RE.sub("", text)
    return _Normalized(text.strip(), percent, degrees)


def _drop_approximation(text: str) -> str:
    """ "1/3 \\approx 0.33" -> "1/3" (the exact value was given); "\\Delta p \\approx v" -> "\\Delta p = v" (a name)."""
    match = _APPROX_RE.search(text)
    if match is None:
        return text
    before = text[: match.start()]
    if _LABEL_NAME_RE.fullmatch(before) and "=" not in before:
        return re.sub(r"\\approx|\\sim|≈", "=", text, count=1)
    return before.strip() or text


def _collapse_chain(text: str) -> str:
    """ "x = 5+5+1 = 7 = 11" -> "x = 11" (a label keeps the last value), "2+3 = 5" stays, "a = b = 5" -> "a = 5"."""
    if text.count("=") < 2 or _nesting(text) > MAX_NESTING:
        return text
    parts = [part.strip() for part in _top_level_split(text, "=") if part.strip()]
    if len(parts) < 3 or any(sep in text for sep in ("\\leq", "\\geq", "<", ">", "\\neq")):
        return text
    if len(_top_level_split(text, ",")) > 1 or len(_top_level_split(text, ";")) > 1:  # x = 1, y = 2: a list
        return text
    first, last = parts[0], parts[-1]
    return f"{first} = {last}" if _LABEL_NAME_RE.fullmatch(first) else last


@dataclass(frozen=True)
class _Plain:
    value: Fraction
    exact: bool  # False when written with a decimal point: compared with a relative tolerance
    percent: bool


def _to_fraction(literal: str) -> Fraction:
    return Fraction(literal.replace(",", "").rstrip(".") or "0")


_BARE_NUMBER_RE = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")


def _parse_plain(answer: str, *, assignment: bool = True) -> _Plain | None:
    if len(answer) > 400:
        return None
    if _BARE_NUMBER_RE.fullmatch(answer):  # the common case skips normalization
        return _Plain(Fraction(answer.strip()), "." not in answer, False)
    norm = _normalize(answer)
    text = norm.text
    if assignment:
        match = _ASSIGNMENT_RE.match(text)
        if match:
            text = _normalize(match.group(1)).text
    if _DECIMAL_COMMA_RE.fullmatch(text):  # a decimal comma: no thousands group has other than 3 digits
        text = text.replace(",", ".")
    match = _PLAIN_RE.fullmatch(text)
    if match is None:
        return None
    if match.group("whole") is not None:
        whole, mnum, mden = (int(match.group(k)) for k in ("whole", "mnum", "mden"))
        if not 0 < mnum < mden:  # "3 4/2" is not a mixed number
            return None
        value = Fraction(whole) + Fraction(mnum, mden)
        return _Plain(-value if match.group("sign") else value, True, norm.percent)
    num, den = match.group("num", "den")
    if num is None:
        num, den = match.group("fnum", "fden") if match.group("fnum") else match.group("snum", "sden")
    value = _to_fraction(num)
    if den is not None:
        divisor = _to_fraction(den)
        if divisor == 0:
            return None
        value /= divisor
    if match.group("sign"):
        value = -value
    exact = "." not in num and (den is None or "." not in den)
    return _Plain(value, exact, norm.percent)


_parse_gold_plain = functools.lru_cache(maxsize=1 << 16)(_parse_plain)
_parse_pred_plain = functools.lru_cache(maxsize=1 << 12)(_parse_plain)  # a group often repeats an answer


def _rounded(value: Fraction, precision: int) -> int:
    """`value` rounded half away from zero to `precision` decimals, times 10^precision."""
    scaled = abs(value) * 10**precision
    rounded = int(scaled + Fraction(1, 2))
    return rounded if value >= 0 else -rounded


def _close(a: Fraction, b: Fraction, exact: bool, precision: int) -> bool:
    """Equal when exact; else equal after rounding both to `precision` decimals and within 10^-precision relatively.

    The rounding is math-verify's `float_rounding` (so pi is not 3.14159 at 6 decimals, and neither is
    sqrt(2) 1.41421); the relative bound (10^-(precision-1)) keeps two different tiny values from both
    rounding to 0.
    """
    if exact:
        return a == b
    if _rounded(a, precision) != _rounded(b, precision):
        return False
    cross_a, cross_b = a.numerator * b.denominator, b.numerator * a.denominator  # in integers: faster
    return abs(cross_a - cross_b) * 10 ** (precision - 1) <= max(abs(cross_a), abs(cross_b))


def _plain_equal(gold: _Plain, pred: _Plain, precision: int) -> bool:
    """Equal values; a percentage also equals its fraction (10% is 0.1) and its bare number (10% is 10)."""
    exact = gold.exact and pred.exact
    if _close(gold.value, pred.value, exact, precision):
        return True
    if gold.percent == pred.percent:
        return False
    gold_value = gold.value / 100 if gold.percent else gold.value
    pred_value = pred.value / 100 if pred.percent else pred.value
    return _close(gold_value, pred_value, exact, precision)


_LABEL_NAME_RE = re.compile(r"\s*(?:(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{[^{}]*\}|_\w)?\s*){1,2}(?:\([^()=]*\))?\s*")


def _top_level_split(text: str, sep: str = ",") -> list[str]:
    """`text` split at `sep` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "{([":
            depth += 1
        elif char in "})]":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


# ----------------------------------------------------------------------------------------------
# Public comparison API


@dataclass(frozen=True)
class Comparison:
    """The outcome of one comparison: `equal`, the `path` that decided it, and why it failed if it did."""

    equal: bool
    path: str  # "fast", "slow" or "guard"
    error: str | None = None  # the comparison could not be made: timeout, crash, bad reference
    note: str | None = None  # a reason that is not an error, e.g. "prediction did not parse"


def _nesting(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "})]":
            depth -= 1
    return deepest


_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textrm|textit|textnormal|mbox|mathrm|mathbf|mathcal|mathit|mathsf|mathbb|operatorname)"
    r"\s*\{([^{}]*)\}"
)
_PRIME_RE = re.compile(r"'|\\prime(?![A-Za-z])")


@functools.lru_cache(maxsize=1 << 14)
def _text_form(answer: str) -> str:
    """The answer with formatting removed, for a cheap "written the same way" check."""
    norm = _normalize(answer)
    text = re.sub(r"\s+", "", _TEXT_CMD_RE.sub(r"\1", norm.text)).lower()
    if re.fullmatch(r"[({][a-z][)}]", text):
        text = text[1]  # "(A)" is the choice "A"; "{E}" is what \mathrm{E} leaves
    return f"{text}%" if norm.percent else text


_FACTORIAL_RE = re.compile(r"(?<![\d.])(\d{5,})\s*!")


def _guard(gold: str, pred: str) -> Comparison | None:
    if len(gold) > MAX_ANSWER_CHARS:
        error = f"reference answer is {len(gold)} chars (> {MAX_ANSWER_CHARS})"
        return Comparison(False, "guard", error=error)
    if len(pred) > MAX_ANSWER_CHARS:
        return Comparison(False, "guard", note=f"answer is {len(pred)} chars (> {MAX_ANSWER_CHARS}), refused")
    if _nesting(pred) > MAX_NESTING:
        return Comparison(False, "guard", note=f"answer nests brackets deeper than {MAX_NESTING}, refused")
    for answer, side in ((gold, "reference answer"), (pred, "answer")):
        for match in _FACTORIAL_RE.finditer(answer):  # the parser would compute it while reading it
            if int(match.group(1)) > MAX_FACTORIAL:
                reason = f"{side} takes the factorial of {match.group(1)} (> {MAX_FACTORIAL}), refused"
                return Comparison(False, "guard", error=reason if side != "answer" else None, note=reason)
    return None


def compare(
    gold: str,
    pred: str,
    *,
    precision: int = 6,
    strict: bool = True,
    allow_set_relation: bool = False,
    fallback_last_number: bool | None = None,
    timeout: float = 5.0,
) -> Comparison:
    """Compare a predicted answer with the reference; never raises, returns within `timeout` seconds.

    `pred` may be a whole completion (its answer is found as `extract_answer` does); `precision` is
    the number of decimals inexact numbers are compared at; `allow_set_relation` lets a relation
    ("-2 <= x <= 7") answer a gold set ("[-2, 7]") too.
    """
    started = time.monotonic()
    gold = answer_of(gold)
    pred_answer = answer_pair(gold, pred, fallback_last_number=fallback_last_number)
    if pred_answer is None:
        return Comparison(False, "fast", note="no answer found")
    decided = _decide_in_process(gold, pred_answer, precision)
    if decided is not None:
        return decided
    request = (gold, pred_answer, precision, strict, allow_set_relation)
    return _POOL.run(request, started + timeout)


def answer_of(text: str, *, mode: str = "auto") -> str:
    """A reference answer as an answer: `text` itself when bare, else what `extract_answer` finds in it.

    A reference with several boxed answers ("\\boxed{1} papers and \\boxed{2} bins") or made of math
    blocks joined by "and" / "or" / commas ("$21,16$ or $11$") is one answer, the set of them.
    """
    if len(text) > MAX_ANSWER_CHARS * 50 or not _looks_like_text(text):
        return text
    found = _boxes(text)
    boxes = list({_text_form(content): content for _, _, content in found}.values())  # repeats are one
    if len(boxes) > 1 and all(_LISTING_GAP_RE.fullmatch(gap) for gap in _gaps(text, found)):
        return ", ".join(boxes)
    return _joined_blocks(text) or extract_answer(text, mode=mode) or text


def _gaps(text: str, spans: Sequence[tuple[int, int, str]]) -> list[str]:
    return [text[end:start] for (_, end, _), (start, _, _) in zip(spans, spans[1:])]


def _joined_blocks(text: str) -> str | None:
    """ "$12$ and $13$", "$21,16$ or $11$": math blocks joined by "and" / "or" / commas, as one list."""
    blocks = _math_blocks(text)
    if len(blocks) > 1 and all(_HEDGE_GAP_RE.fullmatch(gap.strip("$")) for gap in _gaps(text, blocks)):
        return ", ".join(content for _, _, content in blocks)
    return None


def _parts(gold: str) -> int:
    """How many answers a gold holds ("(3, 3), (1, 1)" holds two; "(1, 2)" one)."""
    return len(_top_level_split(_normalize(gold).text.strip("{}\\")))


def answer_pair(
    gold: str, completion: str, *, mode: str = "auto", fallback_last_number: bool | None = None
) -> str | None:
    """The answer of `completion` to compare with `gold`, or None when it gives none or hedges.

    In "auto" mode a bare answer is its own answer; when the gold has k > 1 parts, the last k boxed
    answers are one answer, a set; for a one-part gold, different boxed answers in a row hedge and
    are not an answer. The strict modes take the last box, as before.
    """
    if mode != "auto":  # the strict modes take what `extract_answer` finds, the last box first
        found = extract_answer(completion, mode=mode, fallback_last_number=fallback_last_number)
        return _last_value(gold, found) if found is not None else None
    answer: str | None = completion
    if _looks_like_text(completion):
        boxes = _boxes(completion)
        parts = _parts(gold) if len(boxes) > 1 else 1  # the gold is normalised only when it can matter
        if parts > 1:
            if len(_top_level_split(boxes[-1][2])) == 1:  # "\\boxed{3} and \\boxed{5}"
                return ", ".join(content for _, _, content in boxes[-parts:])
        elif len(boxes) > 1:
            trailing = _trailing_boxes(completion)
            if len(trailing) > 1 and len({_text_form(b) for b in trailing}) > 1:
                return None
        answer = extract_answer(completion, mode=mode, fallback_last_number=fallback_last_number)
    return _last_value(gold, answer) if answer is not None else None


_COMMAND_RE = re.compile(r"\\[A-Za-z]+\*?(?:\s*\{[^{}]*\})*")
_RELATION_RE = re.compile(r"=|<|>|\\(?:leq?|geq?|neq?|lt|gt|in|approx)(?![A-Za-z])")


def _last_value(gold: str, answer: str) -> str:
    """For a gold that is a value (no =, <, >), the part of `answer` after its last top-level "="."""
    if "=" not in answer or _RELATION_RE.search(gold) or _nesting(answer) > MAX_NESTING:
        return answer
    parts = _top_level_split(answer, "=")
    if len(parts) < 2 or any(p.rstrip().endswith(("<", ">", "!", "\\")) for p in parts[:-1]):
        return answer
    if len(_top_level_split(answer, ",")) > 1 or _CONJUNCTION_RE.search(answer):  # "x = 1, y = 2": a list
        return answer
    return parts[-1].strip() or answer


_TIME_RE = re.compile(r"\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(?:\\text\s*\{\s*)?(?:([AaPp])\.?\s*[Mm]\.?)?\s*\}?\s*")


def _clock(answer: str) -> int | None:
    """Seconds after midnight of a clock time ("20:34", "20:34:00", "08:34 P.M."), or None."""
    match = _TIME_RE.fullmatch(_unwrap(answer))
    if match is None:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if match.group(4):
        if not 1 <= hours <= 12:
            return None
        hours = hours % 12 + (12 if match.group(4) in "Pp" else 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    return hours * 3600 + minutes * 60 + seconds


def _decide_in_process(gold: str, pred: str, precision: int) -> Comparison | None:
    """The verdict when the fast path or the input guards can give it; None means the slow path decides."""
    gold_clock = _clock(gold) if ":" in gold else None
    if gold_clock is not None:  # a time of day, not a ratio: 12:00 is not 1:00
        pred_clock = _clock(pred) if ":" in pred else None
        return Comparison(gold_clock == pred_clock, "fast")
    gold_plain = _parse_gold_plain(gold)
    if gold_plain is not None:
        pred_plain = _parse_pred_plain(pred)
        if pred_plain is not None:
            return Comparison(_plain_equal(gold_plain, pred_plain, precision), "fast")
    refused = _guard(gold, pred)
    if refused is not None:
        return refused
    if _text_form(gold) and _text_form(gold) == _text_form(pred):
        return Comparison(True, "fast")
    return None


def is_equivalent(
    gold: str,
    pred: str,
    *,
    precision: int = 6,
    strict: bool = True,
    allow_set_relation: bool = False,
    fallback_last_number: bool | None = None,
    timeout: float = 5.0,
) -> bool:
    """Whether `pred` is mathematically the same answer as `gold` (False on timeout or parse failure)."""
    return compare(
        gold,
        pred,
        precision=precision,
        strict=strict,
        allow_set_relation=allow_set_relation,
        fallback_last_number=fallback_last_number,
        timeout=timeout,
    ).equal


def compare_batch(
    golds: Sequence[str], preds: Sequence[str], *, processes: int | None = None, **kwargs: Any
) -> list[Comparison]:
    """`compare` over pairs, in order; slow-path pairs are spread over `processes` worker processes."""
    if len(golds) != len(preds):
        raise ValueError(f"verify_batch got {len(golds)} golds and {len(preds)} preds; expected equal lengths")
    golds = [answer_of(gold) for gold in golds]
    answers = [answer_pair(gold, pred) for gold, pred in zip(golds, preds, strict=True)]
    return _compare_answers(golds, answers, processes=processes, **kwargs)


def _compare_answers(
    golds: Sequence[str], answers: Sequence[str | None], *, processes: int | None = None, **kwargs: Any
) -> list[Comparison]:
    """Comparisons of answers already extracted (None: no answer), fast path in-process, the rest in workers."""
    timeout = float(kwargs.pop("timeout", 5.0))
    options = {"precision": 6, "strict": True, "allow_set_relation": False} | kwargs
    results: list[Comparison | None] = [None] * len(golds)
    slow: list[int] = []
    preds = [answer or "" for answer in answers]
    for i, (gold, pred) in enumerate(zip(golds, preds, strict=True)):
        if answers[i] is None:
            results[i] = Comparison(False, "fast", note="no answer found")
            continue
        results[i] = _decide_in_process(gold, pred, options["precision"])
        if results[i] is None:
            slow.append(i)
    workers = min(len(slow), processes or os.cpu_count() or 1)
    requests = [
        (golds[i], preds[i], options["precision"], options["strict"], options["allow_set_relation"]) for i in slow
    ]
    if workers <= 1 or len(slow) < 4:
        for i, request in zip(slow, requests, strict=True):
            results[i] = _POOL.run(request, time.monotonic() + timeout)
    else:
        next_item = iter(range(len(slow)))
        lock = threading.Lock()

        def drain() -> None:
            while True:
                with lock:
                    k = next(next_item, None)
                if k is None:
                    return
                results[slow[k]] = _POOL.run(requests[k], time.monotonic() + timeout)

        threads = [threading.Thread(target=drain, daemon=True) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return [r for r in results if r is not None]


def verify_batch(
    golds: Sequence[str], preds: Sequence[str], *, processes: int | None = None, **kwargs: Any
) -> list[bool]:
    """`is_equivalent` over pairs, in order, with slow-path pairs spread over worker processes."""
    return [c.equal for c in compare_batch(golds, preds, processes=processes, **kwargs)]


# ----------------------------------------------------------------------------------------------
# Worker processes (caller side)

_BOOT = "import sys; from llmenv.verifiers._math_sympy import serve; serve(int(sys.argv[1]))"


class _Worker:
    """One slow-path subprocess, talked to over a socketpair; killed when a request overruns."""

    def __init__(self) -> None:
        import llmenv

        ours, theirs = socket.socketpair()
        root = os.path.dirname(os.path.abspath(list(llmenv.__path__)[0]))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C meant for the caller does not kill a worker mid-request
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.healthy = True

    def run(self, request: tuple[Any, ...], deadline: float) -> Comparison:
        try:
            if not self.ready:
                if not self.conn.poll(max(0.0, deadline - time.monotonic())):
                    if self.proc.poll() is not None:
                        return self._fail(f"math worker exited ({self.proc.returncode}) while starting")
                    return Comparison(False, "slow", error="timed out while the math worker was starting")
                self.conn.recv()  # the "ready" greeting
                self.ready = True
            self.conn.send(request)
            if not self.conn.poll(max(0.0, deadline - time.monotonic())):
                self.kill()
                return Comparison(False, "slow", error="timed out: comparison overran its deadline")
            equal, error, note = self.conn.recv()
            return Comparison(equal, "slow", error=error, note=note)
        except (EOFError, OSError) as exc:
            return self._fail(f"math worker died ({type(exc).__name__}; exit code {self.proc.poll()})")

    def _fail(self, error: str) -> Comparison:
        self.kill()
        return Comparison(False, "slow", error=error)

    def kill(self) -> None:
        self.healthy = False
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()


class _WorkerPool:
    """Idle workers shared by all threads; each request borrows one, so threads never wait on each other."""

    def __init__(self) -> None:
        self.idle: list[_Worker] = []
        self.lock = threading.Lock()
        self.max_idle = max(2, os.cpu_count() or 1)

    def run(self, request: tuple[Any, ...], deadline: float) -> Comparison:
        with self.lock:
            worker = self.idle.pop() if self.idle else None
        worker = worker or _Worker()
        result = worker.run(request, deadline)
        if worker.healthy:
            with self.lock:
                if len(self.idle) < self.max_idle:
                    self.idle.append(worker)
                    return result
            worker.kill()
        return result

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.kill()


def _reset_pool_in_child() -> None:
    global _POOL
    _POOL = _WorkerPool()  # the parent's workers and locks belong to the parent


_POOL = _WorkerPool()
os.register_at_fork(after_in_child=_reset_pool_in_child)
atexit.register(lambda: _POOL.close())  # reap idle workers instead of leaving them to notice EOF


def start_workers(workers: int = 1) -> None:
    """Start slow-path workers without waiting: they boot while the caller goes on (e.g. loads a model)."""
    with _POOL.lock:
        wanted = min(workers, _POOL.max_idle) - len(_POOL.idle)
    fresh = [_Worker() for _ in range(max(0, wanted))]
    with _POOL.lock:
        _POOL.idle.extend(fresh)


def warm_up(workers: int = 1) -> None:
    """Start `workers` slow-path workers now, so the first real comparison does not pay their start-up."""
    deadline = time.monotonic() + 60.0
    pool = [_Worker() for _ in range(workers)]
    for worker in pool:
        worker.run(("1", "1", 6, True, False), deadline)
    with _POOL.lock:
        _POOL.idle.extend(w for w in pool if w.healthy)


# ----------------------------------------------------------------------------------------------
# The verifier


class MathVerifier(BaseVerifier):
    """Reward 1.0 when the completion's final answer equals `task.answer`, else 0.0; bounded in time.

    `extraction` is how the answer is found (EXTRACTION_MODES: "auto" by default, "boxed" to reward
    only answers in \\boxed{}, "anchored" for boxed or "answer is" / "####" lines); a gold answer may
    be a bare answer, `$`-delimited, or a worked solution whose answer is found the same way.
    `fallback_last_number` (None: the mode's default) adds the last number to the strict modes, or
    with False takes it away from "auto". `precision`, `strict` and `allow_set_relation` are
    `compare`'s options.
    """

    time_bounded = True

    def __init__(
        self,
        *,
        extraction: str = "auto",
        fallback_last_number: bool | None = None,
        timeout: float = 5.0,
        strict: bool = True,
        precision: int = 6,
        allow_set_relation: bool = False,
    ) -> None:
        if extraction not in EXTRACTION_MODES:
            raise VerifierError(f"extraction must be one of {EXTRACTION_MODES}, got {extraction!r}")
        if not isinstance(precision, int) or isinstance(precision, bool) or not 1 <= precision <= 30:
            raise VerifierError(f"precision must be an int of decimals in [1, 30], got {precision!r}")
        self.extraction = extraction
        self.fallback_last_number = fallback_last_number
        self.timeout = timeout
        self.strict = strict
        self.precision = precision
        self.allow_set_relation = allow_set_relation

    def __call__(self, completion: str, task: Task) -> Verdict:
        """Extract the answer from `completion` and compare it with `task.answer`."""
        return self.verify_batch([completion], [task], processes=1)[0]

    def prestart(self) -> None:
        """Start a slow-path worker in the background, so the first slow comparison does not wait for it."""
        start_workers(1)

    def verify_batch(
        self, completions: Sequence[str], tasks: Sequence[Task], *, processes: int | None = None
    ) -> list[Verdict]:
        """Verdicts for many completions, in order; slow-path comparisons run in parallel worker processes."""
        verdicts: list[Verdict | None] = [None] * len(completions)
        golds: list[str] = [""] * len(completions)
        pending: list[tuple[int, str, dict[str, Any]]] = []
        for i, (completion, task) in enumerate(zip(completions, tasks, strict=True)):
            if task.answer is None:
                verdicts[i] = Verdict.failure("task has no reference answer", name="correct")
                continue
            gold = golds[i] = answer_of(task.answer)
            extracted = answer_pair(
                gold, completion, mode=self.extraction, fallback_last_number=self.fallback_last_number
            )
            hedged = extracted is None and self.extraction == "auto" and len(_trailing_boxes(completion)) > 1
            details: dict[str, Any] = {"extracted": extracted, "gold": task.answer}
            if extracted is None:
                details["reason"] = "hedged between different boxed answers" if hedged else "no answer found"
                verdicts[i] = Verdict(reward=0.0, passed=False, parts={"correct": 0.0}, details=details)
            else:
                pending.append((i, extracted, details))
        results = _compare_answers(
            [golds[i] for i, _, _ in pending],
            [extracted for _, extracted, _ in pending],
            processes=processes,
            strict=self.strict,
            precision=self.precision,
            allow_set_relation=self.allow_set_relation,
            timeout=self.timeout,
        )
        for (i, _, details), result in zip(pending, results, strict=True):
            details["path"] = result.path
            if result.note is not None:
                details["reason"] = result.note
            if result.error is not None:
                verdicts[i] = Verdict.failure(result.error, name="correct", details=details)
            else:
                reward = 1.0 if result.equal else 0.0
                verdicts[i] = Verdict(reward=reward, passed=result.equal, parts={"correct": reward}, details=details)
        return [v for v in verdicts if v is not None]
