"""Offline DPO and its family on a tiny model: the reply tokens, log-probs, learning, LoRA reference, resume, CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from llmenv.agents import dpo
from llmenv.agents.dpo import DPOConfig, encode_reply, read_data, sequence_logps, train
from llmenv.agents.preference import LOSSES
from llmenv.chat import ChatCodec
from llmenv.errors import DataError
from llmenv.models import load_model
from llmenv.testing import assert_same_run, metric_rows, write_jsonl
from llmenv.types import Message

REQUIRED = {"step", "loss", "chosen_reward", "rejected_reward", "chosen_logp", "rejected_logp", "preference_accuracy",
            "reward_margin", "grad_norm", "tokens", "epoch", "dropped_rows", "step_time_s"}  # fmt: skip


def pair_rows(n: int) -> list[dict]:
    """Pairs a tiny model can learn: the chosen side says the sum, the rejected one refuses."""
    return [
        {"prompt": f"what is {i} + 1?", "chosen": f"The answer is {i + 1}.", "rejected": "no idea"} for i in range(n)
    ]


def kto_rows(n: int) -> list[dict]:
    """Unpaired rows: even rows answer (desirable), odd rows refuse (undesirable)."""
    return [
        {"prompt": f"what is {i} + 1?", "completion": f"The answer is {i + 1}." if i % 2 == 0 else "no idea",
         "label": i % 2 == 0} for i in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", pair_rows(40))


def config(tiny_dir, data, out, **overrides) -> DPOConfig:
    base = dict(model=tiny_dir, data=data, steps=12, batch_size=8, lr=3e-3, beta=0.5, out=str(out), micro_batch=16,
                seed=0)  # fmt: skip
    base.update(overrides)
    return DPOConfig(**base)


def test_a_reply_is_the_tokens_the_policy_would_generate(tok):
    codec = ChatCodec(tok)
    messages = [Message(role="user", content="what is 1 + 1?")]
    reply = encode_reply(codec, messages, "The answer is 2.", "row")
    assert reply.ids[: reply.start] == codec.encode(messages, add_generation_prompt=True).tolist()
    assert tok.decode(reply.ids[reply.start :]) == "The answer is 2.<|im_end|>"  # content + end of turn, no "\n"


def test_sequence_logps_equal_a_plain_forward(tiny_dir, tok):
    model = load_model(tiny_dir)
    codec = ChatCodec(tok)
    replies = [encode_reply(codec, [Message(role="user", content=q)], a, "row")
               for q, a in [("what is 1 + 1?", "2"), ("hi", "Hello there, friend.")]]  # fmt: skip
    with torch.no_grad():
        logp, length = sequence_logps(model, replies, pad=tok.pad_token_id, device=torch.device("cpu"))
        for i, reply in enumerate(replies):
            logits = model(torch.tensor([reply.ids])).logits[0].log_softmax(-1)  # (L, V)
            targets = torch.tensor(reply.ids[reply.start :])
            expected = logits[reply.start - 1 : len(reply.ids) - 1].gather(-1, targets[:, None]).sum()
            assert float(logp[i]) == pytest.approx(float(expected), abs=1e-4)
            assert float(length[i]) == len(reply.ids) - reply.start


def test_dpo_starts_at_log_2_and_a_tiny_policy_learns_the_pairs(tiny_dir, data, tmp_path):
    train(config(tiny_dir, data, tmp_path), progress=False)
    logged = metric_rows(tmp_path)
    assert [r["step"] for r in logged] == list(range(1, 13))
    assert all(math.isfinite(r[k]) for r in logged for k in REQUIRED)
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference: delta 0
    assert logged[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert logged[-1]["loss"] < 0.5 * logged[0]["loss"]
    held = [r for r in logged if "eval_preference_accuracy" in r]
    assert held and held[-1]["step"] == 12 and held[-1]["eval_preference_accuracy"] == 1.0  # 4 held-out pairs
    assert held[-1]["eval_reward_margin"] > 0
    assert (tmp_path / "reward.png").exists()
    before, after = load_file(f"{tiny_dir}/model.safetensors"), load_file(tmp_path / "final" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)


@pytest.mark.parametrize("loss", [name for name in LOSSES if name != "dpo"] + ["kto"])
def test_every_loss_trains_a_step_with_or_without_a_reference(tiny_dir, data, tmp_path, loss):
    rows_file = write_jsonl(tmp_path / "kto.jsonl", kto_rows(20)) if loss == "kto" else data
    state = train(config(tiny_dir, rows_file, tmp_path, loss=loss, steps=2, label_smoothing=0.1), progress=False)
    logged = metric_rows(tmp_path)
    assert len(logged) == 2 and all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in logged)
    assert (state.reference is None) == (loss in ("simpo", "orpo"))
    if loss == "kto":
        assert logged[0]["kl"] >= 0 and math.isfinite(logged[0]["reward_margin"])
        assert logged[0]["loss"] == pytest.approx(0.5, abs=1e-5)  # r = z0 = 0 at the start: 1 - sigmoid(0)


def test_lora_reads_its_reference_through_the_disabled_adapter(tiny_dir, data, tmp_path):
    state = train(config(tiny_dir, data, tmp_path, steps=3, lora_rank=4), progress=False)
    assert state.reference is None  # no second copy: the base under a disabled adapter
    logged = metric_rows(tmp_path)
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert logged[-1]["loss"] < logged[0]["loss"]
    replies = [state.train_rows[0].chosen]
    state.model.train()
    with torch.no_grad():
        _, ref, _ = dpo.row_logps(state, replies)
        base, _ = sequence_logps(load_model(tiny_dir), replies, pad=0, device=state.device)
        trained, _ = sequence_logps(state.model, replies, pad=0, device=state.device)
    assert float(ref[0]) == pytest.approx(float(base[0]), abs=1e-4) and float(trained[0]) != pytest.approx(
        float(base[0])
    )
    assert state.model.training  # the reference pass left the policy in train mode


def test_resume_equals_an_uninterrupted_run(tiny_dir, data, tmp_path):
    train(config(tiny_dir, data, tmp_path / "straight", steps=6), progress=False)
    train(config(tiny_dir, data, tmp_path / "resumed", steps=4, save_every=2), progress=False)
    train(config(tiny_dir, data, tmp_path / "resumed", steps=6, resume=True), progress=False)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.parametrize(
    "line, kto, message",
    [
        ('{"prompt": "p", "chosen": "a"}', False, "line 2: missing rejected"),
        ('{"prompt": "p", "chosen": 3, "rejected": "b"}', False, "line 2: chosen must be a string"),
        ('{"prompt": "p", "completion": "a", "label": "yes"}', True, "line 2: label must be true or false"),
        ('{"prompt": "p", "completion": "a"}', True, "line 2: missing label"),
    ],
)
def test_bad_rows_name_the_line_and_the_expected_form(tok, tmp_path, line, kto, message):
    first = kto_rows(1)[0] if kto else pair_rows(1)[0]
    path = write_jsonl(tmp_path / "bad.jsonl", [first])
    with open(path, "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(DataError, match=message) as caught:
        read_data(path, ChatCodec(tok), kto)
    assert "bad.jsonl" in str(caught.value)


def test_the_rm_and_cai_pair_files_are_valid_input(tok, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "Hello."}],
             "rejected": "go away", "margin": 1.0}]  # fmt: skip
    (row,) = read_data(write_jsonl(tmp_path / "p.jsonl", rows), ChatCodec(tok), kto=False)
    assert tok.decode(row.chosen.ids[row.chosen.start :]) == "Hello.<|im_end|>"
    assert tok.decode(row.rejected.ids[row.rejected.start :]) == "go away<|im_end|>"


def test_missing_data_is_an_error_before_any_model_loads(tiny_dir, tmp_path):
    with pytest.raises(DataError, match="needs --data"):
        DPOConfig(model=tiny_dir)
    with pytest.raises(DataError, match="no such file"):
        train(config(tiny_dir, str(tmp_path / "absent.jsonl"), tmp_path), progress=False)
    short = write_jsonl(tmp_path / "p.jsonl", pair_rows(3))
    with pytest.raises(DataError, match="no training row fits max_length=4"):
        train(config(tiny_dir, short, tmp_path, max_length=4), progress=False)


def test_cli_without_data_prints_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmenv.cli", "train", "dpo", "--loss", "kto", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines() == [
        'error: llmenv train dpo needs --data: a JSONL file of {"prompt": str | [messages], "completion": str, '
        '"label": bool}'
    ]


def test_cli_trains_and_reports_the_plot_and_weights(tiny_dir, data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "llmenv.cli", "train", "dpo", "--model", tiny_dir, "--data", data, "--steps", "2",
         "--batch-size", "4", "--lr", "1e-3", "--loss", "ipo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"plot: {tmp_path}/reward.png" in proc.stdout and (tmp_path / "final" / "config.json").exists()
    assert [r["step"] for r in metric_rows(tmp_path)] == [1, 2]
