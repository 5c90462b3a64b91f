"""Pairs from a task: solved against unsolved per prompt, errors left out, rows a reward model trains on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import llmenv
from llmenv.agents.evaluate import play
from llmenv.agents.pairs import pairs_from_episodes
from llmenv.agents.policy import HFPolicy, SamplingParams
from llmenv.agents.rm import read_pairs
from llmenv.chat import ChatCodec
from llmenv.errors import TaskConfigError
from llmenv.tasks.arith import generate_arith
from llmenv.types import Verdict

SYSTEM = "Answer briefly."


def even_length(completion: str, task) -> Verdict:
    """Solved when the completion has an even number of characters; a verifier error when it has 3 mod 7."""
    if len(completion) % 7 == 3:
        raise RuntimeError("this grader fails on some inputs")
    return Verdict(reward=float(len(completion) % 2 == 0), passed=len(completion) % 2 == 0)


llmenv.register_task(
    "pairs-parity-test-v0", source=generate_arith, verifier=even_length, system_prompt=SYSTEM, replace=True
)


@pytest.fixture(scope="module")
def episodes(tiny_dir, tok):
    model = llmenv.models.load_model(tiny_dir)
    sampling = SamplingParams(max_new_tokens=12, temperature=1.0, seed=0)
    return play("llmenv/pairs-parity-test-v0", HFPolicy(model, tok), tok, n=12, samples=4, sampling=sampling, seed=0)


def test_pairs_put_a_solved_completion_against_an_unsolved_one_of_the_same_prompt(episodes):
    rows, stats = pairs_from_episodes(episodes, 4, max_per_prompt=3)
    assert rows and stats.pairs == len(rows)
    assert stats.paired_prompts + stats.all_solved + stats.none_solved == stats.prompts == 12
    errored = [e for e in episodes if e.error is not None]
    assert stats.errored_episodes == len(errored) > 0
    left_out = {str(e.completions[0]) for e in errored}
    by_prompt: dict[str, int] = {}
    for row in rows:
        assert len(row["chosen"]) % 2 == 0 and len(row["rejected"]) % 2 == 1
        assert row["chosen"] not in left_out and row["rejected"] not in left_out
        assert row["prompt"][0] == {"role": "system", "content": SYSTEM} and row["prompt"][1]["role"] == "user"
        assert (row["chosen_reward"], row["rejected_reward"]) == (1.0, 0.0)
        key = json.dumps(row["prompt"])
        by_prompt[key] = by_prompt.get(key, 0) + 1
    assert max(by_prompt.values()) <= 3 and len(by_prompt) == stats.paired_prompts
    assert len({(r["chosen"], r["rejected"], json.dumps(r["prompt"])) for r in rows}) == len(rows)  # distinct


def test_pair_rows_are_what_reward_model_training_reads(episodes, tok, tmp_path):
    rows, _ = pairs_from_episodes(episodes, 4)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_pairs(str(path), ChatCodec(tok))
    assert len(pairs) == len(rows)
    assert tok.decode(pairs[0].chosen).startswith(f"<|im_start|>system\n{SYSTEM}")


def test_bad_settings_and_multi_turn_tasks_are_errors(episodes, tiny_dir, tok):
    with pytest.raises(TaskConfigError, match="at least 2 samples"):
        pairs_from_episodes(episodes, 1)
    with pytest.raises(TaskConfigError, match="max_per_prompt must be >= 1"):
        pairs_from_episodes(episodes, 4, max_per_prompt=0)
    model = llmenv.models.load_model(tiny_dir)
    sampling = SamplingParams(max_new_tokens=6, temperature=1.0, seed=0)
    dialogue = play("llmenv/math-retry-v0", HFPolicy(model, tok), tok, n=1, samples=2, sampling=sampling)
    with pytest.raises(TaskConfigError, match="single-turn task; an episode of this one took [23] turns"):
        pairs_from_episodes(dialogue, 2)


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmenv.cli", *argv], capture_output=True, text=True, timeout=1200)


def test_cli_reports_what_it_paired_and_rejects_one_sample(tiny_dir, tmp_path):
    out = tmp_path / "pairs.jsonl"
    flags = ["--model", tiny_dir, "--n", "2", "--max-new-tokens", "4", "--out", str(out)]
    made = cli("pairs", "--task", "llmenv/arith-v0", *flags)
    assert made.returncode == 0, made.stdout + made.stderr[-2000:]
    assert "0 pairs from 0 of 2 prompts (0 all solved, 2 none solved" in " ".join(made.stdout.split())
    assert out.exists() and out.read_text() == ""  # a random tiny model solves nothing
    made = cli("pairs", "--task", "llmenv/arith-v0", "--model", tiny_dir, "--samples", "1", "--out", str(out))
    assert made.returncode == 2 and made.stdout.strip() == "error: --samples must be >= 2 to make pairs, got 1"


@pytest.mark.slow
def test_smollm2_pairs_from_the_demo_task_train_a_reward_model(tmp_path):
    out = tmp_path / "pairs.jsonl"
    made = cli("pairs", "--task", "llmenv/arith-demo-v0", "--n", "24", "--samples", "4", "--max-new-tokens", "48",
               "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows, made.stdout  # SmolLM2 solves some samples of some prompts at temperature 1
    trained = cli("train", "rm", "--data", str(out), "--steps", "2", "--batch-size", "2", "--eval-fraction", "0",
                  "--out", str(tmp_path / "rm"), "--bf16")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    logged = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2] and all(r["loss"] > 0 for r in logged)
