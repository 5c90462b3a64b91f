"""RunLog writes JSONL/plot and appends on resume; checkpoints restore weights, optimizer and RNG exactly."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from llmenv.agents.checkpoint import export_final, find_checkpoint, load_checkpoint, save_checkpoint
from llmenv.agents.evaluate import pass_at_k
from llmenv.agents.runlog import RunLog
from llmenv.errors import CheckpointError
from llmenv.models import tiny_llama


def test_runlog_appends_on_resume_and_plots(tmp_path):
    log = RunLog(tmp_path)
    log.log({"step": 1, "reward_mean": 0.25, "loss": float("nan")})
    log.close()
    log = RunLog(tmp_path, resume_from=1)
    log.log({"step": 2, "reward_mean": 0.5})
    assert [r["step"] for r in log.rows()] == [1, 2] and log.rows()[0]["loss"] is None
    path = log.plot(title="GRPO on llmenv/arith-v0 (tiny)", marks={"before": 0.1, "after": 0.4})
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.close()
    RunLog(tmp_path).close()  # a fresh (non-resumed) run starts the file over
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_resumed_log_drops_the_rows_after_its_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    for step in (1, 2, 3):
        log.log({"step": step, "reward_mean": step / 10})
    log.close()
    log = RunLog(tmp_path, resume_from=2)  # the run is continued from its step-2 checkpoint
    log.log({"step": 3, "reward_mean": 0.9})
    assert [(r["step"], r["reward_mean"]) for r in log.rows()] == [(1, 0.1), (2, 0.2), (3, 0.9)]
    log.close()


def test_checkpoint_round_trip(tmp_path, tok):
    model = tiny_llama(tok, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = save_checkpoint(tmp_path, model=model, tokenizer=tok, optimizer=optimizer, step=7, config={"lr": 1e-3}).path
    expected_draws = (random.random(), np.random.rand(), torch.rand(1).item())
    assert json.loads((path / "progress.json").read_text())["step"] == 7

    other = tiny_llama(tok, seed=2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    assert load_checkpoint(path, model=other, optimizer=other_opt) == 7
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert other_opt.state_dict()["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected_draws
    assert not (tmp_path / ".checkpoint.partial").exists()


def test_named_extra_states_round_trip_and_a_missing_or_mismatched_one_is_a_checkpoint_error(tmp_path, tok):
    model = tiny_llama(tok, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    critic = torch.nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.fill_(0.5)
    saved = {"critic": critic, "critic_optimizer": torch.optim.AdamW(critic.parameters(), lr=1e-4)}
    path = save_checkpoint(
        tmp_path, model=model, tokenizer=tok, optimizer=optimizer, step=3, config={}, extra=saved
    ).path
    again = {"critic": torch.nn.Linear(4, 1), "critic_optimizer": torch.optim.AdamW(critic.parameters(), lr=1e-4)}
    assert load_checkpoint(path, model=model, optimizer=optimizer, extra=again) == 3
    assert torch.equal(again["critic"].weight, critic.weight)
    with pytest.raises(
        CheckpointError, match="has no saved 'value_model' state \\(it has \\['critic', 'critic_optimizer'\\]"
    ):
        load_checkpoint(path, model=model, optimizer=optimizer, extra={"value_model": torch.nn.Linear(4, 1)})
    with pytest.raises(CheckpointError, match="'critic' state in .* does not match this run"):
        load_checkpoint(path, model=model, optimizer=optimizer, extra={"critic": torch.nn.Linear(8, 1)})


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25
    assert abs(pass_at_k(4, 1, 2) - 0.5) < 1e-12  # 1 - C(3,2)/C(4,2) = 1 - 3/6


class Boom(RuntimeError):
    pass


def _save(tmp_path, tok, model, optimizer, step):
    return save_checkpoint(tmp_path, model=model, tokenizer=tok, optimizer=optimizer, step=step, config={})


def _failing_at(k, monkeypatch):
    """Make the k-th file-system step of save_checkpoint (a write, rename or removal) raise."""
    from llmenv.agents import checkpoint

    calls = {"n": 0}

    def wrap(fn):
        def failing(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == k:
                raise Boom(f"crash at step {k}")
            return fn(*args, **kwargs)

        return failing

    monkeypatch.setattr(checkpoint.os, "rename", wrap(checkpoint.os.rename))
    monkeypatch.setattr(checkpoint.shutil, "rmtree", wrap(checkpoint.shutil.rmtree))
    monkeypatch.setattr(checkpoint.torch, "save", wrap(checkpoint.torch.save))
    monkeypatch.setattr(checkpoint, "_write_weights", wrap(checkpoint._write_weights))
    return calls


def test_a_crash_at_any_step_of_saving_leaves_a_loadable_checkpoint(tmp_path, tok, monkeypatch):
    from llmenv.agents import checkpoint

    model = tiny_llama(tok, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _save(tmp_path / "count", tok, model, optimizer, 1)
    with monkeypatch.context() as patch:
        calls = _failing_at(10**9, patch)
        _save(tmp_path / "count", tok, model, optimizer, 2)
        steps = calls["n"]  # file-system steps of a save over an existing checkpoint
    assert steps >= 6
    for k in range(1, steps + 1):
        out = tmp_path / f"crash-{k}"
        _save(out, tok, model, optimizer, 1)
        with monkeypatch.context() as patch:
            _failing_at(k, patch)
            try:
                _save(out, tok, model, optimizer, 2)
                crashed = False
            except Boom:
                crashed = True
        found = find_checkpoint(out)
        assert found is not None, f"a crash at step {k} left no loadable checkpoint"
        other = tiny_llama(tok, seed=2)
        step = load_checkpoint(found, model=other, optimizer=torch.optim.AdamW(other.parameters(), lr=1e-3))
        assert step in (1, 2) and (crashed or step == 2), (k, step)
        assert checkpoint.checkpoint_step(found) == step


def test_the_final_export_is_weights_and_tokenizer_only(tmp_path, tok):
    from llmenv.models import load_model

    model = tiny_llama(tok, seed=3)
    saved = export_final(tmp_path, model=model, tokenizer=tok)
    names = {p.name for p in saved.path.iterdir()}
    assert "model.safetensors" in names and "trainer_state.pt" not in names and "progress.json" not in names
    assert saved.trainer_state_bytes == 0 and saved.weights_bytes > 0 and str(saved.path) in saved.describe()
    loaded = load_model(saved.path)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_a_resumed_run_is_one_tensorboard_run_with_one_value_per_step(tmp_path):
    import pytest

    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    log = RunLog(tmp_path)
    for step in (1, 2, 3):
        log.log({"step": step, "reward_mean": step / 10})
    log.close()
    log = RunLog(tmp_path, resume_from=2)
    log.log({"step": 3, "reward_mean": 0.9})
    log.close()
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("reward_mean")] == [(1, 0.1), (2, 0.2), (3, 0.9)]
    log = RunLog(tmp_path)  # a fresh run in the same folder starts without the old events
    log.log({"step": 1, "reward_mean": 0.5})
    log.close()
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward_mean")] == [(1, 0.5)]
