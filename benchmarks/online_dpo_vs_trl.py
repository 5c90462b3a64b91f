"""Side by side: online DPO with `llmenv train online-dpo` and with TRL 1.16's experimental `OnlineDPOTrainer`.

Run: python benchmarks/online_dpo_vs_trl.py [--steps 20] [--prompts 8] [--seeds 0,1,2] [--trl-path DIR]
(in the project's .venv; TRL 1.16 from `--trl-path`, a folder made with
`pip install --no-deps --target DIR "trl==1.16.*"`).

The same job for both, each run in its own fresh Python process, the sides alternating per seed:

- task: `llmenv/arith-demo-v0` (one-digit `+`/`-`, the demo's system prompt and shaped reward: correct boxed
  answer 1 + exactly one `\\boxed{}` holding a whole number 0.5 + correct final number 0.25). TRL's
  reward function is the task's own verifier called on each completion's text;
- model: the embedded SmolLM2-135M-Instruct, fp32, CPU; the reference a frozen copy of it; sigmoid DPO,
  beta 0.1; AdamW lr 5e-6 constant, clip 1.0;
- per step: `--prompts` prompts, two samples each (TRL's fixed pair; llmenv `--group-size 2`), temperature
  1.0, top-p 1, at most 32 new tokens. TRL pairs the two samples whatever their rewards (a tie picks the
  first as chosen); llmenv drops tied pairs (`ties`) and pairs only samples the reward separates;
- prompts: llmenv draws its tasks from the env's training seeds; TRL gets a dataset of the same number
  of prompts (the env's rendered messages for seeds from the same range) and samples them in its own order;
- TRL's `gradient_checkpointing`, on by default in its OnlineDPOConfig, is turned off: with it on, TRL
  generates without a KV cache (`use_cache=False`), which made one 20-step run take over 20 minutes here;
  llmenv does not checkpoint either.

Figures: seconds per step (median; llmenv's `step_time_s`, TRL's by callback; both include generation,
scoring and the update), whole-process wall time, peak RSS, and greedy held-out success after the same
steps on the same 64 held-out tasks (`agents/evaluate`, env seeds at `EVAL_SEED_OFFSET`), per seed and
mean. The untrained model's held-out success is measured once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

# this folder holds math_verify.py, which would shadow the math_verify package llmenv imports: it goes last
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

from sidebyside import run_worker, trl_step_timer, worker_output  # noqa: E402 - needs the path above

TASK = "llmenv/arith-demo-v0"
LR = 5e-6
BETA = 0.1
MAX_NEW_TOKENS = 32
EVAL_N = 64


def held_out(model, tokenizer) -> float:
    """Greedy pass@1 on the task's EVAL_N held-out tasks."""
    from llmenv.agents.evaluate import evaluate

    return evaluate(TASK, model, tokenizer, n=EVAL_N, max_new_tokens=MAX_NEW_TOKENS, batch_size=32).pass_at_1


def worker_ours(spec: dict) -> dict:
    """`llmenv.agents.online_dpo.train` on the job, then the held-out success of the trained model."""
    from llmenv.agents import online_dpo
    from llmenv.agents.online_dpo import OnlineDPOConfig
    from llmenv.testing import metric_rows

    with tempfile.TemporaryDirectory() as out:
        config = OnlineDPOConfig(task=TASK, model=spec["model"], steps=spec["steps"],
                                 prompts_per_step=spec["prompts"], group_size=2, max_new_tokens=MAX_NEW_TOKENS,
                                 temperature=1.0, lr=LR, beta=BETA, micro_batch=2 * spec["prompts"],
                                 seed=spec["seed"], save_every=0, save_final=False, out=out)  # fmt: skip
        state = online_dpo.train(config, progress=False)
        rows = metric_rows(out)
    return {"step_s": [r["step_time_s"] for r in rows], "pairs": [r["pairs"] for r in rows],
            "held_out": held_out(state.model, state.tokenizer)}  # fmt: skip


def worker_trl(spec: dict) -> dict:
    """TRL 1.16 `OnlineDPOTrainer` with the task's verifier as its reward function, then held-out success."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    import llmenv
    from llmenv.agents.trainer import TRAIN_SEED_STRIDE

    assert trl.__version__.startswith("1.16"), trl.__version__
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    env = llmenv.make(TASK, tokenizer=tokenizer)
    verifier = env.unwrapped.verifier
    tasks, rows = [], []
    first = spec["seed"] * TRAIN_SEED_STRIDE
    for i in range(spec["steps"] * spec["prompts"]):
        _, info = env.reset(seed=first + i)
        tasks.append(info["task"])
        rows.append({"prompt": info["messages"], "index": i})

    def task_reward(prompts, completions, index, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(verifier(text, tasks[i]).reward) for text, i in zip(texts, index)]

    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        args = OnlineDPOConfig(output_dir=out, per_device_train_batch_size=spec["prompts"], max_steps=spec["steps"],
                               learning_rate=LR, beta=BETA, lr_scheduler_type="constant", warmup_steps=0,
                               weight_decay=0.0, max_grad_norm=1.0, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0,
                               top_p=1.0, logging_steps=1, save_strategy="no", report_to="none", seed=spec["seed"],
                               use_cpu=True, bf16=False, dataloader_num_workers=0,
                               gradient_checkpointing=False)  # fmt: skip
        trainer = OnlineDPOTrainer(model=model, reward_funcs=task_reward, args=args,
                                   train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                   callbacks=[trl_step_timer(times)])  # fmt: skip
        trainer.train()
    return {"step_s": times, "held_out": held_out(trainer.model.eval(), tokenizer)}


def worker_before(spec: dict) -> dict:
    """The untrained model's held-out success."""
    from llmenv.models import load_model, load_tokenizer

    return {"held_out": held_out(load_model(spec["model"]), load_tokenizer(spec["model"]))}


def table(results: dict) -> str:
    """The markdown table: per seed, then medians and means."""
    ours, trl = results["ours"], results["trl"]
    step = {side: statistics.median(statistics.median(r["step_s"]) for r in runs) for side, runs in results.items()
            if side in ("ours", "trl")}  # fmt: skip
    lines = [
        "| | llmenv | TRL 1.16 | TRL / llmenv |",
        "|---|---|---|---|",
        f"| s/step (median over seeds of each run's median) | {step['ours']:.2f} | {step['trl']:.2f} | "
        f"{step['trl'] / step['ours']:.2f}x |",
        f"| whole process s (median) | {statistics.median(r['wall_s'] for r in ours):.0f} | "
        f"{statistics.median(r['wall_s'] for r in trl):.0f} | |",
        f"| peak RSS MB (median) | {statistics.median(r['peak_rss_mb'] for r in ours):.0f} | "
        f"{statistics.median(r['peak_rss_mb'] for r in trl):.0f} | |",
        f"| held-out success before training | {results['before']:.1%} | {results['before']:.1%} | |",
        f"| held-out success after (per seed) | {percentages(ours)} | {percentages(trl)} | |",
        f"| held-out success after (mean) | {statistics.mean(r['held_out'] for r in ours):.1%} | "
        f"{statistics.mean(r['held_out'] for r in trl):.1%} | |",
        f"| pairs trained per step (llmenv, mean) | {statistics.mean(p for r in ours for p in r['pairs']):.2f} | "
        f"{results['prompts']} (every pair) | |",
    ]
    return "\n".join(lines)


def percentages(runs: list[dict]) -> str:
    """Each run's held-out success, comma-separated."""
    return ", ".join(f"{r['held_out']:.1%}" for r in runs)


def main() -> None:
    """Run the untrained evaluation, then both sides per seed (alternating which goes first)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trl-path", default=None, help="folder holding trl 1.16 (prepended to PYTHONPATH)")
    parser.add_argument("--out", default="runs/online_dpo_vs_trl.json")
    parser.add_argument("--worker", choices=["ours", "trl", "before"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workers = {"ours": worker_ours, "trl": worker_trl, "before": worker_before}
    if args.worker:
        worker_output(workers[args.worker](json.loads(Path(args.spec).read_text())))
        return
    from llmenv.models import resolve_model_dir

    results: dict = {"ours": [], "trl": [], "prompts": args.prompts}
    with tempfile.TemporaryDirectory() as folder:
        spec_path = Path(folder) / "spec.json"
        model = str(resolve_model_dir("smollm2-135m"))
        spec_path.write_text(json.dumps({"model": model}))
        results["before"] = run_worker(__file__, "before", spec_path, None)["held_out"]
        for index, seed in enumerate(int(s) for s in args.seeds.split(",")):
            spec_path.write_text(json.dumps({"model": model, "steps": args.steps, "prompts": args.prompts,
                                             "seed": seed}))  # fmt: skip
            for side in ("ours", "trl") if index % 2 == 0 else ("trl", "ours"):
                results[side].append(run_worker(__file__, side, spec_path, args.trl_path))
                run = results[side][-1]
                print(f"seed {seed} {side}: held-out {run['held_out']:.1%}, {run['wall_s']:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
