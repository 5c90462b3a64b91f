"""Every built-in task passes Gymnasium's env checker; dataset tasks run on small local files."""

from __future__ import annotations

import json

import pytest
from gymnasium.utils.env_checker import check_env

import llmenv

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
BUILTIN = [
    "llmenv/arith-v0",
    "llmenv/countdown-v0",
    "llmenv/gsm8k-v0",
    "llmenv/math-v0",
    "llmenv/guess-number-v0",
    "llmenv/math-retry-v0",
    "llmenv/arith-tool-v0",
    "llmenv/python-tool-v0",
    "llmenv/humaneval-v0",
    "llmenv/mbpp-v0",
    "llmenv/codegen-v0",
]


def test_every_builtin_task_is_registered():
    from llmenv.tasks import register_builtin_tasks

    register_builtin_tasks()
    registered = {task_id for task_id in llmenv.list_tasks() if task_id.startswith("llmenv/")}
    assert set(BUILTIN) <= registered


@pytest.mark.parametrize("task_id", BUILTIN)
def test_check_env(task_id, tok, tmp_path):
    params = {}
    if task_id in LOCAL_ROWS:
        path = tmp_path / "rows.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in LOCAL_ROWS[task_id]))
        params["data_files"] = str(path)
    env = llmenv.make(task_id, tokenizer=tok, **params)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs.dtype.name == "int64" and {"task_id", "task", "messages", "text"} <= set(info)
