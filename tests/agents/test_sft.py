"""SFT: the mask is exactly the assistant turns (+ end of turn), a tiny model learns, resume is exact, rejection."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import llmenv
from llmenv.agents import sft, trainer
from llmenv.agents.sft import SFTConfig, encode_rows, token_nll, train
from llmenv.chat import ChatCodec
from llmenv.errors import DataError
from llmenv.tasks.arith import generate_arith
from llmenv.testing import assert_same_run, metric_rows, write_jsonl
from llmenv.types import Verdict

REQUIRED = {"step", "loss", "token_accuracy", "grad_norm", "tokens", "trained_tokens", "epoch", "dropped_rows",
            "step_time_s"}  # fmt: skip


def even_length(completion: str, task) -> Verdict:
    """Solved when the completion has an even number of characters; a verifier error when it has 3 mod 7."""
    if len(completion) % 7 == 3:
        raise RuntimeError("this grader fails on some inputs")
    return Verdict(reward=float(len(completion) % 2 == 0), passed=len(completion) % 2 == 0)


SYSTEM = {"role": "system", "content": "Be brief."}
QUESTION = {"role": "user", "content": "2 + 3?"}

llmenv.register_task("sft-parity-test-v0", source=generate_arith, verifier=even_length, replace=True)


def test_golden_loss_is_the_mean_nll_per_trained_token_of_the_whole_batch():
    logp = torch.log(torch.tensor([[0.9, 0.5, 0.25, 0.1], [0.3, 0.5, 0.125, 0.7]]))  # (B, L)
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    expected = (math.log(2) + math.log(4) + math.log(8)) / 3  # = 2 ln 2 = 1.386294
    assert float(token_nll(logp, mask, 3)) == pytest.approx(expected, abs=1e-6)
    halves = token_nll(logp[:1], mask[:1], 3) + token_nll(logp[1:], mask[1:], 3)  # micro-batches share the count
    assert float(halves) == pytest.approx(expected, abs=1e-6)


def trained_spans(tok, row) -> list[str]:
    """The decoded runs of consecutive trained tokens (special tokens kept)."""
    runs = itertools.groupby(zip(row.ids, row.loss_mask), key=lambda pair: pair[1])
    return [tok.decode([i for i, _ in run], skip_special_tokens=False) for trained, run in runs if trained]


def test_the_mask_covers_each_assistant_turns_content_and_end_of_turn_exactly(tok):
    codec = ChatCodec(tok)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2 + 3?"},
        {"role": "assistant", "content": "The answer is 5."},
        {"role": "user", "content": "And 4 + 4?"},
        {"role": "assistant", "content": "8, then."},
    ]
    (row,) = encode_rows([("r", {"messages": messages})], codec)
    assert trained_spans(tok, row) == ["The answer is 5.<|im_end|>", "8, then.<|im_end|>"]
    assert row.ids == codec.encode(messages, add_generation_prompt=False).tolist()  # the whole conversation's ids
    assert row.loss_mask[0] == 0 and len(row.ids) == len(row.loss_mask)


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "2 + 3?", "completion": "5"},
        {"prompt": [SYSTEM, QUESTION], "completion": [{"role": "assistant", "content": "5"}]},
        {
            "prompt": [{"role": "user", "content": "1?"}, {"role": "assistant", "content": "1"}, QUESTION],
            "completion": "5",
        },  # fmt: skip
    ],
)
def test_prompt_completion_rows_train_on_the_completion_only(tok, row):
    codec = ChatCodec(tok)
    (encoded,) = encode_rows([("r", row)], codec)
    assert trained_spans(tok, encoded) == ["5<|im_end|>"]
    prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
    head = codec.encode(prompt, add_generation_prompt=True).tolist()
    assert encoded.ids[: len(head)] == head and not any(encoded.loss_mask[: len(head)])


def test_a_template_that_rewrites_the_content_is_an_error_naming_the_row(tok):
    trimming = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
    trimming += "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    codec = ChatCodec(tok, chat_template=trimming)
    with pytest.raises(DataError, match="row 3: the chat template does not render assistant turn 1"):
        encode_rows([("row 3", {"prompt": "q", "completion": "  padded answer  "})], codec)


def repeat_rows(n: int) -> list[dict]:
    """Rows a tiny model can learn: the completion repeats the prompt's word (one of four) three times."""
    words = ["apple", "answer", "number", "final"]
    return [{"prompt": f"Say {words[i % 4]}.", "completion": f"{words[i % 4]} {words[i % 4]} ok"} for i in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    long_row = {"prompt": "x " * 300, "completion": "y"}
    return write_jsonl(tmp_path_factory.mktemp("sft") / "sft.jsonl", [*repeat_rows(40), long_row])


def config(tiny_dir, data, out, **overrides) -> SFTConfig:
    base = dict(model=tiny_dir, data=data, steps=12, batch_size=8, lr=1e-2, out=str(out), micro_batch=4, seed=0,
                max_length=200)  # fmt: skip
    base.update(overrides)
    return SFTConfig(**base)


def test_a_tiny_model_learns_and_reports_held_out_loss(tiny_dir, data, tmp_path):
    train(config(tiny_dir, data, tmp_path, steps=20, eval_every=5), progress=False)
    logged = metric_rows(tmp_path)
    assert [r["step"] for r in logged] == list(range(1, 21))
    assert all(math.isfinite(r[k]) for r in logged for k in REQUIRED)
    assert logged[-1]["loss"] < 0.3 * logged[0]["loss"]
    assert {r["dropped_rows"] for r in logged} == {1}  # the 300-word prompt
    held = [r for r in logged if "eval_loss" in r]
    assert [r["step"] for r in held] == [5, 10, 15, 20] and math.isfinite(held[-1]["eval_loss"])
    assert held[-1]["eval_loss"] < held[0]["eval_loss"] and 0 <= held[-1]["eval_token_accuracy"] <= 1
    assert (tmp_path / "reward.png").exists()
    before = load_file(f"{tiny_dir}/model.safetensors")
    after = load_file(tmp_path / "final" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)


def test_resume_equals_an_uninterrupted_run(tiny_dir, data, tmp_path):
    train(config(tiny_dir, data, tmp_path / "straight", steps=6), progress=False)
    train(config(tiny_dir, data, tmp_path / "resumed", steps=4, save_every=2), progress=False)
    train(config(tiny_dir, data, tmp_path / "resumed", steps=6, resume=True), progress=False)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    keys = ("step", "loss", "token_accuracy", "grad_norm", "tokens", "trained_tokens", "epoch")
    ours, theirs = metric_rows(tmp_path / "resumed"), metric_rows(tmp_path / "straight")
    assert [[r[k] for k in keys] for r in ours] == [[r[k] for k in keys] for r in theirs]
    assert ours[-1]["eval_loss"] == theirs[-1]["eval_loss"]  # (the 4-step run also evaluated at its last step)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "q"}, "line 1: has keys \\['prompt'\\]; expected"),
        ({"messages": [{"role": "user", "content": "q"}]}, "line 1: messages hold no assistant turn"),
        ({"messages": [{"role": "user"}]}, "line 1: messages must be a string or a list of"),
        ({"prompt": "q", "completion": 3}, "line 1: completion must be a string or"),
        ({"prompt": 7, "completion": "a"}, "line 1: prompt must be a string or a list"),
    ],
)
def test_bad_rows_name_the_line_and_the_expected_form(tiny_dir, tmp_path, row, message):
    with pytest.raises(DataError, match=message):
        train(config(tiny_dir, write_jsonl(tmp_path / "bad.jsonl", [row]), tmp_path), progress=False)


def test_data_or_task_exactly_one(tiny_dir):
    with pytest.raises(DataError, match="exactly one of --data .* got neither"):
        SFTConfig(model=tiny_dir)
    with pytest.raises(DataError, match="got both"):
        SFTConfig(model=tiny_dir, data="x.jsonl", task="llmenv/arith-v0")


def test_cli_without_data_prints_one_line_and_trains_with_it(tiny_dir, data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "llmenv.cli", "train", "sft", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and "needs exactly one of --data" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "llmenv.cli", "train", "sft", "--model", tiny_dir, "--data", data, "--steps", "2",
         "--batch-size", "4", "--lr", "1e-3", "--eval-data", data, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"plot: {tmp_path}/reward.png" in proc.stdout and [r["step"] for r in metric_rows(tmp_path)] == [1, 2]
    assert "eval_loss" in metric_rows(tmp_path)[-1]  # the held-out rows come from --eval-data


def test_rejection_sampling_trains_on_the_verified_successes_only(tiny_dir, tmp_path, monkeypatch):
    played = []

    def play_episodes(state):
        played.append(trainer_play(state))
        return played[-1]

    trainer_play = trainer.play_episodes
    monkeypatch.setattr(trainer, "play_episodes", play_episodes)
    cfg = SFTConfig(model=tiny_dir, task="llmenv/sft-parity-test-v0", samples=4, prompts_per_step=3, steps=3,
                    max_new_tokens=8, lr=1e-3, out=str(tmp_path), seed=0)  # fmt: skip
    state = train(cfg, progress=False)
    assert isinstance(state, sft.SamplingState) and state.env.num_envs == 12
    logged = metric_rows(tmp_path)
    assert len(logged) == len(played) == 3
    for row, episodes in zip(logged, played):
        kept = [e for e in episodes if e.error is None and e.passed()]
        assert row["kept_fraction"] == len(kept) / 12 and 0 <= row["kept_fraction"] <= 1
        assert row["verifier_error_fraction"] == pytest.approx(sum(e.error is not None for e in episodes) / 12)
        assert row["trained_tokens"] == sum(int(e.trajectory.loss_mask.sum()) for e in kept)
        assert all(math.isfinite(row[k]) for k in ("loss", "token_accuracy", "grad_norm", "reward_mean"))
    assert any(r["kept_fraction"] > 0 for r in logged) and any(r["verifier_error_fraction"] > 0 for r in logged)


def test_rejection_sampling_resume_equals_an_uninterrupted_run(tiny_dir, tmp_path):
    def cfg(out, steps, **kw) -> SFTConfig:
        return SFTConfig(model=tiny_dir, task="llmenv/sft-parity-test-v0", samples=2, prompts_per_step=2,
                         steps=steps, max_new_tokens=8, lr=1e-3, out=str(out), seed=3, **kw)  # fmt: skip

    train(cfg(tmp_path / "straight", 4), progress=False)
    train(cfg(tmp_path / "resumed", 2, save_every=2), progress=False)
    train(cfg(tmp_path / "resumed", 4, resume=True), progress=False)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    keys = ("step", "kept_fraction", "trained_tokens", "reward_mean", "verifier_error_fraction")
    ours, theirs = metric_rows(tmp_path / "resumed"), metric_rows(tmp_path / "straight")
    assert [[r[k] for k in keys] for r in ours] == [[r[k] for k in keys] for r in theirs]
    assert sum(r["trained_tokens"] for r in ours) > 0  # the resumed steps trained on kept samples


@pytest.mark.slow
def test_smollm2_masks_its_template_exactly_and_trains_from_the_cli(tmp_path):
    from llmenv.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    messages = [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "5."},
                {"role": "user", "content": "4 + 4?"}, {"role": "assistant", "content": "It is 8."}]  # fmt: skip
    (row,) = encode_rows([("r", {"messages": messages})], ChatCodec(tok))
    assert trained_spans(tok, row) == ["5.<|im_end|>", "It is 8.<|im_end|>"]
    data = write_jsonl(tmp_path / "sft.jsonl", repeat_rows(8))
    proc = subprocess.run(
        [sys.executable, "-m", "llmenv.cli", "train", "sft", "--data", data, "--steps", "2", "--batch-size", "4",
         "--bf16", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(math.isfinite(r["loss"]) for r in metric_rows(tmp_path / "run"))
