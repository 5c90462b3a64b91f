"""Checkpoints: a resume checkpoint that lets a run continue exactly, and a final export of weights only.

`save_checkpoint` writes `out/checkpoint/` (weights or adapter, tokenizer, optimizer, RNG states,
step, and any extra state a learner names, such as a critic and its optimizer) without ever leaving
the run without a loadable checkpoint: the new one is written to `out/.checkpoint.partial` and
marked complete by its `progress.json`, written last; the previous one is moved to
`out/.checkpoint.old` before the new one takes its name, and removed only after. A crash at any
point leaves `checkpoint/` or `.checkpoint.old/` complete, and `find_checkpoint` returns whichever
is. `export_final` writes `out/final/`: weights (or the adapter) and tokenizer, what a user
loads to use the model, without the optimizer state that is twice the weights' size. Weights go through
`save_pretrained` (safetensors), so both folders load as models. This module stores and restores;
it does not decide when.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from llmenv.errors import CheckpointError
from llmenv.models import LLMENV_CONFIG

CHECKPOINT, PARTIAL, OLD, FINAL = "checkpoint", ".checkpoint.partial", ".checkpoint.old", "final"
_COMPLETE_MARK = "progress.json"  # written last: a folder without it is a partial write
_TRAINER_STATE = "trainer_state.pt"


@dataclass(frozen=True)
class Saved:
    """Where a checkpoint went and how big its parts are, in bytes."""

    path: Path
    weights_bytes: int
    trainer_state_bytes: int

    def describe(self) -> str:
        """`checkpoint/ 1.62 GB (weights 538 MB, optimizer and RNG 1.08 GB)`, for progress messages."""
        text = f"{self.path} {human_bytes(self.weights_bytes + self.trainer_state_bytes)}"
        if self.trainer_state_bytes:
            trainer = human_bytes(self.trainer_state_bytes)
            text += f" (weights {human_bytes(self.weights_bytes)}, optimizer and RNG {trainer})"
        return text


def human_bytes(size: int) -> str:
    """A byte count as `538 MB` / `1.62 GB`."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{size} B"


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


def _folder_bytes(path: Path, skip: str | None = None) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.name != skip)


def _write_weights(folder: Path, model: Any, tokenizer: Any) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if hasattr(model, "get_base_model"):  # a LoRA adapter: peft leaves out the base config's llmenv_* keys
        config = model.get_base_model().config.to_dict()
        keys = {key: value for key, value in config.items() if key.startswith("llmenv_")}
        (folder / LLMENV_CONFIG).write_text(json.dumps(keys, indent=2))


def save_checkpoint(
    out: str | Path,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: dict[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Saved:
    """Write the resume checkpoint for the state after `step` steps to `out/checkpoint` (see the module doc).

    `extra` names further objects with `state_dict()` (a critic, its optimizer, a KL controller); their
    states go into the trainer state file and `load_checkpoint(..., extra=)` restores them by name.
    """
    out = Path(out)
    final, partial, old = out / CHECKPOINT, out / PARTIAL, out / OLD
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _write_weights(partial, model, tokenizer)
    extra_states = {name: obj.state_dict() for name, obj in (extra or {}).items()}
    torch.save(
        {"optimizer": optimizer.state_dict(), "rng": rng_state(), "extra": extra_states}, partial / _TRAINER_STATE
    )
    (partial / _COMPLETE_MARK).write_text(json.dumps({"step": step, "config": config}, indent=2, default=str))
    if _complete(final):
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)  # from here until the next rename, `old` is the loadable one
    else:
        shutil.rmtree(final, ignore_errors=True)
    os.rename(partial, final)
    shutil.rmtree(old, ignore_errors=True)
    trainer_bytes = (final / _TRAINER_STATE).stat().st_size
    return Saved(final, _folder_bytes(final, skip=_TRAINER_STATE), trainer_bytes)


def export_final(out: str | Path, *, model: Any, tokenizer: Any) -> Saved:
    """Write the weights (or adapter) and tokenizer alone to `out/final`, replacing an earlier export."""
    out = Path(out)
    target, staging = out / FINAL, out / ".final.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _write_weights(staging, model, tokenizer)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging, target)
    return Saved(target, _folder_bytes(target), 0)


def _complete(folder: Path) -> bool:
    return (folder / _COMPLETE_MARK).is_file() and (folder / _TRAINER_STATE).is_file()


def find_checkpoint(out: str | Path) -> Path | None:
    """The complete resume checkpoint under `out` (`checkpoint/`, else a `.checkpoint.old/` a crash left), or None."""
    for name in (CHECKPOINT, OLD):
        if _complete(Path(out) / name):
            return Path(out) / name
    return None


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint folder was taken at (CheckpointError when its progress record is unreadable)."""
    try:
        return int(json.loads((Path(path) / _COMPLETE_MARK).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({exc}); delete it or start without --resume"
        ) from None


def load_checkpoint(
    path: str | Path, *, model: Any, optimizer: torch.optim.Optimizer, extra: Mapping[str, Any] | None = None
) -> int:
    """Load weights, optimizer, RNG and `extra` states from a checkpoint folder; return the step it was taken at."""
    path = Path(path)
    step = checkpoint_step(path)
    weights = path / "adapter_model.safetensors"
    if weights.exists():
        from peft import set_peft_model_state_dict  # noqa: PLC0415 - peft is optional (LoRA runs only)

        set_peft_model_state_dict(model, load_file(weights))
    elif (path / "model.safetensors").exists():
        state = load_file(path / "model.safetensors")
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {k for k in missing if "lm_head" in k}  # tied embeddings are saved once
        if set(missing) - tied or unexpected:
            raise CheckpointError(
                f"checkpoint {path} does not match the model (missing {sorted(missing)[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}); resume with the --model and --lora-rank the run was started with"
            )
    else:
        raise CheckpointError(f"checkpoint {path} has no model.safetensors or adapter_model.safetensors")
    trainer = torch.load(path / _TRAINER_STATE, weights_only=False)
    try:
        optimizer.load_state_dict(trainer["optimizer"])
    except ValueError as exc:
        raise CheckpointError(f"optimizer state in {path} does not match this run's parameters: {exc}") from None
    saved_extra = trainer.get("extra", {})
    for name, obj in (extra or {}).items():
        if name not in saved_extra:
            raise CheckpointError(
                f"checkpoint {path} has no saved {name!r} state (it has {sorted(saved_extra) or 'none'}); "
                "resume with the learner and options the run was started with"
            )
        try:
            obj.load_state_dict(saved_extra[name])
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{name!r} state in {path} does not match this run: {exc}") from None
    set_rng_state(trainer["rng"])
    return step
