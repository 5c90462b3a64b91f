"""Reward-model training: the Bradley–Terry loss, the data it reads, a tiny model that learns, exact resume."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from llmenv.agents import rm
from llmenv.agents.rm import RMConfig, bradley_terry_loss, read_pairs, train
from llmenv.chat import ChatCodec
from llmenv.errors import DataError
from llmenv.testing import assert_same_run, metric_rows, write_jsonl
from llmenv.types import Task
from llmenv.verifiers.reward_model import RewardModelVerifier, encode_conversation

REQUIRED = {"step", "loss", "accuracy", "margin_mean", "reward_chosen", "reward_rejected", "grad_norm", "tokens"}


def test_golden_losses():
    one, low = torch.tensor([1.0]), torch.tensor([0.2])
    assert float(bradley_terry_loss(one, low)) == pytest.approx(0.371101, abs=1e-6)
    assert float(bradley_terry_loss(one, low, torch.tensor([0.5]))) == pytest.approx(0.554355, abs=1e-6)
    centred = float(bradley_terry_loss(one, low, center_coef=0.01)) - float(bradley_terry_loss(one, low))
    assert centred == pytest.approx(0.0144, abs=1e-6)  # 0.01 * (1 + 0.2)^2
    pairs = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.2, 0.0]))
    assert float(pairs) == pytest.approx((0.371101 + math.log(2)) / 2, abs=1e-6)  # a mean over pairs


def pair_rows(n: int) -> list[dict]:
    """Pairs a tiny model can learn: the chosen side says the sum, the rejected one refuses."""
    return [
        {"prompt": f"what is {i} + 1?", "chosen": f"The answer is {i + 1}.", "rejected": "no idea"} for i in range(n)
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", pair_rows(40))


def config(tiny_dir, data, out, **overrides) -> RMConfig:
    base = dict(model=tiny_dir, data=data, steps=12, batch_size=8, lr=3e-3, out=str(out), micro_batch=8, seed=0)
    base.update(overrides)
    return RMConfig(**base)


def test_a_tiny_reward_model_learns_the_pairs_and_scores_them_as_a_verifier(tiny_dir, data, tmp_path):
    before = {k: v.clone() for k, v in RewardModelVerifier(tiny_dir).model.state_dict().items()}
    state = train(config(tiny_dir, data, tmp_path), progress=False)
    logged = metric_rows(tmp_path)
    assert [r["step"] for r in logged] == list(range(1, 13))
    assert all(math.isfinite(r[k]) for r in logged for k in REQUIRED)
    assert logged[-1]["loss"] < 0.5 * logged[0]["loss"]
    held = [r for r in logged if "eval_accuracy" in r]
    assert held and held[-1]["step"] == 12 and held[-1]["eval_accuracy"] == 1.0  # 4 held-out pairs
    assert len(state.eval_pairs) == 4 and len(state.train_pairs) == 36
    assert (tmp_path / "reward.png").exists()  # the reward margin over steps
    scorer = RewardModelVerifier(str(tmp_path / "final"))
    after = scorer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    task = Task("what is 7 + 1?")
    assert scorer("The answer is 8.", task).reward > scorer("no idea", task).reward


def test_training_scores_the_position_the_verifier_scores(tiny_dir, data, tmp_path):
    state = train(config(tiny_dir, data, tmp_path, steps=2), progress=False)
    scorer = RewardModelVerifier(state.model, state.tokenizer)
    (pair,) = read_pairs(write_jsonl(tmp_path / "one.jsonl", pair_rows(1)), scorer.codec)
    task = Task("what is 0 + 1?")
    assert (pair.chosen, pair.chosen_end) == encode_conversation(scorer.codec, task.messages(), "The answer is 1.")
    with torch.no_grad():
        r_chosen, r_rejected = rm.pair_rewards(state, [pair])
    assert float(r_chosen) == pytest.approx(scorer("The answer is 1.", task).reward, abs=1e-5)
    assert float(r_rejected) == pytest.approx(scorer("no idea", task).reward, abs=1e-5)


def test_a_lora_reward_models_adapter_folder_scores_as_the_trained_model(tiny_dir, data, tmp_path):
    state = train(config(tiny_dir, data, tmp_path, steps=3, lora_rank=4), progress=False)
    final = tmp_path / "final"
    assert (final / "adapter_config.json").is_file() and not (final / "config.json").exists()  # the adapter alone
    trained, loaded = RewardModelVerifier(state.model, state.tokenizer), RewardModelVerifier(str(final))
    assert not hasattr(loaded.model, "get_base_model")  # merged into a plain model
    task = Task("what is 0 + 1?")
    for completion in ("The answer is 1.", "no idea"):  # the trained head and the LoRA deltas both came back
        assert loaded(completion, task).reward == pytest.approx(trained(completion, task).reward, abs=1e-5)
    assert loaded("no idea", task).reward != pytest.approx(RewardModelVerifier(tiny_dir)("no idea", task).reward)


def test_resume_equals_an_uninterrupted_run(tiny_dir, data, tmp_path):
    train(config(tiny_dir, data, tmp_path / "straight", steps=6), progress=False)
    train(config(tiny_dir, data, tmp_path / "resumed", steps=4, save_every=2), progress=False)
    train(config(tiny_dir, data, tmp_path / "resumed", steps=6, resume=True), progress=False)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_each_epoch_visits_every_pair_once_in_a_seeded_order(tiny_dir, data, tmp_path):
    state = rm.build(config(tiny_dir, data, tmp_path, batch_size=12))
    epoch = [i for step in range(3) for i in rm.step_pairs(state, step)]  # 36 training pairs
    assert sorted(epoch) == list(range(36))
    assert epoch != [i for step in range(3, 6) for i in rm.step_pairs(state, step)]
    other = rm.build(config(tiny_dir, data, tmp_path, batch_size=12, seed=1))
    assert rm.step_pairs(state, 0) != rm.step_pairs(other, 0)


def test_a_datasets_folder_reads_like_the_jsonl(tok, tmp_path):
    datasets = pytest.importorskip("datasets")
    source = [{**r, "margin": 0.5 if i == 1 else None} for i, r in enumerate(pair_rows(5))]
    datasets.Dataset.from_list(source).save_to_disk(str(tmp_path / "folder"))
    codec = ChatCodec(tok)
    from_jsonl = read_pairs(write_jsonl(tmp_path / "p.jsonl", source), codec)
    assert read_pairs(str(tmp_path / "folder"), codec) == from_jsonl
    assert [p.margin for p in from_jsonl] == [0.0, 0.5, 0.0, 0.0, 0.0]


def test_conversational_rows_encode_like_plain_ones(tok, tmp_path):
    plain = pair_rows(1)[0]
    chat = {
        "prompt": [{"role": "user", "content": plain["prompt"]}],
        "chosen": [{"role": "assistant", "content": plain["chosen"]}],
        "rejected": [{"role": "assistant", "content": plain["rejected"]}],
    }
    codec = ChatCodec(tok)
    assert read_pairs(write_jsonl(tmp_path / "chat.jsonl", [chat]), codec) == read_pairs(
        write_jsonl(tmp_path / "plain.jsonl", [plain]), codec
    )


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "p", "chosen": "a"}', "line 2: missing rejected"),
        ("not json", "line 2: not JSON"),
        ('["p", "a", "b"]', "line 2: a JSON list, expected an object"),
        ('{"prompt": 5, "chosen": "a", "rejected": "b"}', "line 2: prompt must be a string or a list"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}', "line 2: margin must be a number"),
        ('{"prompt": "p", "chosen": {"text": "a"}, "rejected": "b"}', "line 2: chosen must be a string"),
    ],
)
def test_bad_rows_name_the_line_and_the_expected_form(tok, tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(pair_rows(1)[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message) as caught:
        read_pairs(str(path), ChatCodec(tok))
    assert "bad.jsonl" in str(caught.value)


def test_missing_data_is_an_error_before_any_model_loads(tiny_dir, tmp_path):
    with pytest.raises(DataError, match="needs --data"):
        RMConfig(model=tiny_dir)
    with pytest.raises(DataError, match="no such file"):
        train(config(tiny_dir, str(tmp_path / "absent.jsonl"), tmp_path), progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="holds no pairs"):
        train(config(tiny_dir, str(empty), tmp_path), progress=False)
    with pytest.raises(DataError, match="no training pair fits max_length=4"):
        train(config(tiny_dir, write_jsonl(tmp_path / "p.jsonl", pair_rows(3)), tmp_path, max_length=4), progress=False)


def test_cli_without_data_prints_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "llmenv.cli", "train", "rm", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines() == [
        'error: llmenv train rm needs --data: a JSONL file of {"prompt": str | [messages], "chosen": str, '
        '"rejected": str, "margin": float (optional)}'
    ]


def test_cli_trains_and_reports_the_plot_and_weights(tiny_dir, data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "llmenv.cli", "train", "rm", "--model", tiny_dir, "--data", data, "--steps", "2",
         "--batch-size", "4", "--lr", "1e-3", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"plot: {tmp_path}/reward.png" in proc.stdout and (tmp_path / "final" / "config.json").exists()
    assert [r["step"] for r in metric_rows(tmp_path)] == [1, 2]
