"""RunLog writes JSONL/plot and appends on resume; checkpoints restore weights, optimizer and RNG exactly."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from llmenv.agents.checkpoint import load_checkpoint, save_checkpoint
from llmenv.agents.evaluate import pass_at_k
from llmenv.agents.runlog import RunLog
from llmenv.models import tiny_llama


def test_runlog_appends_on_resume_and_plots(tmp_path):
    log = RunLog(tmp_path)
    log.log({"step": 1, "reward_mean": 0.25, "loss": float("nan")})
    log.close()
    log = RunLog(tmp_path, resume=True)
    log.log({"step": 2, "reward_mean": 0.5})
    assert [r["step"] for r in log.rows()] == [1, 2] and log.rows()[0]["loss"] is None
    path = log.plot()
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.close()
    RunLog(tmp_path).close()  # a fresh (non-resumed) run starts the file over
    assert not (tmp_path / "metrics.jsonl").exists()


def test_checkpoint_round_trip(tmp_path, tok):
    model = tiny_llama(tok, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = save_checkpoint(tmp_path, model=model, tokenizer=tok, optimizer=optimizer, step=7, config={"lr": 1e-3})
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


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25
    assert abs(pass_at_k(4, 1, 2) - 0.5) < 1e-12  # 1 - C(3,2)/C(4,2) = 1 - 3/6
