"""gsm8k-v0 and math-v0: local data files, row conversion, and a clear error when offline."""

from __future__ import annotations

import json

import pytest
from gymnasium.utils.env_checker import check_env

import llmenv
from llmenv.errors import DatasetUnavailableError, TaskConfigError
from llmenv.tasks.math_datasets import gsm8k_row_to_task, math_row_to_task

GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
    {"question": "A pen costs $1,200 cents... how many?", "answer": "So 1,250 in total.\n#### 1,250"},
]
MATH_ROWS = [
    {
        "problem": "Compute $\\frac{18}{14}$ in lowest terms.",
        "solution": "It is $\\boxed{\\dfrac{9}{7}}$.",
        "level": "Level 1",
        "type": "Prealgebra",
    },
    {"problem": "Solve $x^2=4$ for $x>0$.", "solution": "x=2", "answer": "2"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_rows_become_tasks_with_the_final_number():
    assert gsm8k_row_to_task(GSM8K_ROWS[0]).answer == "7"
    assert gsm8k_row_to_task(GSM8K_ROWS[1]).answer == "1250"
    with pytest.raises(ValueError, match="####"):
        gsm8k_row_to_task({"question": "q", "answer": "no marker"})


def test_math_rows_use_answer_or_the_last_boxed_of_the_solution():
    task = math_row_to_task(MATH_ROWS[0])
    assert task.answer == "\\dfrac{9}{7}" and task.meta["level"] == "Level 1"
    assert math_row_to_task(MATH_ROWS[1]).answer == "2"


def test_gsm8k_env_from_local_jsonl(tmp_path, tok):
    env = llmenv.make("llmenv/gsm8k-v0", tokenizer=tok, data_files=str(write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)))
    _, info = env.reset(options={"index": 0})
    assert "Tom has 3 apples" in info["text"] and info["task"].answer == "7"
    assert env.step("3 + 4 = 7, so #### 7 ... \\boxed{7}")[1] == 1.0
    check_env(env, skip_render_check=True)


def test_math_env_from_local_parquet(tmp_path, tok):
    import datasets

    path = tmp_path / "math.parquet"
    datasets.Dataset.from_list([{**r, "answer": r.get("answer")} for r in MATH_ROWS]).to_parquet(str(path))
    env = llmenv.make("llmenv/math-v0", tokenizer=tok, data_files=str(path), limit=1)
    _, info = env.reset(seed=0)
    assert info["task"].answer == "\\dfrac{9}{7}"
    assert env.step("The fraction reduces to \\boxed{\\frac{9}{7}}.")[1] == 1.0


def test_offline_hub_fails_fast_with_a_hint(tok, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # datasets' own retries are what made an offline load take a minute: it must not be asked
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("asked datasets to load from the Hub"))
    with pytest.raises(DatasetUnavailableError, match="unreachable.*data_files="):
        llmenv.make("llmenv/gsm8k-v0", tokenizer=tok)


def test_bad_local_files(tmp_path, tok):
    with pytest.raises(DatasetUnavailableError, match="not found"):
        llmenv.make("llmenv/gsm8k-v0", tokenizer=tok, data_files=str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetUnavailableError, match="extensions"):
        llmenv.make("llmenv/gsm8k-v0", tokenizer=tok, data_files=str(tmp_path / "x.txt"))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "no marker"}])
    env = llmenv.make("llmenv/gsm8k-v0", tokenizer=tok, data_files=str(bad))
    with pytest.raises(TaskConfigError, match="row 0 could not be turned into a Task"):
        env.reset(seed=0)
