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
    code = main([
        "rollout", "--task", "llmenv/countdown-v0", "--model", str(tiny_model_dir), "--n", "3", "--batch-size", "2",
        "--max-new-tokens", "8", "--temperature", "1.0", "--param", "count=3", "--out", str(out_file),
    ])
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
        [sys.executable, "-m", "llmenv.cli", "rollout", "--task", "llmenv/arith-v0", "--model", "smollm2-135m",
         "--n", "4", "--max-new-tokens", "48", "--param", "digits=1", "--out", str(out_file)],
        capture_output=True, text=True, timeout=900,
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
