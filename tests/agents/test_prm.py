"""PRM training: labels sit on the joined text's scored tokens, a tiny PRM learns, resume is exact, the CLI works."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llmenv.agents import prm
from llmenv.agents.prm import PRMConfig, encode_rows, first_error, step_f1, step_loss, train
from llmenv.errors import DataError
from llmenv.models import load_tokenizer
from llmenv.tasks.chain import ChainVerifier, generate_chain, solution_steps
from llmenv.testing import assert_same_run, metric_rows, write_jsonl
from llmenv.types import Task
from llmenv.verifiers.process import ProcessVerifier, RLHFlow, SeparatorClassifier

REQUIRED = {"step", "loss", "step_accuracy", "grad_norm", "tokens", "labelled_steps", "epoch", "step_time_s"}


def test_golden_loss_and_metrics():
    two_way = torch.tensor([[0.0, 2.0], [1.0, -1.0]])  # P(right) = sigmoid(2), sigmoid(-2)
    loss = (-math.log(1 / (1 + math.exp(-2))) - math.log(1 / (1 + math.exp(2)))) / 2
    assert float(step_loss(two_way, torch.tensor([1, 1]))) == pytest.approx(loss, abs=1e-6)  # 1.126928
    assert float(step_loss(two_way, torch.tensor([1, 0]))) == pytest.approx(0.126928, abs=1e-6)
    # flagged wrong: steps 1, 2; truly wrong: steps 2, 3 -> one hit, F1 = 2 * 1 / (2 + 2)
    assert step_f1([0.9, 0.2, 0.4, 0.7], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert step_f1([0.9, 0.8], [1, 1]) == 0.0 and step_f1([0.1], [0]) == 1.0
    assert first_error([1, 1, 0, 0]) == 2 and first_error([0.9, 0.8]) == 2 and first_error([0.3]) == 0


def step_rows(n: int) -> list[dict]:
    """Rows a tiny model can learn: a step saying "ok" is right, one saying "bad" is wrong (first error on)."""
    rows = []
    for i in range(n):
        wrong_at = i % 4  # 3 means no error
        steps = [f"x{k} = {'bad' if k >= wrong_at else 'ok'}" for k in range(3)]
        rows.append({"prompt": f"check {i}", "completions": steps, "labels": [k < wrong_at for k in range(3)]})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("steps") / "steps.jsonl", step_rows(40))


def config(tiny_dir, data, out, **overrides) -> PRMConfig:
    base = dict(model=tiny_dir, data=data, steps=12, batch_size=8, lr=3e-3, out=str(out), micro_batch=8, seed=0)
    base.update(overrides)
    return PRMConfig(**base)


def test_labels_sit_on_each_separators_token_of_the_text_tokenised_once(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    adapter = SeparatorClassifier(tok)
    row = {"prompt": "Q?", "completions": ["a = 1", "b = 22", "c = 333"], "labels": [True, True, False]}
    (encoded,) = encode_rows([("row", row)], adapter)
    text = "Q?\na = 1\nb = 22\nc = 333\n"
    assert encoded.ids == tok(text, add_special_tokens=False)["input_ids"]  # one tokenisation of the joined text
    assert encoded.labels == [1, 1, 0] and len(encoded.positions) == 3
    for position, step in zip(encoded.positions, row["completions"]):
        assert tok.decode(encoded.ids[: position + 1]).endswith(step + "\n")
        assert not tok.decode(encoded.ids[:position]).endswith(step + "\n")


def test_a_tiny_prm_learns_and_scores_as_a_process_verifier(tiny_dir, data, tmp_path):
    state = train(config(tiny_dir, data, tmp_path), progress=False)
    logged = metric_rows(tmp_path)
    assert [r["step"] for r in logged] == list(range(1, 13))
    assert all(math.isfinite(r[k]) for r in logged for k in REQUIRED)
    assert logged[-1]["loss"] < 0.5 * logged[0]["loss"]
    held = [r for r in logged if "eval_step_f1" in r]
    assert held and held[-1]["step"] == 12 and held[-1]["eval_first_error_accuracy"] == 1.0  # 4 held-out rows
    assert held[-1]["eval_step_f1"] == 1.0 and held[-1]["eval_step_accuracy"] == 1.0
    assert (tmp_path / "reward.png").exists()
    before = load_file(f"{tiny_dir}/model.safetensors")
    after = load_file(tmp_path / "final" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    verifier = ProcessVerifier(str(tmp_path / "final"), separator="\n")  # the adapter comes from the saved config
    assert isinstance(verifier.adapter, SeparatorClassifier)
    verdict = verifier("x0 = ok\nx1 = bad\nx2 = bad", Task("check 99"))
    assert [s.score > 0.5 for s in verdict.steps] == [True, False, False]
    with torch.no_grad():  # training reads the logits the verifier reads
        two_way, _ = prm.row_logits(state, encode_rows([("r", step_rows(2)[1])], state.adapter))
    again = verifier("x0 = ok\nx1 = bad\nx2 = bad", Task("check 1"))
    assert two_way.softmax(-1)[:, 1].tolist() == pytest.approx([s.score for s in again.steps], abs=1e-5)


def test_a_lora_prms_adapter_folder_keeps_its_head_convention_and_scores(tiny_dir, data, tmp_path):
    state = train(config(tiny_dir, data, tmp_path, steps=3, lora_rank=4, adapter="rlhflow"), progress=False)
    final = tmp_path / "final"
    assert not (final / "config.json").exists() and json.loads((final / "llmenv_config.json").read_text()) == {
        "llmenv_prm_adapter": "rlhflow"
    }
    verifier = ProcessVerifier(str(final), separator="\n")  # the convention from the adapter folder
    assert isinstance(verifier.adapter, RLHFlow)
    with torch.no_grad():
        two_way, _ = prm.row_logits(state, encode_rows([("r", step_rows(2)[1])], state.adapter))
    verdict = verifier("x0 = ok\nx1 = bad\nx2 = bad", Task("check 1"))
    assert two_way.softmax(-1)[:, 1].tolist() == pytest.approx([s.score for s in verdict.steps], abs=1e-5)


def test_resume_equals_an_uninterrupted_run(tiny_dir, data, tmp_path):
    train(config(tiny_dir, data, tmp_path / "straight", steps=6), progress=False)
    train(config(tiny_dir, data, tmp_path / "resumed", steps=4, save_every=2), progress=False)
    train(config(tiny_dir, data, tmp_path / "resumed", steps=6, resume=True), progress=False)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_a_task_with_step_data_trains_a_causal_lm_prm_with_the_rlhflow_head(tiny_dir, tmp_path):
    train(
        PRMConfig(model=tiny_dir, task="llmenv/arith-chain-v0", rows=20, adapter="rlhflow", steps=2, batch_size=4,
                  lr=1e-3, out=str(tmp_path), seed=0, task_params={"steps": 2}),
        progress=False,
    )  # fmt: skip
    logged = metric_rows(tmp_path)
    assert len(logged) == 2 and logged[0]["labelled_steps"] == 12  # 4 rows x (2 equations + the box)
    assert json.loads((tmp_path / "final" / "config.json").read_text())["llmenv_prm_adapter"] == "rlhflow"
    verifier = ProcessVerifier(str(tmp_path / "final"), separator="\n", outcome=ChainVerifier())
    task = generate_chain(np.random.default_rng(0), steps=2)
    verdict = verifier("\n".join(solution_steps(task)), task)
    assert verdict.passed and len(verdict.steps) == 3 and all(0 < s.score < 1 for s in verdict.steps)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "q", "completions": ["a"]}, "line 1: missing labels"),
        ({"prompt": "q", "completions": ["a", "b"], "labels": [True]}, "one bool per step \\(2 steps\\)"),
        ({"prompt": "q", "completions": [], "labels": []}, "non-empty list of step strings"),
        ({"prompt": "q", "completions": ["a"], "labels": [1]}, "one bool per step"),
    ],
)
def test_bad_rows_name_the_line_and_the_expected_form(tiny_dir, tmp_path, row, message):
    with pytest.raises(DataError, match=message):
        train(config(tiny_dir, write_jsonl(tmp_path / "bad.jsonl", [row]), tmp_path), progress=False)


def test_data_or_task_exactly_one_and_a_task_without_step_data(tiny_dir, tmp_path):
    with pytest.raises(DataError, match="exactly one of --data .* got neither"):
        PRMConfig(model=tiny_dir)
    with pytest.raises(DataError, match="got both"):
        PRMConfig(model=tiny_dir, data="x.jsonl", task="llmenv/arith-chain-v0")
    with pytest.raises(DataError, match="has no step data"):
        train(PRMConfig(model=tiny_dir, task="llmenv/arith-v0", out=str(tmp_path)), progress=False)


def test_cli_without_data_prints_one_line_and_trains_with_it(tiny_dir, data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "llmenv.cli", "train", "prm", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and "needs exactly one of --data" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "llmenv.cli", "train", "prm", "--model", tiny_dir, "--data", data, "--steps", "2",
         "--batch-size", "4", "--lr", "1e-3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"plot: {tmp_path}/reward.png" in proc.stdout and [r["step"] for r in metric_rows(tmp_path)] == [1, 2]


def test_a_trained_prm_rewards_grpo_through_the_prm_flag(tiny_dir, data, tmp_path):
    from llmenv.agents.grpo import GRPOConfig
    from llmenv.agents.grpo import train as train_grpo

    train(config(tiny_dir, data, tmp_path / "prm", steps=2), progress=False)
    state = train_grpo(
        GRPOConfig(model=tiny_dir, task="llmenv/arith-chain-v0", task_params={"steps": 2}, prm=str(tmp_path / "prm" /
                   "final"), steps=1, prompts_per_step=2, group_size=2, max_new_tokens=8, lr=1e-3, out=str(tmp_path /
                   "grpo"), seed=0),
        progress=False,
    )  # fmt: skip
    verifier = state.env.envs[0].verifier
    assert isinstance(verifier, ProcessVerifier) and isinstance(verifier.outcome, ChainVerifier)
    (row,) = metric_rows(tmp_path / "grpo")
    assert row["steps_mean"] > 0 and 0 < row["step_reward_mean"] < 1 and "parts/prm" in row and "parts/correct" in row


@pytest.mark.slow
def test_smollm2_prm_trained_on_the_chain_task_rewards_grpo_and_ppo(tmp_path):
    def llmenv_cli(*flags: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "llmenv.cli", *flags], capture_output=True, text=True, timeout=1800
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    llmenv_cli("train", "prm", "--task", "llmenv/arith-chain-v0", "--param", "steps=2", "--rows", "24", "--steps",
               "2", "--batch-size", "4", "--bf16", "--out", str(tmp_path / "prm"))  # fmt: skip
    held = metric_rows(tmp_path / "prm")[-1]
    assert all(math.isfinite(held[k]) for k in ("eval_step_f1", "eval_first_error_accuracy", "loss"))
    for learner in ("grpo", "ppo"):
        llmenv_cli("train", learner, "--task", "llmenv/arith-chain-v0", "--param", "steps=2", "--prm",
                   str(tmp_path / "prm" / "final"), "--steps", "1", "--prompts-per-step", "2", "--group-size", "2",
                   "--max-new-tokens", "32", "--bf16", "--out", str(tmp_path / learner))  # fmt: skip
        (row,) = metric_rows(tmp_path / learner)
        assert row["steps_mean"] >= 1 and 0 < row["step_reward_mean"] < 1 and math.isfinite(row["loss"])
