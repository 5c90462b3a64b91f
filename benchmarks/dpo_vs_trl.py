"""Side by side: offline DPO with `llmenv train dpo` and with TRL 1.16's `DPOTrainer`, the same pairs and model.

Run: python benchmarks/dpo_vs_trl.py [--steps 20] [--batch-size 8] [--rounds 2] [--trl-path DIR]
(in the project's .venv; TRL 1.16 is imported from `--trl-path`, a folder made with
`pip install --no-deps --target DIR "trl==1.16.*"`: its dependencies are already in the venv).

The same job for both, each in its own fresh Python process, alternating for `--rounds` rounds:

- model: the embedded SmolLM2-135M-Instruct, fp32, CPU; the reference is a frozen copy of it on both
  sides (TRL's default with `ref_model=None` and no PEFT); sigmoid DPO loss, beta 0.1;
- pairs: one-digit `+`/`-` problems (the demo's tasks), chosen = "The answer is \\boxed{right}.",
  rejected = the same with a wrong number (`rm_vs_trl.write_pairs`); `steps x batch` pairs;
- tokens: llmenv's (`dpo.read_data`: the chat template; a reply is its content and end-of-turn token).
  TRL gets those exact ids as `prompt_ids`/`chosen_ids`/`rejected_ids` (its dataset preparation is
  skipped, which only takes work off TRL's side);
- optimisation: AdamW lr 1e-6 constant, no warmup, weight decay 0, grad-norm clip 1.0, the whole batch
  in one forward (both sides), no gradient checkpointing, no bf16, no saving.

With seed 0 both sides visit the pairs in the same order (llmenv's seeded epoch order is the
permutation TRL's seeded sampler draws), so the two runs are the same computation: the figures are
the step-0 loss (log 2 on both, policy = reference) and the largest difference between the two
sides' per-step losses over the run, seconds per step (median), whole-process wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# this folder holds math_verify.py, which would shadow the math_verify package llmenv imports: it goes last
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

from rm_vs_trl import write_pairs  # noqa: E402 - needs the path above
from sidebyside import main as sidebyside_main  # noqa: E402
from sidebyside import timings, trl_step_timer  # noqa: E402

LR = 1e-6
BETA = 0.1


def prepare(work: Path, args: argparse.Namespace) -> dict:
    """The shared start: the pairs on disk and the model folder."""
    from llmenv.models import resolve_model_dir

    write_pairs(work / "train.jsonl", args.steps * args.batch_size, 0)
    return {"model": str(resolve_model_dir("smollm2-135m")), "train": str(work / "train.jsonl"),
            "steps": args.steps, "batch_size": args.batch_size, "seed": 0}  # fmt: skip


def worker_ours(spec: dict) -> dict:
    """`llmenv.agents.dpo.train` on the job; losses and step times from its metrics."""
    from llmenv.agents import dpo
    from llmenv.agents.dpo import DPOConfig
    from llmenv.testing import metric_rows

    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(model=spec["model"], data=spec["train"], eval_fraction=0.0, steps=spec["steps"],
                           batch_size=spec["batch_size"], lr=LR, beta=BETA, micro_batch=2 * spec["batch_size"],
                           seed=spec["seed"], save_every=0, save_final=False, out=out)  # fmt: skip
        dpo.train(config, progress=False)
        rows = metric_rows(out)
    return {"losses": [r["loss"] for r in rows], "step_s": [r["step_time_s"] for r in rows]}


def worker_trl(spec: dict) -> dict:
    """TRL 1.16 `DPOTrainer` on llmenv's exact token ids; losses from its log, step times by callback."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from llmenv.agents import dpo
    from llmenv.chat import ChatCodec

    assert trl.__version__.startswith("1.16"), trl.__version__
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    rows = [{"prompt_ids": r.chosen.ids[: r.chosen.start], "chosen_ids": r.chosen.ids[r.chosen.start :],
             "rejected_ids": r.rejected.ids[r.rejected.start :]}
            for r in dpo.read_data(spec["train"], ChatCodec(tokenizer), kto=False)]  # fmt: skip

    class Pretokenised(DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):  # the ids are llmenv's, ready
            return dataset

    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(output_dir=out, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
                         learning_rate=LR, beta=BETA, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                         max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none", seed=spec["seed"],
                         gradient_checkpointing=False, bf16=False, use_cpu=True, max_length=None,
                         dataloader_num_workers=0)  # fmt: skip
        trainer = Pretokenised(model=model, args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=tokenizer, callbacks=[trl_step_timer(times)])  # fmt: skip
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"losses": losses, "step_s": times}


def summarise(results: list[dict]) -> dict:
    """Medians over rounds (step seconds: the median of each run's median step)."""
    return {
        "step0_loss": results[0]["losses"][0],
        "losses": results[0]["losses"],
        **timings(results),
    }


def table(summary: dict) -> str:
    """The markdown table of the two sides and their ratios."""
    ours, trl = summary["ours"], summary["trl"]
    gap = max(abs(a - b) for a, b in zip(ours["losses"], trl["losses"]))
    lines = [
        "| | llmenv | TRL 1.16 | TRL / llmenv |",
        "|---|---|---|---|",
        f"| step-0 loss (same batch) | {ours['step0_loss']:.6f} | {trl['step0_loss']:.6f} | "
        f"diff {abs(ours['step0_loss'] - trl['step0_loss']):.1e} |",
        f"| largest per-step loss difference ({len(ours['losses'])} steps) | | | {gap:.1e} |",
        f"| last-step loss | {ours['losses'][-1]:.6f} | {trl['losses'][-1]:.6f} | |",
        f"| s/step (median) | {ours['step_s']:.3f} | {trl['step_s']:.3f} | {trl['step_s'] / ours['step_s']:.2f}x |",
        f"| whole process s (median) | {ours['wall_s']:.1f} | {trl['wall_s']:.1f} | "
        f"{trl['wall_s'] / ours['wall_s']:.2f}x |",
        f"| peak RSS MB (median) | {ours['peak_rss_mb']:.0f} | {trl['peak_rss_mb']:.0f} | "
        f"{trl['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x |",
    ]
    return "\n".join(lines)


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
        out="runs/dpo_vs_trl.json",
        anchor="trl 1.16",
    )


if __name__ == "__main__":
    main()
