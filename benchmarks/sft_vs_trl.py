"""Side by side: supervised fine-tuning with `llmenv train sft` and with TRL 1.16's `SFTTrainer`.

Run: python benchmarks/sft_vs_trl.py [--steps 20] [--batch-size 8] [--rounds 2] [--trl-path DIR]
(OMP_NUM_THREADS=1 for both sides when other jobs share the cores: see BENCHMARKS.md)
(in the project's .venv; TRL 1.16 is imported from `--trl-path`, e.g. a folder made with
`pip install --no-deps --target /work/trl-side "trl==1.16.*"`: its dependencies are already in the venv).

The same job for both, each in its own fresh Python process, alternating for `--rounds` rounds:

- model: the embedded SmolLM2-135M-Instruct, fp32, CPU, the same weights on both sides;
- rows: `{prompt, completion}` made at benchmark time from the demo's one-digit `+`/`-` problems
  (`llmenv/arith-demo-v0`'s generator, env seeds 0..), completion = "The answer is \\boxed{N}." with the
  task's reference answer; `steps x batch` rows;
- tokens: llmenv's (`sft.encode_rows`: SmolLM2's chat template, the mask on the completion and its
  `<|im_end|>`); TRL gets those exact ids, with labels -100 off the mask, as a pre-tokenised dataset.
  What TRL's own tokenisation of the same rows gives is reported too: its completion mask is
  everything after the prompt, so it also trains on the newline the template writes after `<|im_end|>`;
- optimisation: AdamW lr 1e-5 constant, no warmup, weight decay 0, grad-norm clip 1.0, one forward
  of the whole batch (both sides), no gradient checkpointing, no bf16, no saving (llmenv
  `save_every=0`, `save_final=False`; TRL `save_strategy="no"`), no held-out rows.

Figures: the step-0 loss on the same first batch (llmenv's first-step loss; TRL's `compute_loss` on
the same rows before training; both the mean NLL per trained token of the batch), seconds per step
(median over the run's steps), whole-process wall time and peak RSS (each worker's own `ru_maxrss`).
Each step's logged loss is compared too: with seed 0 llmenv's seeded epoch order may equal the one
TRL's sampler draws (as in the PRM benchmark), and then the two runs are the same computation.
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

LR = 1e-5
LOSS_TOLERANCE = 1e-4
"""Step-0 losses within this (absolute) count as equal: fp32 sums in a different order on each side."""


def write_rows(path: Path, n: int) -> None:
    """`n` SFT rows (a one-digit problem, its boxed reference answer) from env seeds 0.. as JSONL."""
    import numpy as np

    from llmenv.tasks.arith import DEMO_PARAMS, generate_arith

    params = {k: v for k, v in DEMO_PARAMS.items() if k != "system_prompt"}
    with path.open("w") as fh:
        for seed in range(n):
            task = generate_arith(np.random.default_rng(seed), **params)
            fh.write(
                json.dumps({"prompt": task.prompt, "completion": f"The answer is \\boxed{{{task.answer}}}."}) + "\n"
            )


def prepare(work: Path, args: argparse.Namespace) -> dict:
    """The shared start: rows on disk and the model folder."""
    from llmenv.models import resolve_model_dir

    write_rows(work / "train.jsonl", args.steps * args.batch_size)
    return {"model": str(resolve_model_dir("smollm2-135m")), "train": str(work / "train.jsonl"), "steps": args.steps,
            "batch_size": args.batch_size, "seed": 0}  # fmt: skip


def encoded(spec: dict, tokenizer) -> list:
    """llmenv's encoding of the rows (ids and loss masks)."""
    from llmenv.agents import sft
    from llmenv.agents.data import read_rows
    from llmenv.chat import ChatCodec

    return sft.encode_rows(read_rows(spec["train"], sft.SFT_FORMAT), ChatCodec(tokenizer))


def first_batch(spec: dict) -> list[int]:
    """The row indices of llmenv's first step (its seeded epoch order)."""
    from llmenv.agents.data import epoch_batch

    cfg = SimpleNamespace(**spec)
    return epoch_batch(cfg.steps * cfg.batch_size, cfg.batch_size, cfg.seed, 0)


def worker_ours(spec: dict) -> dict:
    """`llmenv.agents.sft.train` on the job; step times from its metrics."""
    from llmenv.agents import sft
    from llmenv.agents.sft import SFTConfig

    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(model=spec["model"], data=spec["train"], eval_fraction=0.0, steps=spec["steps"],
                           batch_size=spec["batch_size"], lr=LR, micro_batch=spec["batch_size"], seed=spec["seed"],
                           save_every=0, save_final=False, out=out)  # fmt: skip
        sft.train(config, progress=False)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {"step0_loss": rows[0]["loss"], "step_s": [r["step_time_s"] for r in rows],
            "losses": [r["loss"] for r in rows]}  # fmt: skip


def labelled(row) -> dict:
    """An llmenv row as TRL's pre-tokenised row: its ids, labels -100 off the loss mask."""
    return {"input_ids": row.ids, "labels": [i if m else -100 for i, m in zip(row.ids, row.loss_mask)]}


def worker_trl(spec: dict) -> dict:
    """TRL 1.16 `SFTTrainer` on llmenv's exact ids and masks; step times by callback; its own tokenisation's loss."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    assert trl.__version__.startswith("1.16"), trl.__version__
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    rows = encoded(spec, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    picked = first_batch(spec)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
                         learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                         max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none", seed=spec["seed"],
                         gradient_checkpointing=False, bf16=False, use_cpu=True, max_length=None,
                         dataloader_num_workers=0)  # fmt: skip
        raw = [json.loads(line) for line in Path(spec["train"]).read_text().splitlines()]
        conversational = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                             "completion": [{"role": "assistant", "content": r["completion"]}]}
                                            for r in raw])  # fmt: skip
        own = SFTTrainer(model=model, args=args, train_dataset=conversational, processing_class=tokenizer)
        own_rows = [own.train_dataset[i] for i in picked]
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([labelled(r) for r in rows]),
                             processing_class=tokenizer, callbacks=[trl_step_timer(times)])  # fmt: skip
        with torch.no_grad():
            trainer.model.train()
            batch = trainer.data_collator([labelled(rows[i]) for i in picked])
            step0 = float(trainer.compute_loss(trainer.model, batch))
            own_batch = own.data_collator([{k: r[k] for k in ("input_ids", "labels")} for r in own_rows])
            own_step0 = float(trainer.compute_loss(trainer.model, own_batch))
        same_ids = all(r["input_ids"] == rows[i].ids for r, i in zip(own_rows, picked))
        extra = int((own_batch["labels"] != -100).sum() - (batch["labels"] != -100).sum())
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]  # logged rounded to 4 decimals
    return {"step0_loss": step0, "step_s": times, "losses": losses, "own_tokenisation_step0_loss": own_step0,
            "own_tokenisation_same_ids": same_ids, "own_tokenisation_extra_trained_tokens": extra}  # fmt: skip


def main() -> None:
    """Prepare the shared job, run the sides alternately, print a table and write JSON."""
    sidebyside_main(
        __file__,
        __doc__,
        prepare=prepare,
        workers={"ours": worker_ours, "trl": worker_trl},
        summarise=summarise,
        table=table,
        steps=20,
        rounds=2,
        out="runs/sft_vs_trl.json",
        anchor="trl 1.16",
    )


def summarise(results: list[dict]) -> dict:
    """Medians over rounds (step seconds: the median of each run's median step); the first round's extras."""
    extras = {k: v for k, v in results[0].items() if k not in ("step_s", "wall_s", "peak_rss_mb")}
    return {
        **extras,
        "step0_losses_equal_across_rounds": len({round(r["step0_loss"], 7) for r in results}) == 1,
        **timings(results),
    }


def table(summary: dict) -> str:
    """The markdown table of the two sides and their ratios."""
    ours, trl = summary["ours"], summary["trl"]
    diff = abs(ours["step0_loss"] - trl["step0_loss"])
    verdict = "equal" if diff <= LOSS_TOLERANCE else "NOT equal"
    lines = [
        "| | llmenv | TRL 1.16 | TRL / llmenv |",
        "|---|---|---|---|",
        f"| step-0 loss (same batch, same tokens) | {ours['step0_loss']:.6f} | {trl['step0_loss']:.6f} | "
        f"diff {diff:.1e} ({verdict} within {LOSS_TOLERANCE:.0e}) |",
        f"| TRL tokenising the rows itself | | {trl['own_tokenisation_step0_loss']:.6f} | "
        f"same ids: {trl['own_tokenisation_same_ids']}, {trl['own_tokenisation_extra_trained_tokens']} more trained "
        "tokens |",
        f"| last step's loss (logged) | {ours['losses'][-1]:.4f} | {trl['losses'][-1]:.4f} | "
        f"max diff over steps {max(abs(a - b) for a, b in zip(ours['losses'], trl['losses'])):.1e} |",
        f"| s/step (median) | {ours['step_s']:.3f} | {trl['step_s']:.3f} | {trl['step_s'] / ours['step_s']:.2f}x |",
        f"| whole process s (median) | {ours['wall_s']:.1f} | {trl['wall_s']:.1f} | "
        f"{trl['wall_s'] / ours['wall_s']:.2f}x |",
        f"| peak RSS MB (median) | {ours['peak_rss_mb']:.0f} | {trl['peak_rss_mb']:.0f} | "
        f"{trl['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
