"""GRPO: a tiny model really trains, every config variant runs, and resume equals an uninterrupted run."""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import llmenv
from llmenv.agents import losses
from llmenv.agents.config import add_config_flags, config_from_args
from llmenv.agents.grpo import GRPOConfig, train
from llmenv.agents.rollout import RolloutBatch
from llmenv.errors import CheckpointError, ConfigError
from llmenv.tasks.arith import generate_arith
from llmenv.testing import digit_share

REQUIRED = {"step", "reward_mean", "reward_std", "loss", "kl", "entropy", "grad_norm", "tokens", "step_time_s"}


def config(tiny_dir, out, **overrides):
    base = dict(
        task="llmenv/digits-test-v0",
        model=tiny_dir,
        task_params={"digits": 1},
        steps=2,
        prompts_per_step=2,
        group_size=3,
        max_new_tokens=6,
        lr=1e-2,
        seed=0,
        out=str(out),
        micro_batch=4,
        progress=False,
    )
    base.update(overrides)
    progress = base.pop("progress")
    return GRPOConfig(**base), progress


def run(tiny_dir, out, **overrides):
    cfg, progress = config(tiny_dir, out, **overrides)
    return train(cfg, progress=progress)


def test_two_steps_change_the_weights_and_write_metrics_plot_and_checkpoint(tiny_dir, tmp_path):
    initial = {k: v.clone() for k, v in tiny_llama_from(tiny_dir).state_dict().items()}
    state = run(tiny_dir, tmp_path)
    changed = [k for k, v in state.model.state_dict().items() if not torch.equal(v, initial[k])]
    assert changed, "training did not change any parameter"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert REQUIRED <= set(row) and all(row[k] is not None for k in REQUIRED)
        assert {"parts/correct", "parts/format"} <= set(row)
    assert (tmp_path / "reward.png").exists() and (tmp_path / "final" / "model.safetensors").exists()
    assert not (tmp_path / "final" / "trainer_state.pt").exists()  # the export is weights only
    assert not (tmp_path / "checkpoint").exists()  # save_every=10 > 2 steps: no resume checkpoint was due


def test_loading_pauses_and_training_freezes_the_collector_then_both_are_undone(tiny_dir, tmp_path, monkeypatch):
    from llmenv.agents import grpo

    seen = {}
    build, train_step = grpo.build, grpo.train_step

    def watched_build(cfg):
        seen["collecting while loading"] = gc.isenabled()
        return build(cfg)

    def watched_step(state):
        seen["frozen while training"] = gc.get_freeze_count()
        return train_step(state)

    monkeypatch.setattr(grpo, "build", watched_build)
    monkeypatch.setattr(grpo, "train_step", watched_step)
    run(tiny_dir, tmp_path / "run", steps=1)
    assert seen["collecting while loading"] is False
    assert seen["frozen while training"] > 1000  # the model, tokenizer and modules loaded before the loop
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_the_final_export_can_be_left_out(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path, steps=1, save_every=5, save_final=False)
    assert (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoint").exists()
    assert not (tmp_path / "final").exists()


def tiny_llama_from(path):
    from llmenv.models import load_model

    return load_model(path)


@pytest.mark.parametrize(
    "overrides",
    [
        {"advantage": "none", "loss_aggregation": "constant"},
        {"advantage": "batch", "loss_aggregation": "sequence_mean"},
        {"importance": "sequence", "clip_low": 3e-4, "clip_high": 4e-4},
        {"beta": 0.1, "kl_estimator": "k1"},
        {"epochs": 2, "entropy_coef": 0.01},
        {"dynamic_sampling": True, "drop_cut": True},
        {"bf16": True, "gradient_checkpointing": True},
        {"advantage": "rloo"},
        {"advantage": "reinforce_pp_baseline", "importance": "sequence", "clip_low": 3e-4, "clip_high": 4e-4},
    ],
    ids=lambda o: ",".join(o),
)
def test_every_variant_trains_with_finite_loss(tiny_dir, tmp_path, overrides):
    run(tiny_dir, tmp_path, steps=2, **overrides)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert all(isinstance(row[k], (int, float)) and math.isfinite(row[k]) for k in REQUIRED), row
    if overrides.get("beta"):
        assert rows[0]["kl"] == 0.0 and rows[1]["kl"] != 0.0  # the policy leaves the reference after step 1


def test_reinforce_pp_gives_the_loss_per_token_advantages_zero_off_the_policy_tokens(tiny_dir, tmp_path, monkeypatch):
    from llmenv.agents import grpo

    seen = []
    policy_loss = grpo.policy_loss

    def watched(state, rows, advantages, old_logp):
        seen.append((advantages.clone(), rows.loss_mask.clone()))
        return policy_loss(state, rows, advantages, old_logp)

    monkeypatch.setattr(grpo, "policy_loss", watched)
    run(tiny_dir, tmp_path, steps=1, advantage="reinforce_pp")
    assert seen
    for advantages, mask in seen:
        assert advantages.shape == mask.shape and torch.isfinite(advantages).all()
        assert advantages[mask == 0].abs().sum() == 0


def test_process_rewards_give_per_token_advantages_when_outcomes_give_none(tiny_dir, tmp_path, monkeypatch):
    from llmenv.agents import grpo

    seen = []
    policy_loss = grpo.policy_loss

    def watched(state, rows, advantages, old_logp):
        seen.append((rows, advantages.clone()))
        return policy_loss(state, rows, advantages, old_logp)

    monkeypatch.setattr(grpo, "policy_loss", watched)
    before = tiny_llama_from(tiny_dir).state_dict()
    state = run(tiny_dir, tmp_path, task="llmenv/steps-test-v0", task_params={}, steps=1, micro_batch=64)
    ((rows, advantages),) = seen  # every outcome is 0: without process supervision nothing would train
    expected = losses.process_advantages(rows.process_rewards, rows.step_mask, rows.group_ids, rows.loss_mask)
    torch.testing.assert_close(advantages, expected)
    assert advantages.abs().sum() > 0 and rows.step_mask.any()
    assert any(not torch.equal(before[k], v) for k, v in state.model.state_dict().items())
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row["steps_mean"] > 0 and 0 <= row["step_reward_mean"] <= 1
    seen.clear()
    run(tiny_dir, tmp_path / "outcome-only", task="llmenv/steps-test-v0", task_params={}, steps=1, process_weight=0.0)
    assert seen and all(float(adv.abs().sum()) == 0 for _, adv in seen)  # equal outcomes, process off: no signal


@pytest.mark.parametrize("name", sorted(losses.ADVANTAGES))
def test_every_advantage_estimator_is_a_flag_value(tiny_dir, tmp_path, name):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, GRPOConfig)
    args = parser.parse_args(["--advantage", name, "--model", tiny_dir, "--out", str(tmp_path)])
    assert config_from_args(GRPOConfig, args).advantage == name


def test_lora_trains_only_the_adapter(tiny_dir, tmp_path):
    pytest.importorskip("peft")
    state = run(tiny_dir, tmp_path, steps=1, lora_rank=4)
    trainable = [n for n, p in state.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    assert (tmp_path / "final" / "adapter_model.safetensors").exists()
    loaded = llmenv.models.load_model(tmp_path / "final")  # `--model out/final` elsewhere: the adapter merged
    ids = torch.tensor([[5, 9, 13, 21]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, state.model.eval()(ids).logits, rtol=0, atol=1e-5)
        moved = (loaded(ids).logits - llmenv.models.load_model(tiny_dir)(ids).logits).abs().max()
    assert moved > 1e-4  # the adapter's step is in the loaded weights


def test_resume_equals_an_uninterrupted_run(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path / "straight", steps=3)
    run(tiny_dir, tmp_path / "resumed", steps=2, save_every=1)
    run(tiny_dir, tmp_path / "resumed", steps=3, resume=True)
    straight = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)

    def rows(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    assert [r["step"] for r in rows("resumed")] == [1, 2, 3]
    assert [r["reward_mean"] for r in rows("resumed")] == [r["reward_mean"] for r in rows("straight")]


def test_resume_without_a_checkpoint_fails_before_the_model_loads(tiny_dir, tmp_path, monkeypatch):
    from llmenv.agents import trainer

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing checkpoint was noticed")

    monkeypatch.setattr(trainer, "load_model", no_loading)
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        run(tiny_dir, tmp_path, resume=True)


def test_resume_from_an_earlier_checkpoint_leaves_one_metrics_row_per_step(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path, steps=3, save_every=2)  # checkpoint at step 2, rows for steps 1..3
    run(tiny_dir, tmp_path, steps=4, resume=True)  # re-runs step 3
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint_and_resume_continues(tiny_dir, tmp_path, monkeypatch):
    import os
    import signal

    from llmenv.agents import grpo

    step = grpo.train_step

    def interrupted_step(state):
        metrics = step(state)
        if state.step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C, in the middle of the run
        return metrics

    monkeypatch.setattr(grpo, "train_step", interrupted_step)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    state = run(tiny_dir, tmp_path, steps=3, save_every=10)
    assert state.interrupted and state.step == 1
    assert (tmp_path / "checkpoint" / "trainer_state.pt").exists() and not (tmp_path / "final").exists()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    monkeypatch.setattr(grpo, "train_step", step)
    resumed = run(tiny_dir, tmp_path, steps=3, resume=True)
    assert not resumed.interrupted and resumed.step == 3
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and (tmp_path / "final" / "model.safetensors").exists()


def flaky(completion: str, task) -> float:
    """A verifier that crashes on completions of odd length and rewards digits otherwise."""
    if len(completion) % 2:
        raise RuntimeError("grader backend down")
    return digit_share(completion, task)


llmenv.register_task("flaky-test-v0", source=generate_arith, verifier=flaky, replace=True)


def test_episodes_whose_verifier_failed_are_left_out_of_the_loss_and_counted(tiny_dir, tmp_path, monkeypatch):
    from llmenv.agents import grpo

    seen = {}
    update = grpo.update

    def watched_update(state, batch):
        seen["errored"] = batch.errored.clone()
        seen["rewards"] = batch.rewards.clone()
        return update(state, batch)

    selected = []
    select = RolloutBatch.select

    def watched_select(batch, rows):
        selected.append(rows.clone())
        return select(batch, rows)

    monkeypatch.setattr(grpo, "update", watched_update)
    monkeypatch.setattr(RolloutBatch, "select", watched_select)
    state = run(tiny_dir, tmp_path, task="llmenv/flaky-test-v0", steps=1, prompts_per_step=4, max_new_tokens=5)
    errored = seen["errored"]
    assert 0 < int(errored.sum()) < len(errored), "the test needs some rows to fail and some to pass"
    trained = torch.cat(selected).tolist()
    assert sorted(trained) == torch.nonzero(~errored)[:, 0].tolist()  # only scored rows reach the loss
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row["verifier_error_fraction"] == pytest.approx(float(errored.float().mean()))
    assert state.step == 1


def test_multi_turn_metrics_show_turns_tool_calls_and_groups_without_signal(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path, task="llmenv/arith-tool-v0", task_params={}, steps=1, max_new_tokens=4)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("turns_mean", "tool_calls_mean", "tool_errors_mean", "zero_variance_group_fraction"):
        assert isinstance(row[key], (int, float)), key
    assert row["turns_mean"] >= 1 and row["zero_variance_group_fraction"] == 1.0  # a random model: no signal


def test_status_line_warns_when_a_step_carried_no_learning_signal():
    from llmenv.agents.grpo import _status

    flat = {
        "reward_mean": 0.0,
        "loss": 0.0,
        "step_time_s": 1.0,
        "turns_mean": 2.0,
        "tool_calls_mean": 0.5,
        "verifier_error_fraction": 0.25,
        "zero_variance_group_fraction": 1.0,
        "kept": 1.0,
    }
    text = _status(flat)
    assert "no learning signal" in text and "verifier errors 25%" in text and "turns 2.0" in text
    assert "no learning signal" not in _status({**flat, "zero_variance_group_fraction": 0.5})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"steps": 0}, "steps=0"),
        ({"steps": -3}, "steps=-3"),
        ({"advantage": "zscore"}, "advantage='zscore' \\(expected one of"),
        ({"advantage": "reinforce"}, "advantage='reinforce' \\(expected one of .*'rloo', 'reinforce_pp'"),
        ({"clip_low": 1.5}, "clip_low"),
        ({"group_size": 1}, "group_size=1 .*nothing is learned"),
    ],
)
def test_bad_configs_are_rejected(tiny_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(tiny_dir, tmp_path, **overrides)


def test_a_cuda_device_on_a_cpu_only_torch_is_a_config_error(tiny_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="sees no CUDA GPU; use --device cpu"):
        run(tiny_dir, tmp_path, device="cuda")


@pytest.mark.slow
def test_cli_trains_smollm2_for_two_steps(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmenv.cli",
            "train",
            "grpo",
            "--task",
            "llmenv/arith-v0",
            "--model",
            "smollm2-135m",
            "--steps",
            "2",
            "--prompts-per-step",
            "2",
            "--group-size",
            "2",
            "--max-new-tokens",
            "16",
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
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["tokens"] > 0 for r in rows)
    assert (tmp_path / "final" / "model.safetensors").exists()
    assert "final export" in proc.stdout
