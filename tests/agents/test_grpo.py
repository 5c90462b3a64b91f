"""GRPO: a tiny model really trains, every config variant runs, and resume equals an uninterrupted run."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import llmenv
from llmenv.agents.grpo import GRPOConfig, train
from llmenv.models import tiny_llama
from llmenv.tasks.arith import generate_arith


def digit_share(completion: str, task) -> float:
    """A dense reward a random tiny model gets signal from: the share of digits in its completion."""
    return sum(ch.isdigit() for ch in completion) / max(len(completion), 1)


llmenv.register_task("digits-test-v0", source=generate_arith, verifier=digit_share, replace=True)

REQUIRED = {"step", "reward_mean", "reward_std", "loss", "kl", "entropy", "grad_norm", "tokens", "step_time_s"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("tiny-policy")
    tiny_llama(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


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
        format_weight=0.5,
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
    assert (tmp_path / "reward.png").exists() and (tmp_path / "checkpoint" / "model.safetensors").exists()


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


def test_the_final_checkpoint_can_be_left_out(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path, steps=1, save_every=5, save_final=False)
    assert (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoint").exists()


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
        {"dynamic_sampling": True, "filter_truncated": True},
        {"bf16": True, "gradient_checkpointing": True},
    ],
    ids=lambda o: ",".join(o),
)
def test_every_variant_trains_with_finite_loss(tiny_dir, tmp_path, overrides):
    run(tiny_dir, tmp_path, steps=2, **overrides)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert all(isinstance(row[k], (int, float)) for k in REQUIRED), row
    if overrides.get("beta"):
        assert rows[0]["kl"] == 0.0 and rows[1]["kl"] != 0.0  # the policy leaves the reference after step 1


def test_lora_trains_only_the_adapter(tiny_dir, tmp_path):
    pytest.importorskip("peft")
    state = run(tiny_dir, tmp_path, steps=1, lora_rank=4)
    trainable = [n for n, p in state.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    assert (tmp_path / "checkpoint" / "adapter_model.safetensors").exists()


def test_resume_equals_an_uninterrupted_run(tiny_dir, tmp_path):
    run(tiny_dir, tmp_path / "straight", steps=3)
    run(tiny_dir, tmp_path / "resumed", steps=2, save_every=1)
    run(tiny_dir, tmp_path / "resumed", steps=3, resume=True)
    straight = load_file(tmp_path / "straight" / "checkpoint" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "checkpoint" / "model.safetensors")
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)

    def rows(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    assert [r["step"] for r in rows("resumed")] == [1, 2, 3]
    assert [r["reward_mean"] for r in rows("resumed")] == [r["reward_mean"] for r in rows("straight")]


def test_resume_without_a_checkpoint_fails_clearly(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(tiny_dir, tmp_path, resume=True)


@pytest.mark.parametrize(
    "overrides, message",
    [({"steps": 0}, "steps=0"), ({"advantage": "zscore"}, "advantage must be one of"), ({"clip_low": 1.5}, "clip_low")],
)
def test_bad_configs_are_rejected(tiny_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tiny_dir, tmp_path, **overrides)


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
    assert (tmp_path / "checkpoint" / "model.safetensors").exists()
