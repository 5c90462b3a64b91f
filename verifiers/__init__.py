"""Verifiers: the protocol and Rubric (base), math equivalence, format checks, sandboxed code tests.

`from llmenv.verifiers import Rubric, MathVerifier, CodeVerifier` gives the public names; each
lives in its own module (base.py, math.py, format.py, code.py).
"""

from __future__ import annotations

from llmenv.verifiers.base import (
    BaseVerifier,
    Rubric,
    Verifier,
    call_verifier,
    call_verifier_batch,
    check_verifier,
)
from llmenv.verifiers.code import CodeVerifier
from llmenv.verifiers.format import BoxedFormat, JSONFormat, RegexFormat
from llmenv.verifiers.math import MathVerifier, extract_answer, is_equivalent

__all__ = [
    "BaseVerifier",
    "BoxedFormat",
    "CodeVerifier",
    "JSONFormat",
    "MathVerifier",
    "RegexFormat",
    "Rubric",
    "Verifier",
    "call_verifier",
    "call_verifier_batch",
    "check_verifier",
    "extract_answer",
    "is_equivalent",
]
