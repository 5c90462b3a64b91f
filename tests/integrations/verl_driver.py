"""Run by test_verl.py in a subprocess with verl importable: llmenv's reward functions through verl's own code.

Usage: python verl_driver.py PARQUET RESPONSES_JSON. Loads `compute_score` / `compute_score_batch` the way a
verl run does (`verl.trainer.ppo.reward.get_custom_reward_fn` on a `custom_reward_function` config naming
llmenv/integrations/verl.py), builds verl's `DataProto` of the rows (left-padded prompt ids rendered with the
model's chat template, right-padded response ids ending in EOS), runs verl's `NaiveRewardManager` and
`BatchRewardManager` on it, and prints JSON: per manager the reward at each response's last token and the
extra info verl collected.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.reward import get_custom_reward_fn
from verl.workers.reward_manager.batch import BatchRewardManager
from verl.workers.reward_manager.naive import NaiveRewardManager

import llmenv.integrations.verl as integration
from llmenv.models import load_tokenizer


def data_proto(rows: list[dict], responses: list[str], tokenizer) -> DataProto:
    """verl's rollout batch for the rows and responses: prompts left-padded, responses right-padded."""
    prompts = [tokenizer.encode(tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False),
                                add_special_tokens=False) for r in rows]  # fmt: skip
    replies = [tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id] for text in responses]
    width_p, width_r, pad = max(map(len, prompts)), max(map(len, replies)), tokenizer.pad_token_id
    prompt_ids = torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts])  # (B, P)
    response_ids = torch.tensor([r + [pad] * (width_r - len(r)) for r in replies])  # (B, R)
    mask = torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (width_r - len(r))
                         for p, r in zip(prompts, replies)])  # fmt: skip  # (B, P + R)
    objects = {}
    for key in ("data_source", "reward_model", "extra_info"):
        objects[key] = np.empty(len(rows), dtype=object)  # (B,) of str / dict, as verl's dataset gives them
        objects[key][:] = [r[key] for r in rows]
    tensors = {"prompts": prompt_ids, "responses": response_ids, "attention_mask": mask,
               "input_ids": torch.cat([prompt_ids, response_ids], 1)}  # fmt: skip
    return DataProto.from_dict(tensors=tensors, non_tensors=objects)


def run(manager, data: DataProto) -> dict:
    """The reward each response got (at its last valid token) and verl's collected extra info."""
    out = manager(data, return_dict=True)
    width_p = data.batch["prompts"].shape[-1]
    lengths = data.batch["attention_mask"][:, width_p:].sum(-1)
    rewards = [float(out["reward_tensor"][i, int(n) - 1]) for i, n in enumerate(lengths)]
    extra = {key: [float(v) for v in values] for key, values in out["reward_extra_info"].items()}
    return {"rewards": rewards, "extra": extra, "total": float(out["reward_tensor"].sum())}


def loaded(name: str):
    """The reward function `name` of llmenv/integrations/verl.py as a verl run loads it from its config."""
    config = {"custom_reward_function": {"path": integration.__file__, "name": name, "reward_kwargs": {}}}
    return get_custom_reward_fn(OmegaConf.create({"reward": config}))


def main() -> None:
    """Load the rows and responses, score them through both of verl's managers, print JSON."""
    rows = pq.read_table(sys.argv[1]).to_pylist()
    responses = json.loads(open(sys.argv[2]).read())
    tokenizer = load_tokenizer("smollm2-135m")
    single, batched = (loaded(name) for name in ("compute_score", "compute_score_batch"))
    naive = NaiveRewardManager(tokenizer, num_examine=0, compute_score=single)
    batch = BatchRewardManager(tokenizer, num_examine=0, compute_score=batched)
    print(json.dumps({"naive": run(naive, data_proto(rows, responses, tokenizer)),
                      "batch": run(batch, data_proto(rows, responses, tokenizer))}))  # fmt: skip


if __name__ == "__main__":
    main()
