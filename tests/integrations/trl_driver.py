"""Run by test_trl.py in a subprocess with TRL 1.16 importable: one real GRPOTrainer step on an llmenv task.

Usage: python trl_driver.py MODEL_DIR OUT_JSON. Registers `trl-variety-test-v0` (arithmetic prompts, reward =
the share of distinct characters in the completion, so a tiny untrained model's samples differ in reward
and GRPO's advantages are not all 0), trains TRL's `GRPOTrainer` for one step (CPU, fp32) on `grpo_dataset`
of it with `reward_function(...)` as its only reward, records every reward our function returned, and
writes JSON: TRL's logged row, the rewards, and how far the weights moved.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

import llmenv
from llmenv.integrations import trl as integration
from llmenv.tasks.arith import generate_arith
from llmenv.types import Verdict

TASK = "llmenv/trl-variety-test-v0"


def variety(completion: str, task) -> Verdict:
    """The share of distinct characters (0 for an empty completion); passed at 0.5 or more."""
    share = len(set(completion)) / max(len(completion), 1)
    return Verdict(reward=share, passed=share >= 0.5, parts={"variety": share})


llmenv.register_task("trl-variety-test-v0", source=generate_arith, verifier=variety)


def main() -> None:
    """One GRPO step through TRL with llmenv's dataset and reward function; the JSON report."""
    model_dir, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    reward = integration.reward_function(TASK)
    returned: list = []

    @functools.wraps(reward)
    def recorded(*args, **kwargs):
        returned.extend(reward(*args, **kwargs))
        return returned[-len(kwargs["completions"]) :]

    with tempfile.TemporaryDirectory() as folder:
        args = GRPOConfig(output_dir=folder, max_steps=1, per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=12, learning_rate=1e-3, logging_steps=1, save_strategy="no",
                          report_to="none", use_cpu=True, bf16=False, seed=0, temperature=1.0,
                          gradient_checkpointing=False, dataloader_num_workers=0)  # fmt: skip
        trainer = GRPOTrainer(model=model, reward_funcs=[recorded], args=args, processing_class=tokenizer,
                              train_dataset=integration.grpo_dataset(TASK, 8))  # fmt: skip
        trainer.train()
    logged = next(row for row in trainer.state.log_history if "loss" in row)
    moved = max(float((p.detach() - before[name]).abs().max()) for name, p in model.named_parameters())
    with open(out, "w") as f:
        json.dump({"logged": logged, "returned": returned, "moved": moved}, f)


if __name__ == "__main__":
    main()
