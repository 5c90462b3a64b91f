"""Does training on a multi-turn task raise held-out success? GRPO and PPO on `llmenv/arith-retry-demo-v0`, 3 seeds.

Run: python benchmarks/multiturn_learning.py [--learners grpo,ppo] [--seeds 0,1,2] [--out runs/multiturn]
[--extra "ppo: --entropy-coef 0.01"] (in the project's .venv; results go to OUT/results.json and a markdown
table on stdout; `--extra LEARNER: FLAGS` appends flags to that learner's command, overriding FLAGS).

The task: one-digit `+`/`-` problems with the demo's system prompt; a wrong answer gets feedback ("Your
answer 7 is not correct. Check your work and try again.", or, when the correct part read no answer, as for a
number left unboxed, a request to write it as `\\boxed{N}`) and one more attempt, so a failed first attempt
makes an episode of two policy turns with env tokens between them. Each attempt earns the demo's
shaped reward (correct boxed answer 1 + exactly one `\\boxed{}` holding a whole number 0.5 + correct final
number 0.25) times 0.5 per earlier attempt. Success = the episode's final attempt is correct.

For each learner and seed the script runs the real command line in a fresh process (`llmenv train grpo|ppo
... --seed S`, flags below), then measures greedy held-out success of `OUT/<learner>-s<S>/final` on 64 tasks
drawn from env seeds at `EVAL_SEED_OFFSET` (never used for training), and once for the untrained model
(greedy and the held-out tasks are fixed, so "before" is one number). Training wall time is the `llmenv
train` process's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

# this folder holds math_verify.py, which would shadow the math_verify package llmenv imports
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

TASK = "llmenv/arith-retry-demo-v0"
MODEL = "smollm2-135m"
EVAL_N = 64
MAX_NEW_TOKENS = 32

COMMON = [
    "--task", TASK, "--model", MODEL, "--max-new-tokens", str(MAX_NEW_TOKENS), "--bf16", "--save-every", "0",
]  # fmt: skip
FLAGS = {
    "grpo": ["--steps", "20", "--prompts-per-step", "8", "--group-size", "4", "--lr", "2e-5"],
    "ppo": [
        "--steps", "16", "--prompts-per-step", "32", "--group-size", "1", "--lr", "4e-5",
        "--critic", "head", "--critic-lr", "1e-4", "--epochs", "1", "--minibatches", "2", "--kl-coef", "0",
        "--entropy-coef", "0.01",
    ],
}  # fmt: skip
"""Both learners see 32 episodes per step: GRPO for 20 steps (as `llmenv demo`), PPO for 16 at twice its lr,
with an entropy bonus (without it, PPO's entropy fell from 1.8 to 0.1 in about 12 updates and one seed of
three settled on a shaping optimum; BENCHMARKS.md "Multi-turn training")."""


def held_out_success(model: str) -> dict[str, float]:
    """Greedy held-out success and mean reward of `model` on the task (EVAL_N tasks at EVAL_SEED_OFFSET)."""
    import llmenv  # noqa: F401, PLC0415 - registers the tasks; imported late so --help stays fast
    from llmenv.agents.evaluate import evaluate  # noqa: PLC0415
    from llmenv.models import load_model, load_tokenizer  # noqa: PLC0415

    started = time.perf_counter()
    result = evaluate(
        TASK, load_model(model), load_tokenizer(model), n=EVAL_N, max_new_tokens=MAX_NEW_TOKENS, batch_size=32
    )
    return {"success": result.pass_at_1, "mean_reward": result.mean_reward, "eval_s": time.perf_counter() - started}


def main() -> None:
    """Train every (learner, seed), evaluate, print the table and write results.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", default="grpo,ppo")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/multiturn")
    parser.add_argument("--extra", action="append", default=[], help='"LEARNER: FLAGS" appended to its command')
    args = parser.parse_args()
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        learner, _, flags = item.partition(":")
        if learner.strip() not in FLAGS:
            parser.error(f"--extra {item!r}: expected 'LEARNER: FLAGS' with LEARNER one of {sorted(FLAGS)}")
        extra.setdefault(learner.strip(), []).extend(shlex.split(flags))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if "before" not in results:
        results["before"] = held_out_success(MODEL)
        results_path.write_text(json.dumps(results, indent=2))
    print(f"before training: success {results['before']['success']:.1%}", flush=True)
    for learner in args.learners.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            key = f"{learner}-s{seed}"
            command = [sys.executable, "-m", "llmenv.cli", "train", learner, *COMMON, *FLAGS[learner]]
            command += extra.get(learner, [])
            command += ["--seed", str(seed), "--out", str(out / key)]
            started = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True)
            train_s = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"{key} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            rows = [json.loads(line) for line in (out / key / "metrics.jsonl").read_text().splitlines()]
            after = held_out_success(str(out / key / "final"))
            results[key] = {
                **after,
                "train_s": train_s,
                "turns_mean": statistics.mean(r["turns_mean"] for r in rows),
                "last_reward": rows[-1]["reward_mean"],
                "command": "llmenv " + " ".join(command[3:]),
                "load": os.getloadavg()[0],
            }
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{key}: success {after['success']:.1%} after {train_s / 60:.1f} min of training", flush=True)
    print(table(results))


def table(results: dict) -> str:
    """The markdown summary: per run, then mean and range per learner."""
    before = results["before"]["success"]
    lines = ["| learner | seed | held-out success before -> after | train min | turns/episode |"]
    lines.append("|---|---|---|---|---|")
    for key, row in results.items():
        if key == "before":
            continue
        learner, seed = key.rsplit("-s", 1)
        lines.append(
            f"| {learner} | {seed} | {before:.1%} -> {row['success']:.1%} | {row['train_s'] / 60:.1f} "
            f"| {row['turns_mean']:.2f} |"
        )
    for learner in sorted({k.rsplit("-s", 1)[0] for k in results if k != "before"}):
        after = [row["success"] for k, row in results.items() if k.startswith(learner + "-s")]
        lines.append(
            f"| **{learner}** | mean of {len(after)} | {before:.1%} -> **{statistics.mean(after):.1%}** "
            f"(range {min(after):.1%}-{max(after):.1%}) | | |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
