"""Side by side: Bradley-Terry reward-model training with `llmenv train rm` and with TRL 1.16's `RewardTrainer`.

Run: python benchmarks/rm_vs_trl.py [--steps 30] [--batch-size 8] [--rounds 3] [--trl-path DIR]
(in the project's .venv; TRL 1.16 is imported from `--trl-path`, e.g. a folder made with
`pip install --no-deps --target .trl-side "trl==1.16.*"`: its dependencies are already in the venv).

The same job for both, each in its own fresh Python process, alternating for `--rounds` rounds:

- model: the embedded SmolLM2-135M-Instruct as a one-output sequence-classification model whose new
  head is drawn once with torch seed 0 and saved, so both sides start from the same weights; fp32, CPU;
- pairs: one-digit `+`/`-` problems (the demo's tasks, env seeds 0..), chosen = "The answer is
  \\boxed{right}.", rejected = the same sentence with a wrong number (right +- 1..3); `steps x batch`
  training pairs and 64 held-out pairs from other seeds;
- tokens: llmenv's (`read_pairs`: the chat template, the scored index at the end-of-turn token); TRL gets
  those exact ids, cut after the scored token, as a pre-tokenised dataset (`chosen_ids`/`rejected_ids`).
  SmolLM2 pads with its end-of-turn token `<|im_end|>`, and transformers' pooling reads the last token
  that is not the pad token, so TRL would score every sequence one token before its end; TRL's side
  pads with `<|endoftext|>` instead (absent from these sequences), so both read the same position.
  The loss TRL's pooling gives with its default pad is reported too (`trl_default_pad_step0_loss`);
- optimisation: AdamW lr 1e-5 constant, no warmup, weight decay 0, grad-norm clip 1.0, one forward
  of the whole batch (both sides), no gradient checkpointing, no bf16, no saving (llmenv
  `save_every=0`, `save_final=False`; TRL `save_strategy="no"`), dropout off (SmolLM2 has none).

Figures: the step-0 loss on the same first batch (llmenv's first-step loss; TRL's `compute_loss` on
the same pairs before training), seconds per step (median over the run's steps), whole-process wall
time, peak RSS (each worker's own `ru_maxrss`), and held-out pair accuracy after the steps, measured for
both trained models by the same function (rewards at the explicit end index). The data orders differ
(each side shuffles with its own seeded sampler), so the accuracies are not expected to be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

# this folder holds math_verify.py, which would shadow the math_verify package llmenv imports: it goes last
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

from sidebyside import main as sidebyside_main  # noqa: E402 - needs the path above
from sidebyside import timings, trl_step_timer  # noqa: E402

HELD_OUT = 64
HELD_OUT_SEED = 10**6
LR = 1e-5


def write_pairs(path: Path, n: int, first_seed: int) -> None:
    """`n` arithmetic pairs (right vs wrong boxed answer) from env seeds first_seed.. as JSONL."""
    import numpy as np

    from llmenv.tasks.arith import DEMO_PARAMS, generate_arith

    params = {k: v for k, v in DEMO_PARAMS.items() if k != "system_prompt"}
    with path.open("w") as fh:
        for seed in range(first_seed, first_seed + n):
            rng = np.random.default_rng(seed)
            task = generate_arith(rng, **params)
            wrong = int(task.answer) + int(rng.choice([-3, -2, -1, 1, 2, 3]))
            row = {"prompt": task.prompt, "chosen": f"The answer is \\boxed{{{task.answer}}}.",
                   "rejected": f"The answer is \\boxed{{{wrong}}}."}  # fmt: skip
            fh.write(json.dumps(row) + "\n")


def prepare(work: Path, args: argparse.Namespace) -> dict:
    """The shared start: pairs on disk and the initial reward model (seeded head) saved once."""
    import torch

    from llmenv.models import load_reward_model, load_tokenizer, resolve_model_dir

    if args.steps < 2:  # llmenv's last step also runs the held-out evaluation, so it is not timed
        raise SystemExit(f"--steps must be at least 2 (the last step is left out of the timing), got {args.steps}")
    write_pairs(work / "train.jsonl", args.steps * args.batch_size, 0)
    write_pairs(work / "held.jsonl", HELD_OUT, HELD_OUT_SEED)
    torch.manual_seed(0)
    source = resolve_model_dir("smollm2-135m")
    load_reward_model(source).save_pretrained(work / "init")
    load_tokenizer(source).save_pretrained(work / "init")
    return {"init": str(work / "init"), "train": str(work / "train.jsonl"), "held": str(work / "held.jsonl"),
            "steps": args.steps, "batch_size": args.batch_size, "seed": 0}  # fmt: skip


def held_out_accuracy(model, tokenizer, held: str) -> float:
    """Share of held-out pairs whose chosen side the model scores higher (the explicit end index)."""
    import torch

    from llmenv.agents import rm
    from llmenv.chat import ChatCodec

    pairs = rm.read_pairs(held, ChatCodec(tokenizer))
    state = SimpleNamespace(model=model.eval(), tokenizer=tokenizer, device=torch.device("cpu"),
                            config=SimpleNamespace(bf16=False, micro_batch=16), eval_pairs=pairs)  # fmt: skip
    return rm.evaluate(state)["eval_accuracy"]  # type: ignore[arg-type]


def first_batch(spec: dict, tokenizer) -> list:
    """The pairs of llmenv's first step (its seeded epoch order), as encoded pairs."""
    from llmenv.agents import rm
    from llmenv.chat import ChatCodec

    pairs = rm.read_pairs(spec["train"], ChatCodec(tokenizer))
    picked = rm.step_pairs(SimpleNamespace(train_pairs=pairs, config=SimpleNamespace(**spec)), 0)  # type: ignore[arg-type]
    return [pairs[i] for i in picked]


def worker_ours(spec: dict) -> dict:
    """`llmenv.agents.rm.train` on the job; step times from its metrics."""
    from llmenv.agents import rm
    from llmenv.agents.rm import RMConfig

    with tempfile.TemporaryDirectory() as out:
        config = RMConfig(model=spec["init"], data=spec["train"], eval_data=spec["held"], steps=spec["steps"],
                          batch_size=spec["batch_size"], lr=LR, micro_batch=2 * spec["batch_size"], seed=spec["seed"],
                          save_every=0, save_final=False, eval_every=10**9, out=out)  # fmt: skip
        state = rm.train(config, progress=False)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {
        "step0_loss": rows[0]["loss"],
        "step_s": [r["step_time_s"] for r in rows[:-1]],  # the last step also ran the held-out evaluation
        "held_out_accuracy": held_out_accuracy(state.model, state.tokenizer, spec["held"]),
        "logged_eval_accuracy": rows[-1].get("eval_accuracy"),
    }


def trl_row(pair) -> dict:
    """A pair as TRL's pre-tokenised row: llmenv's ids, each cut after its scored token."""
    return {"chosen_ids": pair.chosen[: pair.chosen_end + 1], "rejected_ids": pair.rejected[: pair.rejected_end + 1]}


def worker_trl(spec: dict) -> dict:
    """TRL 1.16 `RewardTrainer` on llmenv's exact token ids (pad token `<|endoftext|>`); step times by callback."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    assert trl.__version__.startswith("1.16"), trl.__version__
    tokenizer = AutoTokenizer.from_pretrained(spec["init"])
    from llmenv.agents import rm
    from llmenv.chat import ChatCodec

    pairs = rm.read_pairs(spec["train"], ChatCodec(tokenizer))
    rows = [trl_row(p) for p in pairs]
    tokenizer.pad_token = "<|endoftext|>"
    model = AutoModelForSequenceClassification.from_pretrained(spec["init"], dtype=torch.float32)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(output_dir=out, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
                            learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                            max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none",
                            seed=spec["seed"], gradient_checkpointing=False, bf16=False, use_cpu=True,
                            max_length=None, dataloader_num_workers=0)  # fmt: skip
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=tokenizer, callbacks=[trl_step_timer(times)])  # fmt: skip
        batch = [trl_row(p) for p in first_batch(spec, tokenizer)]
        with torch.no_grad():
            trainer.model.train()
            step0 = float(trainer.compute_loss(trainer.model, trainer.data_collator(batch)))
            eos_pad = trainer.model.config.pad_token_id
            trainer.model.config.pad_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")  # TRL's default pad
            default_pad = float(trainer.compute_loss(trainer.model, trainer.data_collator(batch)))
            trainer.model.config.pad_token_id = eos_pad
        trainer.train()
    return {
        "step0_loss": step0,
        "trl_default_pad_step0_loss": default_pad,
        "step_s": times,
        "held_out_accuracy": held_out_accuracy(trainer.model, tokenizer, spec["held"]),
    }


def main() -> None:
    """Prepare the shared job, run the sides alternately, print a table and write JSON."""
    sidebyside_main(
        __file__,
        __doc__,
        prepare=prepare,
        workers={"ours": worker_ours, "trl": worker_trl},
        summarise=summarise,
        table=table,
        steps=30,
        rounds=3,
        out="runs/rm_vs_trl.json",
        anchor="trl 1.16",
    )


def summarise(results: list[dict]) -> dict:
    """Medians over rounds (step seconds: the median of each run's median step)."""
    return {
        "step0_loss": results[0]["step0_loss"],
        "step0_losses_equal_across_rounds": len({round(r["step0_loss"], 7) for r in results}) == 1,
        "trl_default_pad_step0_loss": results[0].get("trl_default_pad_step0_loss"),
        **timings(results),
        "held_out_accuracy": [r["held_out_accuracy"] for r in results],
    }


def table(summary: dict) -> str:
    """The markdown table of the two sides and their ratios."""
    ours, trl = summary["ours"], summary["trl"]
    lines = [
        "| | llmenv | TRL 1.16 | TRL / llmenv |",
        "|---|---|---|---|",
        f"| step-0 loss (same batch) | {ours['step0_loss']:.6f} | {trl['step0_loss']:.6f} | "
        f"diff {abs(ours['step0_loss'] - trl['step0_loss']):.1e} |",
        f"| TRL with its default pad (= EOS) | | {trl['trl_default_pad_step0_loss']:.6f} | |",
        f"| s/step (median) | {ours['step_s']:.3f} | {trl['step_s']:.3f} | {trl['step_s'] / ours['step_s']:.2f}x |",
        f"| whole process s (median) | {ours['wall_s']:.1f} | {trl['wall_s']:.1f} | "
        f"{trl['wall_s'] / ours['wall_s']:.2f}x |",
        f"| peak RSS MB (median) | {ours['peak_rss_mb']:.0f} | {trl['peak_rss_mb']:.0f} | "
        f"{trl['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x |",
        f"| held-out pair accuracy (per round) | {fmt(ours['held_out_accuracy'])} | "
        f"{fmt(trl['held_out_accuracy'])} | |",
    ]
    return "\n".join(lines)


def fmt(values: list[float]) -> str:
    """Percentages, comma-separated."""
    return ", ".join(f"{v:.1%}" for v in values)


if __name__ == "__main__":
    main()
