"""Every registered task passes Gymnasium's env checker; dataset tasks run on small local files.

The tasks are `llmenv.list_tasks()` when the tests are collected, so a newly registered task is
checked without editing this file. A task whose source is a Hub dataset is built from the rows in
LOCAL_ROWS (the Hub is not reachable from CI); one with no rows there fails, saying what to add.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

import llmenv
from llmenv.registry import spec

# a few rows with the Hub dataset's columns, for each task that loads one
LOCAL_ROWS = {
    "llmenv/gsm8k-v0": [{"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3+4=7\n#### 7"}],
    "llmenv/math-v0": [{"problem": "Compute $1+1$.", "solution": "$\\boxed{2}$", "answer": "2"}],
    "llmenv/mbpp-v0": [
        {
            "prompt": "Write a function to add two numbers.",
            "code": "def add(a, b):\n    return a + b",
            "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"],
            "test_imports": [],
        }
    ],
}
# tasks that ship with llmenv: losing one from the registry is a bug (new ones need not be listed)
BUILTIN = [
    "llmenv/arith-v0",
    "llmenv/countdown-v0",
    "llmenv/gsm8k-v0",
    "llmenv/math-v0",
    "llmenv/guess-number-v0",
    "llmenv/math-retry-v0",
    "llmenv/arith-retry-demo-v0",
    "llmenv/arith-tool-v0",
    "llmenv/python-tool-v0",
    "llmenv/humaneval-v0",
    "llmenv/mbpp-v0",
    "llmenv/codegen-v0",
]


def test_every_builtin_task_is_registered():
    assert set(BUILTIN) <= set(llmenv.list_tasks())


def make_kwargs(task_id: str, tmp_path: Path) -> dict[str, str]:
    """What `make` needs to build the task here: local data files for a Hub dataset, else nothing."""
    source = spec(task_id).source
    if not isinstance(source, llmenv.HubDataset):
        return {}
    if task_id not in LOCAL_ROWS:
        pytest.fail(
            f"`{task_id}` loads the Hub dataset `{source.path}`, which CI cannot reach: add a few of its rows "
            "to LOCAL_ROWS in tests/test_all_tasks.py"
        )
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in LOCAL_ROWS[task_id]))
    return {"data_files": str(path)}


@pytest.mark.parametrize("task_id", llmenv.list_tasks())
def test_check_env(task_id, tok, tmp_path):
    env = llmenv.make(task_id, tokenizer=tok, **make_kwargs(task_id, tmp_path))
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs.dtype.name == "int64" and {"task_id", "task", "messages", "text"} <= set(info)
    assert info["task_id"] == task_id


def test_local_rows_belong_to_registered_dataset_tasks():
    """A stale entry in LOCAL_ROWS would mean a dataset task lost its check without anyone noticing."""
    for task_id in LOCAL_ROWS:
        assert isinstance(spec(task_id).source, llmenv.HubDataset), task_id
