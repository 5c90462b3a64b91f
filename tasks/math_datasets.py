"""Dataset-backed math tasks: `llmenv/gsm8k-v0` (grade-school word problems) and `llmenv/math-v0` (MATH).

Each is a `HubDataset`: the real Hugging Face Hub location plus a row converter. Offline, pass
`data_files=` pointing at local JSON/JSONL/Parquet/CSV with the same columns. This module only
describes the data; loading is `llmenv.sources.HubDataset`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmenv.sources import HubDataset
from llmenv.types import Task

BOXED_INSTRUCTION = "Reason step by step, then put the final answer in \\boxed{}."


def _last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` in a reference solution (balanced braces)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def gsm8k_row_to_task(row: Mapping[str, Any]) -> Task:
    """A GSM8K row (`question`, `answer` ending in `#### N`) as a Task whose answer is N."""
    question, solution = row["question"], row["answer"]
    if "####" not in solution:
        raise ValueError("GSM8K answer has no '#### <number>' line")
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    return Task(prompt=f"{question}\n{BOXED_INSTRUCTION}", answer=final, meta={"solution": solution})


def math_row_to_task(row: Mapping[str, Any]) -> Task:
    """A MATH row (`problem`, and `answer` or a `solution` with a boxed answer) as a Task."""
    answer = row.get("answer") or _last_boxed(row.get("solution") or "")
    if not answer:
        raise ValueError("MATH row has neither an `answer` nor a boxed answer in `solution`")
    meta = {k: row[k] for k in ("level", "type", "subject", "unique_id") if row.get(k) is not None}
    return Task(prompt=f"{row['problem']}\n{BOXED_INSTRUCTION}", answer=answer, meta=meta)


GSM8K = HubDataset(path="openai/gsm8k", name="main", split="test", row_to_task=gsm8k_row_to_task)
MATH = HubDataset(path="HuggingFaceH4/MATH-500", split="test", row_to_task=math_row_to_task)
