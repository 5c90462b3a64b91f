"""PPO: a tiny model and its critic really train, single- and multi-turn, every option runs, resume is exact."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import llmenv
from llmenv.agents import losses, ppo
from llmenv.agents.config import add_config_flags, config_from_args
from llmenv.agents.ppo import PPOConfig, ValueHead, ValueModel, train
from llmenv.agents.rollout import RolloutBatch
from llmenv.agents.scoring import completion_logprobs
from llmenv.errors import CheckpointError, ConfigError
from llmenv.models import load_model
from llmenv.tasks.arith import generate_arith
from llmenv.testing import digit_share, metric_rows
from llmenv.types import Trajectory, Turn

REQUIRED = {
    "step",
    "reward_mean",
    "loss",
    "policy_loss",
    "value_loss",
    "explained_variance",
    "kl",
    "kl_coef",
    "clip_fraction",
    "value_clip_fraction",
    "approx_kl",
    "returns_mean",
    "values_mean",
    "kept",
    "grad_norm",
    "critic_grad_norm",
    "turns_mean",
    "tokens",
    "step_time_s",
}


def config(tiny_dir, out, **overrides):
    base = dict(
        task="llmenv/digits-test-v0",
        model=tiny_dir,
        task_params={"digits": 1},
        steps=2,
        prompts_per_step=6,  # enough episodes that some earn a reward (the value head starts at 0)
        max_new_tokens=8,
        lr=1e-2,
        critic_lr=1e-2,
        epochs=2,
        minibatches=2,
        seed=0,
        out=str(out),
        micro_batch=2,
    )
    base.update(overrides)
    return PPOConfig(**base)


def run(tiny_dir, out, **overrides):
    return train(config(tiny_dir, out, **overrides), progress=False)


def finite(row, keys=REQUIRED):
    return all(isinstance(row[k], (int, float)) and math.isfinite(row[k]) for k in keys - {"explained_variance"})


@pytest.mark.parametrize("critic", ["head", "separate"])
def test_two_steps_change_policy_and_critic_and_log_finite_metrics(tiny_dir, tmp_path, critic):
    policy_before = {k: v.clone() for k, v in load_model(tiny_dir).state_dict().items()}
    state = train(config(tiny_dir, tmp_path, critic=critic), progress=False)
    critic_before = ppo.build(config(tiny_dir, tmp_path / "fresh", critic=critic)).critic.state_dict()
    moved = [k for k, v in state.model.state_dict().items() if not torch.equal(v, policy_before[k])]
    assert moved, "training did not change any policy parameter"
    critic_moved = [k for k, v in state.critic.state_dict().items() if not torch.equal(v, critic_before[k])]
    assert critic_moved, "training did not change any critic parameter"
    assert isinstance(state.critic, ValueHead if critic == "head" else ValueModel)
    logged = metric_rows(tmp_path)
    assert [r["step"] for r in logged] == [1, 2]
    for row in logged:
        assert REQUIRED <= set(row) and finite(row), row
        assert row["optimizer_steps"] == 4  # 2 epochs x 2 minibatches
    assert (tmp_path / "reward.png").exists() and (tmp_path / "final" / "model.safetensors").exists()


def test_a_fresh_value_head_predicts_zero_and_still_learns():
    head = ValueHead(8)
    hidden = torch.randn(5, 8)
    assert torch.equal(head(hidden), torch.zeros(5, 1))  # the first advantages are the whitened returns
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    ((head(hidden) - 1.0) ** 2).mean().backward()
    optimizer.step()
    assert head.linear.weight.abs().sum() > 0  # a zero-initialised linear head gets gradients


def test_a_separate_critic_has_its_own_optimizer_and_learning_rate(tiny_dir, tmp_path):
    state = ppo.build(config(tiny_dir, tmp_path, critic="separate", critic_lr=3e-4, lr=1e-5))
    assert state.critic_optimizer is not state.optimizer
    assert [g["lr"] for g in state.critic_optimizer.param_groups] == [3e-4]
    assert [g["lr"] for g in state.optimizer.param_groups] == [1e-5]
    policy_ids = {id(p) for g in state.optimizer.param_groups for p in g["params"]}
    assert not policy_ids & {id(p) for p in state.critic.parameters()}


def test_critic_warmup_trains_only_the_critic(tiny_dir, tmp_path):
    policy_before = {k: v.clone() for k, v in load_model(tiny_dir).state_dict().items()}
    # a value head on the shared trunk; enough episodes that some earn a reward for the critic to fit
    state = run(tiny_dir, tmp_path, steps=2, critic_warmup_steps=2)
    for key, value in state.model.state_dict().items():
        assert torch.equal(value, policy_before[key]), f"{key} moved during the critic warm-up"
    logged = metric_rows(tmp_path)
    assert all(r["critic_warmup"] == 1.0 and r["grad_norm"] == 0.0 for r in logged)
    assert any(r["returns_mean"] != 0 for r in logged), "the test needs some reward to fit"
    assert all(r["critic_grad_norm"] > 0 for r in logged if r["returns_mean"] != 0)
    assert state.critic.linear.weight.abs().sum() > 0  # the zero-initialised head learned


def test_the_kl_penalty_sits_in_the_reward_or_in_the_loss(tiny_dir, tmp_path, monkeypatch):
    seen = {}
    prepare = ppo.prepare

    def watched(state, batch):
        rollout = prepare(state, batch)
        seen.setdefault(state.config.kl_in, []).append((rollout, batch.token_rewards.clone()))
        return rollout

    monkeypatch.setattr(ppo, "prepare", watched)
    run(tiny_dir, tmp_path / "reward", kl_in="reward", kl_coef=0.5, whiten_advantages=False, lam=1.0)
    run(tiny_dir, tmp_path / "loss", kl_in="loss", kl_coef=0.5, whiten_advantages=False, lam=1.0)
    rollout, outcome = seen["reward"][1]  # step 2: the policy has left the reference
    mask = rollout.rows.loss_mask
    k1 = (rollout.old_logp - rollout.ref_logp) * mask
    assert k1.abs().sum() > 0
    # with gamma = lambda = 1 the return at the first policy token is the sum of every token reward
    first = mask.argmax(1)
    expected = (outcome - 0.5 * k1).sum(1)
    torch.testing.assert_close(rollout.returns[torch.arange(len(first)), first], expected, rtol=1e-5, atol=1e-5)
    rollout, outcome = seen["loss"][1]
    first = rollout.rows.loss_mask.argmax(1)
    torch.testing.assert_close(rollout.returns[torch.arange(len(first)), first], outcome.sum(1))
    assert metric_rows(tmp_path / "loss")[1]["kl"] != 0.0


def test_plain_sampling_reuses_the_samplers_logprobs_which_equal_a_policy_forward(tiny_dir, tmp_path, monkeypatch):
    seen = []
    prepare = ppo.prepare

    def watched(state, batch):
        rollout = prepare(state, batch)
        with torch.no_grad():
            forward, _ = completion_logprobs(state.model, batch.input_ids, batch.attention_mask, batch.loss_mask)
        seen.append((ppo.sampled_logprobs_exact(state), rollout.old_logp, forward, batch.loss_mask))
        return rollout

    monkeypatch.setattr(ppo, "prepare", watched)
    run(tiny_dir, tmp_path, critic="separate", micro_batch=8)
    for reused, old_logp, forward, mask in seen:
        assert reused
        assert mask.sum() > 0 and (old_logp[mask.bool()] != 0).all()
        torch.testing.assert_close(old_logp, forward, rtol=1e-4, atol=1e-4)
    state = ppo.build(config(tiny_dir, tmp_path / "plain", critic="separate"))
    assert ppo.sampled_logprobs_exact(state)
    for overrides in [{"critic": "head"}, {"top_p": 0.9}, {"temperature": 0.7}, {"bf16": True}]:
        other = ppo.build(config(tiny_dir, tmp_path / "other", **{"critic": "separate", **overrides}))
        assert not ppo.sampled_logprobs_exact(other), overrides


def test_adaptive_kl_moves_the_coefficient_by_zieglers_rule(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path, steps=2, kl_target=1e-4, kl_horizon=10)
    logged = metric_rows(tmp_path)
    # step 1 samples from the reference itself: KL 0 < target, error clipped to -0.2, 6 sequences, horizon 10
    assert logged[0]["kl_coef"] == 0.05 and logged[0]["kl_per_sequence"] == pytest.approx(0.0, abs=1e-6)
    assert logged[1]["kl_coef"] == pytest.approx(0.05 * (1 - 0.2 * 6 / 10), rel=1e-9)


@pytest.mark.parametrize(
    "overrides",
    [
        {"kl_in": "loss", "kl_estimator": "k3", "entropy_coef": 0.01},
        {"kl_coef": 0.0},
        {"clip_high": 0.28, "whiten_advantages": False, "gamma": 0.9},
        {"target_kl": 1e-9, "epochs": 3},
        {"bf16": True, "gradient_checkpointing": True, "critic": "separate"},
    ],
    ids=lambda o: ",".join(o),
)
def test_every_option_trains_with_finite_metrics(tiny_dir, tmp_path, overrides):
    state = run(tiny_dir, tmp_path, **overrides)
    for row in metric_rows(tmp_path):
        assert finite(row), row
    if overrides.get("kl_coef") == 0.0:
        assert state.reference is None  # no KL asked for: no reference model loaded
    if "target_kl" in overrides:
        # the first minibatch sees ratio 1 (approx KL 0) and steps; a later one passes 1e-9 and stops the update
        assert all(r["early_stopped"] == 1.0 and 1 <= r["optimizer_steps"] < 6 for r in metric_rows(tmp_path))


def test_lora_policy_with_a_value_head(tiny_dir, tmp_path):
    pytest.importorskip("peft")
    state = run(tiny_dir, tmp_path, steps=1, lora_rank=4)
    trainable = [n for n, p in state.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    assert (tmp_path / "final" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("critic", ["head", "separate"])
def test_resume_equals_an_uninterrupted_run_critic_included(tiny_dir, tmp_path, critic):
    straight = run(tiny_dir, tmp_path / "straight", steps=3, critic=critic, kl_target=0.5)
    run(tiny_dir, tmp_path / "resumed", steps=2, save_every=1, critic=critic, kl_target=0.5)
    resumed = run(tiny_dir, tmp_path / "resumed", steps=3, resume=True, critic=critic, kl_target=0.5)
    final_straight = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    final_resumed = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    for key, value in final_straight.items():
        torch.testing.assert_close(final_resumed[key], value, rtol=0, atol=1e-6)
    for key, value in straight.critic.state_dict().items():
        torch.testing.assert_close(resumed.critic.state_dict()[key], value, rtol=0, atol=1e-6)
    moments = [s["exp_avg"] for s in straight.critic_optimizer.state.values()]
    again = [s["exp_avg"] for s in resumed.critic_optimizer.state.values()]
    assert len(moments) == len(again) > 0
    for a, b in zip(moments, again):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert resumed.kl_coef.value == pytest.approx(straight.kl_coef.value, abs=1e-12)
    value_losses = [r["value_loss"] for r in metric_rows(tmp_path / "straight")]
    assert [r["value_loss"] for r in metric_rows(tmp_path / "resumed")] == value_losses


def test_resume_with_the_other_critic_is_a_checkpoint_error(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path, steps=1, save_every=1, critic="head")
    with pytest.raises(CheckpointError, match="'critic' state .* does not match"):
        run(tiny_dir, tmp_path, steps=2, resume=True, critic="separate")


def test_episodes_whose_verifier_failed_are_left_out_and_counted(tiny_dir, tmp_path, monkeypatch):
    def flaky(completion: str, task) -> float:
        if len(completion) % 2:
            raise RuntimeError("grader backend down")
        return digit_share(completion, task)

    llmenv.register_task("ppo-flaky-test-v0", source=generate_arith, verifier=flaky, replace=True)
    seen = {}
    prepare = ppo.prepare

    def watched(state, batch):
        seen["rows"] = len(batch.rewards)
        return prepare(state, batch)

    update = ppo.update

    def watched_update(state, batch):
        seen["errored"] = batch.errored.clone()
        return update(state, batch)

    monkeypatch.setattr(ppo, "prepare", watched)
    monkeypatch.setattr(ppo, "update", watched_update)
    run(tiny_dir, tmp_path, task="llmenv/ppo-flaky-test-v0", steps=1, prompts_per_step=6, max_new_tokens=5)
    errored = seen["errored"]
    assert 0 < int(errored.sum()) < len(errored), "the test needs some rows to fail and some to pass"
    assert seen["rows"] == int((~errored).sum())  # only scored rows reach the loss
    row = metric_rows(tmp_path)[0]
    assert row["verifier_error_fraction"] == pytest.approx(float(errored.float().mean()))
    assert row["kept"] == pytest.approx(1 - float(errored.float().mean()))


def test_multi_turn_rewards_stay_on_policy_tokens_and_gae_skips_env_tokens(tiny_dir, tmp_path, monkeypatch):
    seen = []
    prepare = ppo.prepare

    def watched(state, batch):
        rollout = prepare(state, batch)
        seen.append(rollout)
        return rollout

    monkeypatch.setattr(ppo, "prepare", watched)
    task = {"task": "llmenv/math-retry-v0", "task_params": {}, "max_new_tokens": 4}
    run(tiny_dir, tmp_path, **task, steps=1, kl_coef=0.0, whiten_advantages=False, gamma=0.9)
    rollout = seen[0]
    mask = rollout.rows.loss_mask
    assert metric_rows(tmp_path)[0]["turns_mean"] > 1, "retry episodes with several policy turns were expected"
    assert (rollout.advantages[mask == 0] == 0).all() and (rollout.returns[mask == 0] == 0).all()
    assert (rollout.rows.token_rewards[mask == 0] == 0).all()  # rewards never sit on env or prompt tokens
    for row in range(len(mask)):  # each row equals plain GAE on its policy tokens alone
        policy = mask[row].nonzero()[:, 0]
        assert (policy.diff() > 1).any(), "env tokens between the turns were expected"
        rewards, values = rollout.rows.token_rewards[row, policy], rollout.old_values[row, policy]
        expected, following = torch.zeros(len(policy)), 0.0
        for t in reversed(range(len(policy))):
            next_value = values[t + 1] if t + 1 < len(policy) else 0.0
            following = rewards[t] + 0.9 * next_value - values[t] + 0.9 * 0.95 * following
            expected[t] = following
        torch.testing.assert_close(rollout.advantages[row, policy], expected, rtol=1e-5, atol=1e-6)


def test_turn_rewards_go_to_each_turns_last_policy_token_and_dense_rewards_add_on_top():
    trajectory = Trajectory(
        tokens=np.arange(9),
        loss_mask=np.array([0, 0, 1, 1, 0, 0, 1, 1, 1], dtype=np.int8),
        turns=(
            Turn("prompt", 0, 2),
            Turn("policy", 2, 4, 0.25),
            Turn("env", 4, 6),
            Turn("policy", 6, 9, 1.0),
        ),
        rewards=(0.25, 1.0),
        token_rewards=np.array([0, 0, 0, 0.5, 0, 0, 0, 0.125, 0], dtype=np.float32),
    )
    np.testing.assert_allclose(trajectory.reward_per_token(), [0, 0, 0, 0.75, 0, 0, 0, 0.125, 1.0])
    empty_turn = Trajectory(
        tokens=np.arange(5),
        loss_mask=np.array([0, 1, 1, 0, 0], dtype=np.int8),
        turns=(Turn("prompt", 0, 1), Turn("policy", 1, 3, 0.5), Turn("env", 3, 5), Turn("policy", 5, 5, 2.0)),
        rewards=(0.5, 2.0),
    )
    np.testing.assert_allclose(empty_turn.reward_per_token(), [0, 0, 2.5, 0, 0])  # no reward is lost


def test_rollout_batch_select_trims_to_the_longest_selected_row():
    batch = RolloutBatch(
        input_ids=torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]),
        attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]),
        loss_mask=torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.float32),
        old_logprobs=torch.zeros(3, 4),
        token_rewards=torch.tensor([[0, 0, 1.0, 0], [0, 2.0, 0, 0], [0, 0, 0, 3.0]]),
        process_rewards=torch.tensor([[0, 0.5, 0, 0], [0, 0, 0, 0], [0, 0, 0.25, 0]]),
        step_mask=torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.bool),
        rewards=torch.tensor([1.0, 2.0, 3.0]),
        group_ids=torch.tensor([0, 1, 2]),
        cut=torch.zeros(3, dtype=torch.bool),
        errored=torch.zeros(3, dtype=torch.bool),
        parts={},
        stats={},
    )
    picked = batch.select(torch.tensor([1, 0]))
    assert picked.input_ids.tolist() == [[4, 5, 0], [1, 2, 3]]
    assert picked.token_rewards.tolist() == [[0, 2.0, 0], [0, 0, 1.0]] and picked.rewards.tolist() == [2.0, 1.0]
    assert picked.process_rewards.tolist() == [[0, 0, 0], [0, 0.5, 0]]
    assert picked.step_mask.tolist() == [[False] * 3, [False, True, False]]


def test_gae_reads_outcome_and_process_rewards_with_their_weights(tiny_dir, tmp_path, monkeypatch):
    from llmenv.agents import ppo

    seen = []
    gae = losses.gae_advantages

    def watched(rewards, values, mask, **kwargs):
        seen.append(rewards.clone())
        return gae(rewards, values, mask, **kwargs)

    monkeypatch.setattr(losses, "gae_advantages", watched)
    captured = []
    to_batch = ppo.trainer.play

    def play(state):
        batch = to_batch(state)
        captured.append(batch)
        return batch

    monkeypatch.setattr(ppo.trainer, "play", play)
    run(tiny_dir, tmp_path, task="llmenv/steps-test-v0", steps=1, outcome_weight=0.5, process_weight=2.0)
    batch = captured[0]
    assert batch.step_mask.any() and (batch.process_rewards[~batch.step_mask] == 0).all()
    expected = 0.5 * batch.token_rewards + 2.0 * batch.process_rewards
    torch.testing.assert_close(seen[0], expected[:, : seen[0].shape[1]])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kl_target": 0.0}, "kl_target=0.0 \\(expected > 0"),
        ({"kl_target": -6.0}, "kl_target=-6.0"),
        ({"critic": "shared"}, "critic='shared' \\(expected one of 'head', 'separate'"),
        ({"kl_in": "advantage"}, "kl_in='advantage'"),
        ({"epochs": 0}, "epochs=0"),
        ({"lam": 1.5}, "lam=1.5"),
        ({"target_kl": 0.0}, "target_kl=0.0"),
    ],
)
def test_bad_configs_are_rejected(tiny_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(tiny_dir, tmp_path, **overrides)


def test_every_field_is_a_flag_with_the_shared_names(tiny_dir, tmp_path):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, PPOConfig)
    args = parser.parse_args(
        ["--model", tiny_dir, "--out", str(tmp_path), "--critic", "separate", "--kl-target", "6", "--lora-rank", "4"]
    )
    cfg = config_from_args(PPOConfig, args)
    assert (cfg.critic, cfg.kl_target, cfg.lora_rank, cfg.group_size) == ("separate", 6.0, 4, 1)
    shared = {"--task", "--model", "--steps", "--prompts-per-step", "--max-new-tokens", "--lr", "--seed", "--out"}
    assert shared | {"--resume", "--lora-rank", "--bf16", "--critic-warmup-steps", "--target-kl"} <= set(
        parser._option_string_actions
    )


@pytest.mark.slow
def test_cli_trains_smollm2_with_ppo_for_two_steps(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmenv.cli",
            "train",
            "ppo",
            "--task",
            "llmenv/arith-v0",
            "--model",
            "smollm2-135m",
            "--steps",
            "2",
            "--prompts-per-step",
            "2",
            "--max-new-tokens",
            "16",
            "--epochs",
            "2",
            "--param",
            "digits=1",
            "--out",
            str(tmp_path),
            "--bf16",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = metric_rows(tmp_path)
    assert [r["step"] for r in logged] == [1, 2] and all(r["tokens"] > 0 and finite(r) for r in logged)
    assert (tmp_path / "final" / "model.safetensors").exists() and "final export" in proc.stdout
