"""Side by side: process-reward-model training with `llmenv train prm` and with TRL 1.13's `PRMTrainer`.

Run: python benchmarks/prm_vs_trl.py [--steps 40] [--batch-size 8] [--rounds 2] [--trl-path DIR]
(in the project's .venv; TRL 1.13.0, the last release with PRMTrainer, is imported from `--trl-path`,
e.g. a folder made with `pip install --no-deps --target .trl113 "trl==1.13.0"`).

The same job for both, each in its own fresh Python process, alternating for `--rounds` rounds:

- model: the embedded SmolLM2-135M-Instruct as a 2-label token classifier whose new head is drawn
  once with torch seed 0 and saved, so both sides start from the same weights; fp32, CPU;
- data: `llmenv/arith-chain-v0`'s step data (three-operation chains, one equation per step and the
  boxed result; half correct, half with one injected error, Math-Shepherd labels): `steps x batch`
  training rows and 256 held-out rows from another seed, written as TRL's PRM format;
- tokens: llmenv lays a row out as `question \\n step \\n step \\n ...` and tokenises it once (the
  label on each separator's token). TRL trains on exactly those ids and labels (a pre-tokenised
  dataset, which PRMTrainer takes as it is), so both sides see the same tokens. TRL's own
  `tokenize_row` (the prompt and each step tokenised apart, the separator's ids appended, a BOS
  token first) is compared with them too: the rows whose ids agree once its BOS is dropped and the
  prompt carries llmenv's `\\n` are counted (reported);
- optimisation: AdamW lr `--lr` constant, no warmup, weight decay 0, grad-norm clip 1.0, one forward
  of the whole batch, no gradient checkpointing, no bf16, no saving, dropout off.

Figures: the step-0 loss on llmenv's first batch (TRL's `compute_loss` on those ids and labels before
training), seconds per step (median over the run's steps), whole-process wall time, peak RSS, and
held-out step accuracy, the F1 of flagging wrong steps and first-error accuracy after the steps, all
measured for both trained models by the same function (`agents/prm.evaluate`: the layout
`ProcessVerifier` scores with). The data orders differ (each side shuffles with its own seeded
sampler), so the held-out figures are not expected to be equal.
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

HELD_OUT = 256
HELD_OUT_SEED = 10**6
METRICS = ("eval_step_accuracy", "eval_step_f1", "eval_first_error_accuracy", "eval_loss")


def write_rows(path: Path, n: int, seed: int) -> None:
    """`n` step-labelled chains of arith-chain-v0's step data as JSONL."""
    import numpy as np

    from llmenv.tasks.chain import chain_step_rows

    rows = chain_step_rows(np.random.default_rng(seed), n)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def prepare(work: Path, args: argparse.Namespace) -> dict:
    """The shared start: rows on disk and the initial PRM (seeded 2-label head) saved once."""
    import torch

    from llmenv.models import load_token_classifier, load_tokenizer, resolve_model_dir

    write_rows(work / "train.jsonl", args.steps * args.batch_size, 0)
    write_rows(work / "held.jsonl", HELD_OUT, HELD_OUT_SEED)
    torch.manual_seed(0)
    source = resolve_model_dir("smollm2-135m")
    load_token_classifier(source).save_pretrained(work / "init")
    load_tokenizer(source).save_pretrained(work / "init")
    return {"init": str(work / "init"), "train": str(work / "train.jsonl"), "held": str(work / "held.jsonl"),
            "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": 0}  # fmt: skip


def encoded(path: str, tokenizer) -> list:
    """The rows of a JSONL file as llmenv's PRM reads them (the separator adapter)."""
    from llmenv.agents.data import read_rows
    from llmenv.agents.prm import STEP_FORMAT, encode_rows
    from llmenv.verifiers.process import SeparatorClassifier

    return encode_rows(read_rows(path, STEP_FORMAT), SeparatorClassifier(tokenizer))


def held_out(model, tokenizer, held: str) -> dict:
    """llmenv's held-out PRM metrics of a trained model, in the layout ProcessVerifier scores with."""
    import torch

    from llmenv.agents import prm
    from llmenv.verifiers.process import SeparatorClassifier

    state = SimpleNamespace(model=model.eval(), tokenizer=tokenizer, device=torch.device("cpu"),
                            adapter=SeparatorClassifier(tokenizer), eval_rows=encoded(held, tokenizer),
                            config=SimpleNamespace(bf16=False, micro_batch=16))  # fmt: skip
    return prm.evaluate(state)  # type: ignore[arg-type]


def worker_ours(spec: dict) -> dict:
    """`llmenv.agents.prm.train` on the job; step times from its metrics."""
    from llmenv.agents import prm
    from llmenv.agents.prm import PRMConfig

    with tempfile.TemporaryDirectory() as out:  # no held-out split: both sides are evaluated once, afterwards
        config = PRMConfig(model=spec["init"], data=spec["train"], eval_fraction=0.0, steps=spec["steps"],
                           batch_size=spec["batch_size"], lr=spec["lr"], micro_batch=spec["batch_size"],
                           seed=spec["seed"], save_every=0, save_final=False, out=out)  # fmt: skip
        state = prm.train(config, progress=False)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {
        "step0_loss": rows[0]["loss"],
        "step_s": [r["step_time_s"] for r in rows],
        "held_out": held_out(state.model, state.tokenizer, spec["held"]),
    }


def labelled(row) -> dict:
    """An encoded row as TRL's pre-tokenised PRM row: the ids, and labels -100 except at the scored tokens."""
    labels = [-100] * len(row.ids)
    for position, label in zip(row.positions, row.labels, strict=True):
        labels[position] = label
    return {"input_ids": row.ids, "labels": labels}


def worker_trl(spec: dict) -> dict:
    """TRL 1.13 `PRMTrainer` on llmenv's ids and labels; step times by callback."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from trl.experimental.prm import PRMConfig, PRMTrainer

    from llmenv.agents.data import epoch_batch

    assert trl.__version__ == "1.13.0", trl.__version__
    tokenizer = AutoTokenizer.from_pretrained(spec["init"])
    raw = [json.loads(line) for line in Path(spec["train"]).read_text().splitlines()]
    ours = encoded(spec["train"], tokenizer)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    theirs = [PRMTrainer.tokenize_row({**row, "prompt": row["prompt"] + "\n"}, tokenizer, "\n", None, None, False,
                                      False)["input_ids"] for row in raw]  # fmt: skip
    identical = sum(bos + o.ids == t for o, t in zip(ours, theirs, strict=True))
    model = AutoModelForTokenClassification.from_pretrained(spec["init"], dtype=torch.float32)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        args = PRMConfig(output_dir=out, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
                         learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                         max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none", seed=spec["seed"],
                         gradient_checkpointing=False, bf16=False, use_cpu=True, max_length=None,
                         step_separator="\n", dataloader_num_workers=0)  # fmt: skip
        trainer = PRMTrainer(model=model, args=args, train_dataset=Dataset.from_list([labelled(r) for r in ours]),
                             processing_class=tokenizer, callbacks=[trl_step_timer(times)])  # fmt: skip
        batch = [labelled(ours[i]) for i in epoch_batch(len(ours), spec["batch_size"], spec["seed"], 0)]
        with torch.no_grad():
            trainer.model.train()
            step0 = float(trainer.compute_loss(trainer.model, trainer.data_collator(batch)))
        trainer.train()
    return {
        "step0_loss": step0,
        "step_s": times,
        "identical_rows": identical,
        "rows": len(raw),
        "held_out": held_out(trainer.model, tokenizer, spec["held"]),
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
        steps=40,
        rounds=2,
        out="runs/prm_vs_trl.json",
        anchor="trl 1.13.0",
        extra_flags=lambda parser: parser.add_argument("--lr", type=float, default=2e-5),
        finish=_identical_rows,
    )


def _identical_rows(summary: dict, runs: dict) -> None:
    """How many rows TRL's own tokenisation encodes as llmenv does, in the summary."""
    summary["trl"]["identical_rows"] = f"{runs['trl'][0]['identical_rows']}/{runs['trl'][0]['rows']}"


def summarise(results: list[dict]) -> dict:
    """Medians over rounds (step seconds: the median of each run's median step); held-out figures per round."""
    return {
        "step0_loss": results[0]["step0_loss"],
        "step0_losses_equal_across_rounds": len({round(r["step0_loss"], 7) for r in results}) == 1,
        **timings(results),
        **{key: [r["held_out"][key] for r in results] for key in METRICS},
    }


def table(summary: dict) -> str:
    """The markdown table of the two sides and their ratios."""
    ours, trl = summary["ours"], summary["trl"]
    lines = [
        "| | llmenv | TRL 1.13 | TRL / llmenv |",
        "|---|---|---|---|",
        f"| step-0 loss (same batch) | {ours['step0_loss']:.6f} | {trl['step0_loss']:.6f} | "
        f"diff {abs(ours['step0_loss'] - trl['step0_loss']):.1e} |",
        f"| rows TRL's tokenize_row encodes identically (BOS aside) | | {trl['identical_rows']} | |",
        f"| s/step (median) | {ours['step_s']:.3f} | {trl['step_s']:.3f} | {trl['step_s'] / ours['step_s']:.2f}x |",
        f"| whole process s (median) | {ours['wall_s']:.1f} | {trl['wall_s']:.1f} | "
        f"{trl['wall_s'] / ours['wall_s']:.2f}x |",
        f"| peak RSS MB (median) | {ours['peak_rss_mb']:.0f} | {trl['peak_rss_mb']:.0f} | "
        f"{trl['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x |",
    ]
    for key, label in zip(METRICS, ("held-out step accuracy", "held-out wrong-step F1", "held-out first-error acc.",
                                    "held-out loss")):  # fmt: skip
        lines.append(f"| {label} (per round) | {fmt(ours[key], key)} | {fmt(trl[key], key)} | |")
    return "\n".join(lines)


def fmt(values: list[float], key: str) -> str:
    """Per-round values, comma-separated (percentages for accuracies)."""
    return ", ".join(f"{v:.3f}" if key in ("eval_loss", "eval_step_f1") else f"{v:.1%}" for v in values)


if __name__ == "__main__":
    main()
