"""Online DPO on a tiny model: pairs within groups, ties and errors dropped, the reference, SPIN, resume, CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import llmenv
from llmenv.agents import online_dpo
from llmenv.agents.online_dpo import OnlineDPOConfig, train
from llmenv.agents.rollout import RolloutBatch
from llmenv.errors import ConfigError
from llmenv.tasks.arith import generate_arith
from llmenv.testing import assert_same_run, digit_share, metric_rows

REQUIRED = {"step", "reward_mean", "loss", "pairs", "ties", "grad_norm", "chosen_reward", "rejected_reward",
            "chosen_logratio", "rejected_logratio", "preference_accuracy", "reward_margin", "score_gap",
            "verifier_error_fraction", "step_time_s"}  # fmt: skip


def config(tiny_dir, out, **overrides) -> OnlineDPOConfig:
    base = dict(task="llmenv/digits-test-v0", model=tiny_dir, task_params={"digits": 1}, steps=2, prompts_per_step=2,
                group_size=3, max_new_tokens=6, lr=1e-2, beta=0.5, seed=0, out=str(out), micro_batch=8)  # fmt: skip
    base.update(overrides)
    return OnlineDPOConfig(**base)


def fake_batch(rewards, groups, errored=()):
    n = len(rewards)
    zeros = torch.zeros(n, 4)
    return RolloutBatch(input_ids=torch.ones(n, 4, dtype=torch.long), attention_mask=torch.ones(n, 4, dtype=torch.long),
                        loss_mask=zeros, old_logprobs=zeros, token_rewards=zeros, process_rewards=zeros,
                        step_mask=zeros.bool(), rewards=torch.tensor(rewards), group_ids=torch.tensor(groups),
                        cut=torch.zeros(n, dtype=torch.bool),
                        errored=torch.tensor([i in errored for i in range(n)]), parts={}, stats={})  # fmt: skip


def test_pairs_are_drawn_within_groups_and_skip_ties_and_errors(tiny_dir, tmp_path):
    state = online_dpo.OnlineDPOState.__new__(online_dpo.OnlineDPOState)  # choose_pairs reads only the config
    state.config = config(tiny_dir, tmp_path)
    batch = fake_batch([0.2, 0.9, 0.5, 0.3, 0.3, 0.3, 1.0, 0.0, 0.5], [0, 0, 0, 1, 1, 1, 2, 2, 2], errored={6})
    assert online_dpo.choose_pairs(state, batch) == ([(1, 0), (8, 7)], 1)  # group 1 ties; row 6's verdict failed
    state.config = config(tiny_dir, tmp_path, pair_rule="all", pair_delta=0.25)
    assert online_dpo.choose_pairs(state, batch) == ([(1, 0), (2, 0), (1, 2), (8, 7)], 3)  # gaps 0.7, 0.3, 0.4


def test_two_steps_train_on_the_groups_pairs_and_log_every_field(tiny_dir, tmp_path):
    state = train(config(tiny_dir, tmp_path), progress=False)
    logged = metric_rows(tmp_path)
    assert [r["step"] for r in logged] == [1, 2]
    assert all(REQUIRED <= set(r) and all(math.isfinite(r[k]) for k in REQUIRED) for r in logged)
    assert all(r["pairs"] + r["ties"] == 2 for r in logged)  # best-worst: one pair (or a tie) per group
    first = next(r for r in logged if r["pairs"])  # steps before it made no update
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference until the first update
    assert first["score_gap"] > 0  # chosen episodes scored higher by the env
    before = load_file(f"{tiny_dir}/model.safetensors")
    after = load_file(tmp_path / "final" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    assert state.reference is not None and (tmp_path / "reward.png").exists()


def test_the_loss_raises_the_chosen_episodes_log_ratio(tiny_dir, tmp_path):
    state = train(config(tiny_dir, tmp_path, steps=1, lr=1e-3), progress=False)
    batch = online_dpo.trainer.play(state)  # the next step's episodes, scored before and after one more update
    pairs, _, _ = online_dpo.step_pairs(state, batch)
    assert pairs
    sides = [c for c, _ in pairs] + [r for _, r in pairs]
    with torch.no_grad():
        before, _, _ = online_dpo.sequence_logps(state, sides)
    online_dpo.update(state, batch)
    with torch.no_grad():
        after, _, _ = online_dpo.sequence_logps(state, sides)
    n = len(pairs)
    assert float((after[:n] - before[:n]).mean() - (after[n:] - before[n:]).mean()) > 0


def test_lora_uses_the_disabled_adapter_as_reference(tiny_dir, tmp_path):
    state = train(config(tiny_dir, tmp_path, lora_rank=4), progress=False)
    assert state.reference is None
    first = next(r for r in metric_rows(tmp_path) if r["pairs"])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_reference_free_losses_load_no_reference(tiny_dir, tmp_path):
    state = train(config(tiny_dir, tmp_path, loss="simpo", steps=1), progress=False)
    assert state.reference is None and math.isfinite(metric_rows(tmp_path)[0]["loss"])


def test_verifier_errors_are_left_out_of_the_pairs_and_counted(tiny_dir, tmp_path):
    def flaky(completion: str, task) -> float:
        if len(completion) % 2:
            raise RuntimeError("grader backend down")
        return digit_share(completion, task)

    llmenv.register_task("dpo-flaky-test-v0", source=generate_arith, verifier=flaky, replace=True)
    train(config(tiny_dir, tmp_path, task="llmenv/dpo-flaky-test-v0", group_size=4, steps=1), progress=False)
    row = metric_rows(tmp_path)[0]
    assert 0 < row["verifier_error_fraction"] < 1
    assert row["pairs"] <= 2


def test_spin_prefers_the_reference_answer_and_moves_its_reference_each_iteration(tiny_dir, tmp_path):
    cfg = config(tiny_dir, tmp_path, task="llmenv/arith-v0", spin=True, spin_iterations=2, steps=4, group_size=1,
                 spin_template="The answer is {answer}.", lr=1e-3)  # fmt: skip
    state = online_dpo.build(cfg)
    batch = online_dpo.trainer.play(state)
    pairs, _, ties = online_dpo.step_pairs(state, batch)
    assert len(pairs) == 2 and ties == 0
    chosen_ids, chosen_mask = pairs[0][0]
    reply = [t for t, m in zip(chosen_ids, chosen_mask) if m]
    assert state.tokenizer.decode(reply) == f"The answer is {batch.tasks[0].answer}.<|im_end|>"
    state = train(cfg, progress=False)
    assert [r["pairs"] for r in metric_rows(tmp_path)] == [2, 2, 2, 2]
    reference = state.reference.state_dict()  # the iterate after step 2, not the starting model
    start = load_file(f"{tiny_dir}/model.safetensors")
    assert any(not torch.equal(reference[k], start[k]) for k in start if k in reference)
    with pytest.raises(ConfigError, match="must contain \\{answer\\}"):
        config(tiny_dir, tmp_path, spin=True, spin_template="no answer")


def test_lora_spin_moves_its_reference_to_base_plus_adapter(tiny_dir, tmp_path):
    cfg = config(tiny_dir, tmp_path, task="llmenv/arith-v0", spin=True, spin_iterations=2, steps=4, group_size=1,
                 spin_template="The answer is {answer}.", lr=1e-2, lora_rank=4)  # fmt: skip
    state = train(cfg, progress=False)
    assert all(math.isfinite(r["loss"]) for r in metric_rows(tmp_path))
    reference = state.reference.state_dict()  # the iterate after step 2: base + that step's adapter
    start = load_file(f"{tiny_dir}/model.safetensors")
    assert any(not torch.equal(reference[k], start[k]) for k in start if k in reference)
    online_dpo.copy_policy_into(state.reference, state.model)  # now the final policy, merged
    ids = torch.tensor([[5, 9, 13, 21, 8]])
    with torch.no_grad():
        merged = state.reference(ids).logits
        policy = state.model.eval()(ids).logits
    torch.testing.assert_close(merged, policy, rtol=1e-4, atol=1e-4)


def test_resume_equals_an_uninterrupted_run(tiny_dir, tmp_path):
    train(config(tiny_dir, tmp_path / "straight", steps=3), progress=False)
    train(config(tiny_dir, tmp_path / "resumed", steps=2, save_every=1), progress=False)
    train(config(tiny_dir, tmp_path / "resumed", steps=3, resume=True), progress=False)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_spin_resume_restores_the_previous_iterate(tiny_dir, tmp_path):
    def spin(out, steps, **kw):
        return config(tiny_dir, out, task="llmenv/arith-v0", spin=True, spin_iterations=2, steps=steps,
                      group_size=1, spin_template="The answer is {answer}.", lr=1e-2, **kw)  # fmt: skip

    train(spin(tmp_path / "straight", 4), progress=False)
    train(spin(tmp_path / "resumed", 3, save_every=3), progress=False)  # saved after the iterate moved at step 2
    train(spin(tmp_path / "resumed", 4, resume=True), progress=False)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_cli_refuses_a_group_of_one_in_one_line_and_trains(tiny_dir, tmp_path):
    base = [sys.executable, "-m", "llmenv.cli", "train", "online-dpo", "--model", tiny_dir, "--task",
            "llmenv/arith-v0", "--out", str(tmp_path), "--max-new-tokens", "4",
            "--prompts-per-step", "2"]  # fmt: skip
    proc = subprocess.run([*base, "--group-size", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and "group_size" in proc.stdout.replace("-", "_")
    proc = subprocess.run([*base, "--steps", "1", "--lr", "1e-3"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"plot: {tmp_path}/reward.png" in proc.stdout and [r["step"] for r in metric_rows(tmp_path)] == [1]
