"""TRL: the GRPO dataset holds the env's own prompts and tasks; the reward function is the task's verifier."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llmenv
from llmenv.errors import TaskConfigError
from llmenv.integrations import trl
from llmenv.integrations.rows import task_from_json
from llmenv.types import Verdict

SIDE = Path(os.environ.get("LLMENV_SIDE_PACKAGES", Path(__file__).resolve().parents[2] / ".side-packages"))
TRL_PATH = SIDE / "trl"
"""TRL 1.16.0: a folder `bash .ci/side-packages.sh` makes (CI runs it)."""


def flaky_grader(completion: str, task) -> Verdict:
    """Right when the completion is the answer, with a length part; crashes on completions that say 'boom'."""
    if "boom" in completion:
        raise RuntimeError("grader crashed")
    right = completion.strip() == task.answer
    return Verdict(reward=float(right) + 0.1, passed=right, parts={"right": float(right), "bonus": 0.1})


llmenv.register_task("trl-flaky-test-v0", source=llmenv.tasks.arith.generate_arith, verifier=flaky_grader,
                     replace=True)  # fmt: skip


def test_rows_are_the_prompts_and_tasks_env_reset_draws(tok):
    rows = trl.grpo_rows("arith-demo-v0", 5, seed=40)
    env = llmenv.make("llmenv/arith-demo-v0", tokenizer=tok)
    for i, row in enumerate(rows):
        _, info = env.reset(seed=40 + i)
        assert set(row) == {"prompt", "llmenv_task"} and row["prompt"] == info["messages"]
        assert task_from_json(row["llmenv_task"]).answer == info["task"].answer
    assert trl.grpo_dataset("arith-demo-v0", 5, seed=40).to_list() == rows


def test_reward_function_equals_the_envs_reward_and_logs_every_part(tok):
    rows = trl.grpo_rows("arith-demo-v0", 3, seed=5)
    env = llmenv.make("llmenv/arith-demo-v0", tokenizer=tok)
    answers = [task_from_json(r["llmenv_task"]).answer for r in rows]
    texts = [f"\\boxed{{{answers[0]}}}", "no idea", f"\\boxed{{{int(answers[2]) + 1}}}"]
    completions = [[{"role": "assistant", "content": t}] for t in texts]  # TRL's conversational form
    metrics: dict[str, float] = {}
    reward = trl.reward_function("arith-demo-v0")
    tasks = [r["llmenv_task"] for r in rows]
    got = reward(prompts=[r["prompt"] for r in rows], completions=completions, llmenv_task=tasks,
                 log_metric=metrics.__setitem__, trainer_state=None)  # fmt: skip
    expected, verdicts = [], []
    for i, text in enumerate(texts):
        env.reset(seed=5 + i)
        _, value, *_, info = env.step(text)
        expected.append(value)
        verdicts.append(info["verdict"])
    assert got == pytest.approx(expected) and reward.__name__ == "llmenv_arith-demo-v0"
    assert metrics["llmenv/passed"] == pytest.approx(1 / 3) and metrics["llmenv/verifier_error_fraction"] == 0
    for part in verdicts[0].parts:
        assert metrics[f"llmenv/{part}"] == pytest.approx(sum(v.parts[part] for v in verdicts) / 3)
    assert reward(prompts=[], completions=texts, llmenv_task=[r["llmenv_task"] for r in rows]) == got  # plain text


def test_a_crashed_verifier_gives_none_and_is_counted():
    rows = trl.grpo_rows("trl-flaky-test-v0", 2)
    answer = task_from_json(rows[0]["llmenv_task"]).answer
    metrics: dict[str, float] = {}
    got = trl.reward_function("trl-flaky-test-v0")(prompts=[None] * 2, completions=[answer, "boom"],
                                                   llmenv_task=[r["llmenv_task"] for r in rows],
                                                   log_metric=metrics.__setitem__)  # fmt: skip
    assert got == [pytest.approx(1.1), None]
    assert metrics == {"llmenv/verifier_error_fraction": 0.5, "llmenv/passed": 1.0, "llmenv/bonus": 0.1,
                       "llmenv/right": 1.0}  # fmt: skip


def test_multi_turn_tasks_are_refused_with_the_reason():
    with pytest.raises(TaskConfigError, match="tool task; TRL's reward function scores one response"):
        trl.reward_function("arith-tool-v0")
    with pytest.raises(TaskConfigError, match="dialogue task"):
        trl.grpo_rows("guess-number-v0", 2)


@pytest.mark.slow
def test_trls_grpo_trainer_trains_a_step_on_an_llmenv_task(tiny_dir, tmp_path):
    if not (TRL_PATH / "trl").is_dir():
        pytest.skip(f"no TRL in {TRL_PATH}: run `bash .ci/side-packages.sh` (CI does)")
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("trl_driver.py")), tiny_dir, str(out)],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(TRL_PATH), "TRL_EXPERIMENTAL_SILENCE": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    logged, returned = report["logged"], report["returned"]
    assert len(returned) == 4 and all(r is not None and math.isfinite(r) for r in returned)
    assert len(set(returned)) > 1  # the samples differ in reward, so the step has advantages to follow
    assert logged["rewards/llmenv_trl-variety-test-v0/mean"] == pytest.approx(sum(returned) / 4, abs=1e-6)
    assert logged["llmenv/variety"] == pytest.approx(sum(returned) / 4, abs=1e-6)  # the part, through log_metric
    assert {"llmenv/passed", "llmenv/verifier_error_fraction"} <= set(logged) and math.isfinite(logged["loss"])
    assert report["moved"] > 0  # the step changed the weights
