"""Held-out success before and after training, for learner commands on a task over seeds: the learning figures.

Run: python benchmarks/learning.py --suite NAME [--learners A,B] [--seeds 0,1,2] [--out DIR]
[--extra "LEARNER: FLAGS"] (in the project's .venv; results go to OUT/results.json, a markdown table to
stdout; `--extra` appends flags to that learner's command, overriding the suite's). Suites:

- `demo`: `llmenv/arith-demo-v0` (one-digit `+`/`-` with the demo's shaped reward: correct boxed answer
  1 + exactly one `\\boxed{}` holding a whole number 0.5 + correct final number 0.25), GRPO as `llmenv
  demo` runs it, and on the same episodes per step (8 prompts x 4 samples, 20 steps) online DPO, SPIN
  (`spin`: chosen = the reference answer as `\\boxed{N}`, two iterations) and rejection-sampling
  fine-tuning (`rft`: SFT on the verified successes);
- `multiturn`: `llmenv/arith-retry-demo-v0` (a wrong answer gets feedback and one more attempt), GRPO,
  PPO and online DPO (`benchmarks/multiturn_learning.py` runs this suite).

For each learner and seed the real command line runs in a fresh process (`llmenv train LEARNER ...
--seed S`), then greedy held-out success of `OUT/<learner>-s<S>/final` is measured on 64 tasks drawn from
env seeds at `EVAL_SEED_OFFSET` (never used for training), and once for the untrained model (greedy and
fixed tasks: "before" is one number). Training wall time is the `llmenv train` process's.
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

MODEL = "smollm2-135m"
EVAL_N = 64
MAX_NEW_TOKENS = 32
COMMON = ["--model", MODEL, "--max-new-tokens", str(MAX_NEW_TOKENS), "--save-every", "0"]
"""Plus `--bf16` where the CPU runs bf16 natively (`trainer.native_bf16`; emulated bf16 is far slower than fp32)."""

SUITES: dict[str, dict] = {
    "demo": {
        "task": "llmenv/arith-demo-v0",
        "flags": {
            "grpo": ["--steps", "20", "--prompts-per-step", "8", "--group-size", "4", "--lr", "2e-5"],
            "online-dpo": ["--steps", "20", "--prompts-per-step", "8", "--group-size", "4", "--lr", "2e-5",
                           "--beta", "0.1"],
            "spin": ["--spin", "--spin-iterations", "2", "--spin-template", "\\boxed{{answer}}", "--steps", "20",
                     "--prompts-per-step", "8", "--group-size", "4", "--lr", "2e-5", "--beta", "0.1"],
            "rft": ["--steps", "20", "--prompts-per-step", "8", "--samples", "4", "--lr", "2e-5"],
        },
    },
    "multiturn": {
        "task": "llmenv/arith-retry-demo-v0",
        "flags": {
            "grpo": ["--steps", "20", "--prompts-per-step", "8", "--group-size", "4", "--lr", "2e-5"],
            "ppo": [
                "--steps", "16", "--prompts-per-step", "32", "--group-size", "1", "--lr", "4e-5",
                "--critic", "head", "--critic-lr", "1e-4", "--epochs", "1", "--minibatches", "2", "--kl-coef", "0",
                "--entropy-coef", "0.01",
            ],
            "online-dpo": ["--steps", "20", "--prompts-per-step", "8", "--group-size", "4", "--lr", "2e-5",
                           "--beta", "0.1"],
        },
    },
}  # fmt: skip
"""Every learner sees 32 episodes per step. PPO runs 16 steps at twice GRPO's lr with an entropy bonus
(without it, PPO's entropy fell from 1.8 to 0.1 in about 12 updates and one seed of three settled on a
shaping optimum; BENCHMARKS.md "Multi-turn training")."""

COMMANDS = {"spin": "online-dpo", "rft": "sft"}
"""The `llmenv train` subcommand of a suite entry not named after one: SPIN is online DPO's `--spin` mode,
rejection-sampling fine-tuning (RFT) is `llmenv train sft --task ID --samples K`."""


def held_out_success(task: str, model: str) -> dict[str, float]:
    """Greedy held-out success and mean reward of `model` on `task` (EVAL_N tasks at EVAL_SEED_OFFSET)."""
    import llmenv  # noqa: F401, PLC0415 - registers the tasks; imported late so --help stays fast
    from llmenv.agents.evaluate import evaluate  # noqa: PLC0415
    from llmenv.models import load_model, load_tokenizer  # noqa: PLC0415

    started = time.perf_counter()
    result = evaluate(
        task, load_model(model), load_tokenizer(model), n=EVAL_N, max_new_tokens=MAX_NEW_TOKENS, batch_size=32
    )
    return {"success": result.pass_at_1, "mean_reward": result.mean_reward, "eval_s": time.perf_counter() - started}


def run_suite(suite: str, learners: list[str], seeds: list[int], out: Path, extra: dict[str, list[str]]) -> dict:
    """Train every (learner, seed) of `suite` and measure it, resuming from OUT/results.json; the results."""
    from llmenv.agents.trainer import native_bf16  # noqa: PLC0415

    task, flags = SUITES[suite]["task"], SUITES[suite]["flags"]
    common = COMMON + (["--bf16"] if native_bf16("cpu") else [])
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if "before" not in results:
        results["before"] = held_out_success(task, MODEL)
        results_path.write_text(json.dumps(results, indent=2))
    print(f"before training: success {results['before']['success']:.1%}", flush=True)
    for learner in learners:
        for seed in seeds:
            key = f"{learner}-s{seed}"
            command = [sys.executable, "-m", "llmenv.cli", "train", COMMANDS.get(learner, learner), "--task", task]
            command += [*common, *flags[learner]]
            command += [*extra.get(learner, []), "--seed", str(seed), "--out", str(out / key)]
            started = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True)
            train_s = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"{key} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            rows = [json.loads(line) for line in (out / key / "metrics.jsonl").read_text().splitlines()]
            after = held_out_success(task, str(out / key / "final"))
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
    return results


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


def main(suite: str | None = None, default_out: str | None = None) -> None:
    """Parse the flags, run the suite (`--suite`, unless a wrapper script names it), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if suite is None:
        parser.add_argument("--suite", required=True, choices=sorted(SUITES))
    parser.add_argument("--learners", default=None, help="comma-separated (default: every learner of the suite)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=None, help="default: runs/<suite>-learning")
    parser.add_argument("--extra", action="append", default=[], help='"LEARNER: FLAGS" appended to its command')
    args = parser.parse_args()
    suite = suite or args.suite
    flags = SUITES[suite]["flags"]
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        learner, _, more = item.partition(":")
        if learner.strip() not in flags:
            parser.error(f"--extra {item!r}: expected 'LEARNER: FLAGS' with LEARNER one of {sorted(flags)}")
        extra.setdefault(learner.strip(), []).extend(shlex.split(more))
    learners = args.learners.split(",") if args.learners else list(flags)
    unknown = [name for name in learners if name not in flags]
    if unknown:
        parser.error(f"--learners {args.learners!r}: {unknown} not in suite {suite} ({sorted(flags)})")
    out = Path(args.out or default_out or f"runs/{suite}-learning")
    results = run_suite(suite, learners, [int(s) for s in args.seeds.split(",")], out, extra)
    print(table(results))


if __name__ == "__main__":
    main()
