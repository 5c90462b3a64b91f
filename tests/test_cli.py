"""The llmenv command: tasks listing, rollout on a local model to JSONL, errors, and the real model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmenv.cli import main
from llmenv.models import tiny_llama


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_tasks_lists_builtins(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "llmenv/arith-v0" in out and "llmenv/countdown-v0" in out


def test_rollout_writes_episodes(tiny_model_dir, tmp_path, capsys):
    out_file = tmp_path / "episodes.jsonl"
    code = main(
        [
            "rollout",
            "--task",
            "llmenv/countdown-v0",
            "--model",
            str(tiny_model_dir),
            "--n",
            "3",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "8",
            "--temperature",
            "1.0",
            "--param",
            "count=3",
            "--out",
            str(out_file),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert len(row["tokens"]) == len(row["loss_mask"]) and 1 <= sum(row["loss_mask"]) <= 8
        assert set(row["parts"][0]) == {"correct", "format"}
    assert "mean reward" in capsys.readouterr().out


def test_unknown_task_is_a_clean_error(tiny_model_dir, capsys):
    assert main(["rollout", "--task", "llmenv/arith-v9", "--model", str(tiny_model_dir), "--n", "1"]) == 2
    assert "Did you mean" in capsys.readouterr().out


@pytest.mark.slow
def test_rollout_with_the_embedded_smollm2(tmp_path):
    out_file = tmp_path / "smol.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmenv.cli",
            "rollout",
            "--task",
            "llmenv/arith-v0",
            "--model",
            "smollm2-135m",
            "--n",
            "4",
            "--max-new-tokens",
            "48",
            "--param",
            "digits=1",
            "--out",
            str(out_file),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert "<|im_start|>assistant" in row["prompt"]
        assert row["completions"][0].strip()  # the real model writes something
        assert row["errors"] == [None]
    assert "mean reward" in proc.stdout


def test_console_entry_exits_with_the_command_status_and_skips_the_final_collection(capsys):
    import gc

    from llmenv.cli import entry

    try:
        with pytest.raises(SystemExit) as exit_:
            entry(["tasks"])
        assert exit_.value.code == 0
        assert "llmenv/arith-v0" in capsys.readouterr().out
        assert gc.get_freeze_count() > 0  # shutdown's collections will not walk these objects
    finally:
        gc.unfreeze()


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("tiny-policy-cli")
    tiny_llama(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def train_args(model_dir, out, *extra):
    return [
        "train",
        "grpo",
        "--task",
        "llmenv/arith-v0",
        "--model",
        str(model_dir),
        "--steps",
        "2",
        "--prompts-per-step",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "-3"], "invalid GRPOConfig: steps=-3 (expected >= 1)"),
        (["--group-size", "1"], "group_size=1 (expected >= 2"),
        (["--resume"], "--resume: no checkpoint in"),
        (["--task", "llmenv/arith-v9"], "Did you mean: `llmenv/arith-v0`"),
    ],
)
def test_training_mistakes_are_one_clear_line(tiny_policy_dir, tmp_path, capsys, extra, message):
    assert main(train_args(tiny_policy_dir, tmp_path / "run", *extra)) == 2
    out = capsys.readouterr().out
    assert out.startswith("error: ") and message in out and "Traceback" not in out
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_cuda_device_without_cuda_is_a_clear_error(tiny_policy_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(train_args(tiny_policy_dir, tmp_path, "--device", "cuda")) == 2
    assert "sees no CUDA GPU; use --device cpu or auto" in capsys.readouterr().out


def test_unknown_choices_are_refused_by_the_parser_with_the_allowed_ones(tiny_policy_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(train_args(tiny_policy_dir, tmp_path, "--advantage", "zscore"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'zscore'" in err and "'std'" in err and "Traceback" not in err


def test_help_shows_defaults_and_version_prints(capsys):
    with pytest.raises(SystemExit):
        main(["train", "grpo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--group-size INT" in text and "(default: 4)" in text
    assert "{std,none,batch,rloo,reinforce_pp,reinforce_pp_baseline}" in text
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"llmenv {__import__('llmenv').__version__}"


def test_rollout_episodes_follow_the_documented_schema(tiny_model_dir, tmp_path):
    out_file = tmp_path / "episodes.jsonl"
    assert (
        main(
            [
                "rollout",
                "--task",
                "llmenv/arith-tool-v0",
                "--model",
                str(tiny_model_dir),
                "--n",
                "2",
                "--max-new-tokens",
                "4",
                "--out",
                str(out_file),
            ]
        )
        == 0
    )
    keys = {
        "seed",
        "group",
        "prompt",
        "answer",
        "completions",
        "reward",
        "rewards",
        "passed",
        "parts",
        "errors",
        "turns",
        "tool_calls",
        "tool_errors",
        "stop_reason",
        "truncated",
        "cut",
        "tokens",
        "loss_mask",
    }
    for row in map(json.loads, out_file.read_text().splitlines()):
        assert set(row) == keys and row["turns"] == len(row["completions"]) == len(row["rewards"])


def test_a_float_verifier_task_reports_accuracy_by_its_pass_rule(tiny_model_dir, capsys):
    import llmenv
    from llmenv.types import Task

    llmenv.register_task(
        "always-full-v0", source=[Task("say anything", answer="x")], verifier=lambda c, t: 1.0, replace=True
    )
    assert (
        main(
            [
                "eval",
                "--task",
                "llmenv/always-full-v0",
                "--model",
                str(tiny_model_dir),
                "--n",
                "2",
                "--max-new-tokens",
                "2",
            ]
        )
        == 0
    )
    assert "mean reward 1.000  pass@1 1.000" in capsys.readouterr().out  # passed=None, reward 1 >= threshold 1


def test_ctrl_c_during_training_saves_a_checkpoint_and_says_how_to_resume(tiny_policy_dir, tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "run"
    args = train_args(tiny_policy_dir, out, "--steps", "50")
    proc = subprocess.Popen(  # its own process group, as a terminal's foreground job
        [sys.executable, "-m", "llmenv.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stdout + stderr and "continue with: llmenv train grpo" in stdout and "--resume" in stdout
    done = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert (out / "checkpoint" / "progress.json").exists()
    assert json.loads((out / "checkpoint" / "progress.json").read_text())["step"] == done[-1] < 50
    assert main(train_args(tiny_policy_dir, out, "--steps", str(done[-1] + 1), "--resume")) == 0
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(1, done[-1] + 2))


def test_cai_on_a_task_writes_samples_sft_rows_and_pairs_a_reward_model_reads(tiny_model_dir, tok, tmp_path, capsys):
    from llmenv.agents.rm import read_pairs
    from llmenv.chat import ChatCodec

    out = tmp_path / "cai"
    args = ["cai", "--task", "llmenv/arith-demo-v0", "--model", str(tiny_model_dir), "--n", "3", "--samples", "2"]
    assert main([*args, "--max-new-tokens", "8", "--temperature", "1.0", "--seed", "4", "--out", str(out)]) == 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and [s["index"] for s in samples] == list(range(6))
    assert all(s["prompt"][0]["role"] == "system" and s["error"] is None for s in samples)
    assert samples[0]["prompt"] == samples[1]["prompt"] != samples[2]["prompt"]
    sft = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert all(row["messages"][-1]["role"] == "assistant" for row in sft) and sft
    pairs = read_pairs(str(out / "pairs.jsonl"), ChatCodec(tok))
    printed = capsys.readouterr().out
    assert f"6 samples, {len(pairs)} pairs" in printed and "pairs.jsonl" in printed


def test_cai_reads_prompts_from_a_file_and_a_constitution_from_a_path(tiny_model_dir, tmp_path):
    prompts, constitution = tmp_path / "prompts.jsonl", tmp_path / "c.json"
    prompts.write_text('{"prompt": "Tell me a joke."}\n{"prompt": "Name a colour."}\n')
    principle = {"name": "kind", "critique": "Was it unkind?", "revision": "Make it kind."}
    constitution.write_text(json.dumps({"name": "mine", "principles": [principle]}))
    out = tmp_path / "cai"
    args = ["cai", "--prompts", str(prompts), "--constitution", str(constitution), "--model", str(tiny_model_dir)]
    assert main([*args, "--max-new-tokens", "4", "--temperature", "0", "--out", str(out)]) == 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"][0]["content"] for s in samples] == ["Tell me a joke.", "Name a colour."]
    assert {s["principle"] for s in samples} == {"kind"}


def test_cai_mistakes_are_one_clear_line_before_the_model_loads(tmp_path, capsys):
    bad = tmp_path / "c.json"
    bad.write_text('{"principles": [{"name": "x"}]}')
    args = ["cai", "--task", "llmenv/arith-v0", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o")]
    assert main([*args, "--constitution", str(bad)]) == 2
    assert "principle 0: 'critique' must be a non-empty string" in capsys.readouterr().out
    assert main(["cai", "--task", "llmenv/arith-v9", "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "Did you mean" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["cai", "--model", str(tmp_path), "--out", str(tmp_path / "o")])  # neither --task nor --prompts
    assert "one of the arguments --task --prompts is required" in capsys.readouterr().err
