"""Process rewards vs the outcome alone: GRPO on `llmenv/arith-chain-v0`, rewarded by a trained PRM or not, 3 seeds.

Run: python benchmarks/process_learning.py [--arms outcome,prm] [--seeds 0,1,2] [--out runs/process]
(in the project's .venv; results go to OUT/results.json and a markdown table on stdout).

The task: two-operation chains ("Start with 8. Subtract 5, then add 3."), solved one equation per line
and the result in `\\boxed{}`; the outcome reward is 1 for the right boxed result (`ChainVerifier`).
First a PRM is trained once on the task's own step data (`llmenv train prm --task ... --param steps=2`,
SmolLM2-135M as a separator token classifier; its held-out step F1 and first-error accuracy are
reported). Then, per seed, the same GRPO command with one difference:

- `outcome`: `--process-weight 0`: the outcome reward only;
- `prm`: `--prm OUT/prm/final`: each line's PRM score is a dense reward at the line's last token,
  turned into DeepSeekMath process advantages on top of the outcome's (both weights 1);
- `exact` (optional): the task's own exact step scores (Math-Shepherd's rule) as process rewards:
  an upper bound for a PRM.

Held-out success is greedy pass@1 on 64 tasks drawn from env seeds at `EVAL_SEED_OFFSET` (never used in
training), with the share of chain steps done right before the first error, for the untrained model and
for each run's `final/`. Training wall time is the `llmenv train` process's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# this folder holds math_verify.py, which would shadow the math_verify package llmenv imports
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

TASK = "llmenv/arith-chain-v0"
PARAMS = ["--param", "steps=2"]
MODEL = "smollm2-135m"
EVAL_N = 64
MAX_NEW_TOKENS = 64

PRM_FLAGS = ["--task", TASK, *PARAMS, "--model", MODEL, "--rows", "2000", "--steps", "120", "--batch-size", "8",
             "--lr", "2e-5", "--bf16", "--eval-every", "60", "--save-every", "0"]  # fmt: skip
GRPO_FLAGS = ["--task", TASK, *PARAMS, "--model", MODEL, "--max-new-tokens", str(MAX_NEW_TOKENS), "--bf16",
              "--save-every", "0", "--steps", "16", "--prompts-per-step", "8", "--group-size", "4",
              "--lr", "2e-5"]  # fmt: skip
ARMS = {"outcome": ["--process-weight", "0"], "prm": ["--prm", "{prm}"], "exact": []}


def held_out(model: str) -> dict[str, float]:
    """Greedy held-out success, and the mean share of steps right before the first error, of `model`."""
    import llmenv  # noqa: F401, PLC0415 - registers the tasks; imported late so --help stays fast
    from llmenv.agents.evaluate import EVAL_SEED_OFFSET, play, score  # noqa: PLC0415
    from llmenv.agents.policy import HFPolicy, SamplingParams  # noqa: PLC0415
    from llmenv.models import load_model, load_tokenizer  # noqa: PLC0415

    started = time.perf_counter()
    tokenizer = load_tokenizer(model)
    policy = HFPolicy(load_model(model), tokenizer, batch_size=32)
    sampling = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, seed=EVAL_SEED_OFFSET)
    episodes = play(TASK, policy, tokenizer, n=EVAL_N, sampling=sampling, batch_size=32, seed=EVAL_SEED_OFFSET,
                    task_params={"steps": 2})  # fmt: skip
    return {
        "success": score(TASK, episodes, 1).pass_at_1,
        "steps_right": statistics.mean(e.verdicts[-1].parts["steps_right"] for e in episodes),
        "eval_s": time.perf_counter() - started,
    }


def run(command: list[str], what: str) -> float:
    """Run an `llmenv` command line in a fresh process; its wall seconds (SystemExit with its stderr on failure)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmenv.cli", *command], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    """Train the PRM, then every (arm, seed); evaluate, print the table and write results.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="outcome,prm")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/process")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if "before" not in results:
        results["before"] = held_out(MODEL)
        results_path.write_text(json.dumps(results, indent=2))
    print(f"before training: success {results['before']['success']:.1%}", flush=True)
    prm = out / "prm"
    if "prm" in args.arms.split(",") and "prm_training" not in results:
        command = ["train", "prm", *PRM_FLAGS, "--out", str(prm)]
        train_s = run(command, "PRM training")
        rows = [json.loads(line) for line in (prm / "metrics.jsonl").read_text().splitlines()]
        held = [r for r in rows if "eval_step_f1" in r][-1]
        results["prm_training"] = {"train_s": train_s, "command": "llmenv " + " ".join(command),
                                   **{k: v for k, v in held.items() if k.startswith("eval_")}}  # fmt: skip
        results_path.write_text(json.dumps(results, indent=2))
        print(f"PRM: held-out step F1 {held['eval_step_f1']:.3f} in {train_s / 60:.1f} min", flush=True)
    for arm in args.arms.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            key = f"{arm}-s{seed}"
            if key in results:
                continue
            flags = [flag.format(prm=prm / "final") for flag in ARMS[arm]]
            command = ["train", "grpo", *GRPO_FLAGS, *flags, "--seed", str(seed), "--out", str(out / key)]
            train_s = run(command, key)
            rows = [json.loads(line) for line in (out / key / "metrics.jsonl").read_text().splitlines()]
            after = held_out(str(out / key / "final"))
            results[key] = {**after, "train_s": train_s, "last_reward": rows[-1]["reward_mean"],
                            "steps_mean": statistics.mean(r["steps_mean"] for r in rows),
                            "command": "llmenv " + " ".join(command), "load": os.getloadavg()[0]}  # fmt: skip
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{key}: success {after['success']:.1%} after {train_s / 60:.1f} min of training", flush=True)
    print(table(results))


def table(results: dict) -> str:
    """The markdown summary: per run, then mean and range per arm."""
    before = results["before"]
    runs = {k: v for k, v in results.items() if k not in ("before", "prm_training")}
    lines = ["| arm | seed | held-out success before -> after | steps right before -> after | train min |"]
    lines.append("|---|---|---|---|---|")
    for key, row in runs.items():
        arm, seed = key.rsplit("-s", 1)
        lines.append(
            f"| {arm} | {seed} | {before['success']:.1%} -> {row['success']:.1%} | "
            f"{before['steps_right']:.1%} -> {row['steps_right']:.1%} | {row['train_s'] / 60:.1f} |"
        )
    for arm in sorted({k.rsplit("-s", 1)[0] for k in runs}):
        after = [row["success"] for k, row in runs.items() if k.startswith(arm + "-s")]
        steps = [row["steps_right"] for k, row in runs.items() if k.startswith(arm + "-s")]
        lines.append(
            f"| **{arm}** | mean of {len(after)} | {before['success']:.1%} -> **{statistics.mean(after):.1%}** "
            f"(range {min(after):.1%}-{max(after):.1%}) | {before['steps_right']:.1%} -> "
            f"{statistics.mean(steps):.1%} | |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
