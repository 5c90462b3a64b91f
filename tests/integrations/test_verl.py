"""verl: the exported parquet has verl's columns and the env's own tasks; compute_score as verl calls it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import llmenv
from llmenv.errors import TaskConfigError, UnknownTaskError
from llmenv.integrations import verl
from llmenv.types import Verdict

VERL_COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info"]
VERL_PATH = str(Path(os.environ.get("LLMENV_SIDE_PACKAGES", Path(__file__).resolve().parents[2] / ".side-packages"))
                / "verl")  # fmt: skip
"""verl 0.9.1 and what its reward code imports: a folder `bash .ci/side-packages.sh` makes (CI runs it)."""


def flaky_grader(completion: str, task) -> Verdict:
    """Right when the completion is the answer; crashes on completions that say 'boom'."""
    if "boom" in completion:
        raise RuntimeError("grader crashed")
    return Verdict(reward=float(completion.strip() == task.answer), passed=completion.strip() == task.answer)


llmenv.register_task("verl-flaky-test-v0", source=llmenv.tasks.arith.generate_arith, verifier=flaky_grader,
                     replace=True)  # fmt: skip


def read_back(path) -> list[dict]:
    """The rows as verl's dataset reads them (pyarrow, structs as dicts)."""
    return pq.read_table(path).to_pylist()


def verl_call(row: dict, response: str) -> dict:
    """compute_score called the way verl's reward manager calls it: keywords, plus ones it adds."""
    extra = dict(row["extra_info"], num_turns=None, rollout_reward_scores={})
    return verl.compute_score(data_source=row["data_source"], solution_str=response,
                              ground_truth=row["reward_model"]["ground_truth"], extra_info=extra, step=3,
                              tokenizer=None)  # fmt: skip


def test_export_has_verls_columns_and_the_tasks_env_reset_draws(tmp_path, tok):
    path = verl.export_parquet("arith-demo-v0", tmp_path / "train.parquet", 6, seed=100)
    rows = read_back(path)
    assert pq.read_schema(path).names == VERL_COLUMNS and len(rows) == 6
    env = llmenv.make("llmenv/arith-demo-v0", tokenizer=tok)
    for i, row in enumerate(rows):
        _, info = env.reset(seed=100 + i)
        assert row["data_source"] == "llmenv/arith-demo-v0" and row["ability"] == "llmenv"
        assert row["prompt"] == info["messages"]  # the demo's system prompt included, as the env renders it
        assert row["reward_model"] == {"style": "rule", "ground_truth": info["task"].answer}
        assert row["extra_info"]["split"] == "train" and row["extra_info"]["index"] == i
        assert verl.task_from_json(row["extra_info"]["llmenv_task"]).answer == info["task"].answer


def test_export_takes_make_keywords_for_the_env_and_the_source(tok):
    (row,) = verl.export_rows("arith-v0", 1, seed=3, system_prompt="Be terse.", digits=3, chat_template=None)
    _, info = llmenv.make("llmenv/arith-v0", tokenizer=tok, system_prompt="Be terse.", digits=3).reset(seed=3)
    assert row["prompt"] == info["messages"] and row["prompt"][0] == {"role": "system", "content": "Be terse."}


def test_compute_score_equals_the_envs_reward(tmp_path, tok):
    rows = read_back(verl.export_parquet("arith-demo-v0", tmp_path / "t.parquet", 4, seed=7))
    env = llmenv.make("llmenv/arith-demo-v0", tokenizer=tok)
    for i, row in enumerate(rows):
        answer = row["reward_model"]["ground_truth"]
        for response in (f"So \\boxed{{{answer}}}", f"\\boxed{{{int(answer) + 1}}}", "no idea"):
            env.reset(seed=7 + i)
            _, reward, *_ = env.step(response)
            got = verl_call(row, response)
            assert list(got) == list(verl.SCORE_KEYS) and got["score"] == pytest.approx(reward)
            assert got["passed"] == float(response.startswith("So")) and got["verifier_error"] == 0.0


def test_a_crashing_verifier_is_flagged_with_the_same_keys(tmp_path):
    (row,) = read_back(verl.export_parquet("verl-flaky-test-v0", tmp_path / "t.parquet", 1))
    right = verl_call(row, row["reward_model"]["ground_truth"])
    crashed = verl_call(row, "boom")
    assert right == {"score": 1.0, "passed": 1.0, "verifier_error": 0.0}
    assert crashed == {"score": 0.0, "passed": 0.0, "verifier_error": 1.0}


def test_batch_scores_mixed_sources_in_order_and_code_tasks_run_their_tests(tmp_path):
    code = read_back(verl.export_parquet("codegen-v0", tmp_path / "code.parquet", 2))
    arith = read_back(verl.export_parquet("verl-flaky-test-v0", tmp_path / "arith.parquet", 2))
    task = verl.task_from_json(code[0]["extra_info"]["llmenv_task"])
    assert task.tests and task.meta["entry_point"] in task.meta["reference_solution"]  # tests and meta survive
    rows = [code[0], arith[0], code[1], arith[1]]
    responses = [f"```python\n{task.meta['reference_solution']}```", arith[0]["reward_model"]["ground_truth"],
                 "```python\ndef nothing():\n    pass\n```", "boom"]  # fmt: skip
    results = verl.compute_score_batch(
        data_sources=[r["data_source"] for r in rows], solution_strs=responses,
        ground_truths=[r["reward_model"]["ground_truth"] for r in rows], extra_infos=[r["extra_info"] for r in rows],
    )  # fmt: skip
    assert results == [
        {"score": 1.0, "passed": 1.0, "verifier_error": 0.0},  # the reference solution passes its tests
        {"score": 1.0, "passed": 1.0, "verifier_error": 0.0},
        {"score": 0.0, "passed": 0.0, "verifier_error": 0.0},  # wrong code fails its tests: not an error
        {"score": 0.0, "passed": 0.0, "verifier_error": 1.0},
    ]
    assert [verl_call(r, text) for r, text in zip(rows, responses)] == results


def test_rows_verl_prepared_itself_score_against_their_ground_truth():
    score = verl.compute_score_for("arith-v0")
    assert score(data_source="openai/gsm8k", solution_str="The answer is \\boxed{12}", ground_truth="12")["score"] == 1
    assert score(data_source="openai/gsm8k", solution_str="\\boxed{13}", ground_truth="12")["score"] == 0


def test_mistakes_are_named_errors(tmp_path):
    with pytest.raises(UnknownTaskError, match="arith-v0"):
        verl.compute_score(data_source="llmenv/arith-v9", solution_str="1", ground_truth="1")
    with pytest.raises(UnknownTaskError):
        verl.compute_score_for("no-such-task-v0")
    with pytest.raises(TaskConfigError, match="dialogue task; verl.s reward function scores one response"):
        verl.export_rows("guess-number-v0", 2)
    with pytest.raises(TaskConfigError, match="n must be at least 1"):
        verl.export_rows("arith-v0", 0)


@pytest.mark.slow
def test_verls_own_loader_and_reward_managers_give_the_envs_rewards(tmp_path):
    if not (Path(VERL_PATH) / "verl").is_dir():
        pytest.skip(f"no verl in {VERL_PATH}: run `bash .ci/side-packages.sh` (CI does)")
    from llmenv.models import load_tokenizer

    path = verl.export_parquet("arith-demo-v0", tmp_path / "rows.parquet", 6, seed=11)
    rows = read_back(path)
    answers = [row["reward_model"]["ground_truth"] for row in rows]
    boxed = [f"\\boxed{{{a}}}" for a in answers]
    responses = [f"It is {boxed[0]}.", "I do not know", f"\\boxed{{{int(answers[2]) + 1}}}", answers[3],
                 f"{boxed[4]} and {boxed[4]}", boxed[5]]  # fmt: skip
    (tmp_path / "responses.json").write_text(json.dumps(responses))
    driver = Path(__file__).with_name("verl_driver.py")
    proc = subprocess.run([sys.executable, str(driver), str(path), str(tmp_path / "responses.json")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": VERL_PATH})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    env = llmenv.make("llmenv/arith-demo-v0", tokenizer=load_tokenizer("smollm2-135m"))
    expected, passed = [], []
    for i, response in enumerate(responses):
        env.reset(seed=11 + i)
        _, reward, _, _, info = env.step(response)
        expected.append(reward)
        passed.append(float(info["verdict"].passes()))
    assert len(set(expected)) >= 3  # the responses earn different rewards, so a mix-up would show
    for manager in ("naive", "batch"):
        assert got[manager]["rewards"] == pytest.approx(expected)
        assert got[manager]["total"] == pytest.approx(sum(expected))  # nothing but the last token is rewarded
        assert got[manager]["extra"] == {"score": pytest.approx(expected), "passed": passed,
                                         "verifier_error": [0.0] * 6}  # fmt: skip
