"""Rows of an offline learner's `--data`: a JSONL file (one object per line) or a folder saved by `datasets`.

Every offline learner (reward model, PRM, SFT; DPO and KTO later) reads its data through
`read_rows`, so the formats DESIGN.md names are accepted the same way everywhere and a bad row is
reported with where it is (`FILE line N` or `DIR row N`) and what was expected. `prompt_messages`
turns a row's prompt (a string or a list of `{role, content}` messages) into messages.
`held_out_split` (with `split_and_fit`, which also drops rows over `max_length`) and `epoch_batch` are
how every offline learner splits off held-out rows and visits the rest (a fresh seeded order per
epoch, a function of seed and epoch only, so a resumed run sees the rows an uninterrupted one does).
This module reads, checks and orders; it never tokenises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from llmenv.errors import DataError
from llmenv.types import Message

__all__ = [
    "SPLIT_SEED",
    "completion_text",
    "epoch_batch",
    "eval_due",
    "held_out_split",
    "padded",
    "prompt_messages",
    "read_rows",
    "split_and_fit",
]

_Row = TypeVar("_Row")

SPLIT_SEED = 20_260_101
"""The held-out split (when no eval data is given) uses this seed: every run seed holds out the same rows."""


def held_out_split(n: int, fraction: float) -> tuple[list[int], list[int]]:
    """Indices of the rows kept for training (in their order) and of `ceil(n * fraction)` held out (none if n < 2)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    held = math.ceil(n * fraction) if n > 1 and fraction else 0
    return sorted(order[held:]), order[:held]


def split_and_fit(
    rows: list[_Row], eval_rows: list[_Row] | None, fraction: float, max_length: int, length: Callable[[_Row], int],
    noun: str = "row",
) -> tuple[list[_Row], list[_Row], int]:  # fmt: skip
    """Training and held-out rows, each without those longer than `max_length`, and how many were left out.

    Without `eval_rows` (None), `held_out_split` holds out `fraction` of `rows`. A DataError when no
    training row fits.
    """
    if eval_rows is None:
        kept, held = held_out_split(len(rows), fraction)
        eval_rows, rows = [rows[i] for i in held], [rows[i] for i in kept]
    fits = [r for r in rows if length(r) <= max_length]
    if not fits:
        raise DataError(f"no training {noun} fits max_length={max_length} tokens ({len(rows)} {noun}s read)")
    eval_fits = [r for r in eval_rows if length(r) <= max_length]
    return fits, eval_fits, len(rows) - len(fits) + len(eval_rows) - len(eval_fits)


def epoch_batch(n: int, size: int, seed: int, step: int) -> list[int]:
    """Row indices of `step` (0-based): positions step*size .. step*size+size-1 of per-epoch seeded orders of n rows."""
    orders: dict[int, list[int]] = {}
    picked = []
    for position in range(step * size, (step + 1) * size):
        epoch = position // n
        if epoch not in orders:
            orders[epoch] = torch.randperm(
                n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            ).tolist()
        picked.append(orders[epoch][position % n])
    return picked


def read_rows(path: str | Path, expects: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """`(where, row)` for each row of a JSONL file or a `datasets.save_to_disk` folder (its 'train' split)."""
    source = Path(path).expanduser()
    if source.is_dir():
        yield from _dataset_rows(source, expects)
        return
    if not source.is_file():
        raise DataError(f"--data {path}: no such file or folder; expected a JSONL file of {expects}")
    with source.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not JSON ({exc.msg}); expected one object per line: {expects}") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: a JSON {type(row).__name__}, expected an object: {expects}")
            yield where, row


def _dataset_rows(folder: Path, expects: str) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets  # noqa: PLC0415 - heavy; only folders need it

    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"--data {folder}: not a folder written by datasets' save_to_disk ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"--data {folder}: a DatasetDict without a 'train' split (has {sorted(loaded)})")
        loaded = loaded["train"]
    for index, row in enumerate(loaded):
        yield f"{folder} row {index}", dict(row)


def prompt_messages(value: Any, where: str, key: str = "prompt") -> list[Message]:
    """A row's prompt as messages: a string is one user message; a list must be `{role, content}` messages."""
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if isinstance(value, list) and value and all(_is_message(m) for m in value):
        return [Message(role=m["role"], content=m["content"]) for m in value]
    raise DataError(f"{where}: {key} must be a string or a list of {{role, content}} messages, got {value!r:.80}")


def completion_text(value: Any, where: str, key: str) -> str:
    """A row's completion: a string, or a list holding one assistant message (the conversational form)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and _is_message(value[0]) and value[0]["role"] == "assistant":
        return str(value[0]["content"])
    raise DataError(f"{where}: {key} must be a string or [{{role: assistant, content}}], got {value!r:.80}")


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("role"), str) and isinstance(value.get("content"), str)


def eval_due(config: Any, step: int, n: int) -> tuple[float, bool]:
    """After `step` steps (1-based) of `config.batch_size` of n rows: epochs done, and whether evaluation is due.

    Due every `config.eval_every` steps, or (eval_every 0) when an epoch ended within the step; always at the
    last step (`config.steps`).
    """
    seen = step * config.batch_size
    epoch_ended = seen // n > (seen - config.batch_size) // n
    due = step % config.eval_every == 0 if config.eval_every else epoch_ended
    return seen / n, due or step == config.steps


def padded(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask of token rows, (B, L) each, on `device`."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = 1
    return ids.to(device), attention.to(device)
