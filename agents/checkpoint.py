"""Checkpoints that let a run continue exactly: weights (or adapter), optimizer, RNG states and step.

`save_checkpoint` writes `out/checkpoint/` atomically (a temporary folder renamed into place),
`load_checkpoint` restores all of it. Weights go through `save_pretrained`, i.e. safetensors, so a
checkpoint folder is also a loadable model (or peft adapter). It stores and restores; it does not
decide when.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out: str | Path, *, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer, step: int, config: dict[str, Any]
) -> Path:
    """Write the checkpoint for the state after `step` steps to `out/checkpoint` and return its path."""
    final = Path(out) / "checkpoint"
    tmp = Path(out) / ".checkpoint.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state()}, tmp / "trainer_state.pt")
    (tmp / "progress.json").write_text(json.dumps({"step": step, "config": config}, indent=2, default=str))
    old = Path(out) / ".checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, *, model: Any, optimizer: torch.optim.Optimizer) -> int:
    """Load weights, optimizer and RNG states from a checkpoint folder; return the step it was taken at."""
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / "adapter_model.safetensors"
    if weights.exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(weights))
    else:
        state = load_file(path / "model.safetensors")
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {k for k in missing if "lm_head" in k}  # tied embeddings are saved once
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
    trainer = torch.load(path / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(trainer["optimizer"])
    set_rng_state(trainer["rng"])
    return int(json.loads((path / "progress.json").read_text())["step"])
