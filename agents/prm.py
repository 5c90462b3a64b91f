"""Process-reward-model training: `llmenv train prm --data FILE` (or `--task ID`), on the shared trainer.

Rows are step-labelled solutions `{prompt, completions: [step, ...], labels: [bool, ...]}` (TRL's
PRM format), from a JSONL file / `datasets` folder or drawn from a registered task's `step_data`
(`llmenv/arith-chain-v0`: exact Math-Shepherd labels). Each row is laid out by the PRM adapter that
`ProcessVerifier` scores with (verifiers/process.py): the question and the steps become one text,
tokenised once, and each step's label sits on that step's scored token only (the separator's last
token for the default "separator" adapter: a 2-way token classifier; the tag for "math-shepherd"
and the reply position for "rlhflow": '+'/'-' logits of the causal LM). TRL's PRMTrainer tokenised
each step on its own, which can differ from the joined text a PRM sees when it scores. The loss is
the cross-entropy of the (wrong, right) logits at the labelled tokens, a mean over steps. Held-out
rows give step accuracy, the F1 of flagging wrong steps, and first-error accuracy (the first step
scored below 0.5, or none, is the first wrong one, or none). The model's config records the
adapter (`llmenv_prm_adapter`), so `ProcessVerifier(out/final)` reads steps the way it was trained.
This file holds the config, the loss, the metrics and the update; the loop is `agents/trainer.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from llmenv.agents import trainer
from llmenv.agents.config import above, at_least, option
from llmenv.agents.data import padded, prompt_messages, read_rows, split_and_fit
from llmenv.agents.trainer import RunConfig, RunState
from llmenv.errors import DataError
from llmenv.models import load_tokenizer
from llmenv.registry import spec as task_spec
from llmenv.verifiers.process import ADAPTER_KEY, ADAPTERS, PRMAdapter, step_logits

STEP_FORMAT = '{"prompt": str | [messages], "completions": [str, ...], "labels": [bool, ...]}'
"""One step-labelled solution per JSONL line (or `datasets` row): a label per step, True for a right step."""

DATA_SEED = 7_919
"""Rows drawn from a task's `step_data` use this seed (plus the run seed): the same seed gives the same rows."""


@dataclass
class PRMConfig(RunConfig):
    """Everything a PRM run needs; every field is a `llmenv train prm` flag (shared ones in `RunConfig`)."""

    data: str = option("", "Step-labelled rows (prompt, completions, labels): JSONL or a datasets folder.")
    task: str = option("", "Instead of --data: a registered task with step data (e.g. llmenv/arith-chain-v0).")
    rows: int = option(2000, "Rows drawn from --task (the held-out share included).", **at_least(2))
    task_params: dict[str, Any] = option({}, "Task parameter passed to the task's step data")
    eval_data: str | None = option(None, "Held-out rows in the same form (default: hold out eval_fraction).")
    eval_fraction: float = option(
        0.1, "Share of rows held out when eval_data is not given.", check=lambda f: 0 <= f < 1, expects="in [0, 1)"
    )
    adapter: str = option(
        "separator",
        "Head convention (separator: token classifier; math-shepherd, rlhflow: '+'/'-' of the LM; qwen).",
        check=lambda name: name in ADAPTERS,
        expects=f"one of {sorted(ADAPTERS)}",
    )
    steps: int = option(100, "Optimisation steps (batch_size rows each).", **at_least(1))
    batch_size: int = option(8, "Rows per optimisation step.", **at_least(1))
    lr: float = option(1e-5, "AdamW learning rate.", **above(0))
    max_length: int = option(512, "Rows longer than this many tokens are left out (and counted).", **at_least(2))
    eval_every: int = option(0, "Measure held-out metrics every this many steps (0: each epoch end).", **at_least(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.data) == bool(self.task):
            raise DataError(
                f"llmenv train prm needs exactly one of --data (a JSONL file of {STEP_FORMAT}) or --task "
                f"(a registered task with step data, e.g. llmenv/arith-chain-v0); got "
                f"{'both' if self.data else 'neither'}"
            )


class StepRow(NamedTuple):
    """A step-labelled solution as the PRM reads it: token ids, each step's scored index and its label (1 right)."""

    ids: list[int]
    positions: list[int]
    labels: list[int]


def encode_rows(rows: Iterable[tuple[str, dict[str, Any]]], adapter: PRMAdapter) -> list[StepRow]:
    """Each (where, row) laid out by `adapter`; a DataError naming the row when it does not fit STEP_FORMAT."""
    encoded = []
    for where, row in rows:
        missing = [key for key in ("prompt", "completions", "labels") if key not in row]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}; expected {STEP_FORMAT}")
        steps, labels = row["completions"], row["labels"]
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            raise DataError(f"{where}: completions must be a non-empty list of step strings, got {steps!r:.60}")
        if not isinstance(labels, list) or len(labels) != len(steps) or not all(isinstance(b, bool) for b in labels):
            raise DataError(f"{where}: labels must be one bool per step ({len(steps)} steps), got {labels!r:.60}")
        users = [m["content"] for m in prompt_messages(row["prompt"], where) if m["role"] == "user"]
        laid_out = adapter.encode(users[-1] if users else "", steps)
        encoded.append(StepRow(laid_out.ids, laid_out.positions, [int(b) for b in labels]))
    return encoded


def task_rows(task: str, n: int, seed: int, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """`n` rows from a registered task's `step_data`, seeded; a DataError when the task has none."""
    registered = task_spec(task)
    if registered.step_data is None:
        raise DataError(f"task `{registered.task_id}` has no step data; use --data FILE or e.g. llmenv/arith-chain-v0")
    rows = registered.step_data(np.random.default_rng(DATA_SEED + seed), n, **params)
    return [(f"{registered.task_id} row {i}", row) for i, row in enumerate(rows)]


def step_loss(two_way: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (wrong, right) logits (n, 2) against labels (n,) in {0, 1}, mean over steps."""
    return F.cross_entropy(two_way.float(), labels.long())


def step_f1(right_probability: Sequence[float], labels: Sequence[int]) -> float:
    """F1 of flagging wrong steps (P(right) < 0.5 flags one) against labels (0 wrong); 0 without a right flag."""
    flagged = np.asarray(right_probability) < 0.5
    wrong = np.asarray(labels) == 0
    hits = float((flagged & wrong).sum())
    return 2 * hits / (flagged.sum() + wrong.sum()) if hits else 0.0


def first_error(values: Sequence[float]) -> int:
    """Index of the first step below 0.5 (a label 0 or a low P(right)); the step count when there is none."""
    return next((k for k, value in enumerate(values) if value < 0.5), len(values))


@dataclass(kw_only=True)
class PRMState(RunState):
    """The shared run state plus the adapter and the encoded training and held-out rows."""

    adapter: PRMAdapter
    train_rows: list[StepRow]
    eval_rows: list[StepRow]
    dropped: int
    """Rows left out because they are longer than `max_length` tokens."""


def build(config: PRMConfig) -> PRMState:
    """Read and encode the rows (data errors before the model loads), then load the model and its optimizer."""
    device, resume_from = trainer.start_run(config)
    tokenizer = load_tokenizer(config.model)
    adapter = ADAPTERS[config.adapter](tokenizer)
    if config.task:
        rows = encode_rows(task_rows(config.task, config.rows, config.seed, config.task_params), adapter)
    else:
        rows = encode_rows(read_rows(config.data, STEP_FORMAT), adapter)
    if not rows:
        raise DataError(f"--data {config.data} holds no rows; expected one per line: {STEP_FORMAT}")
    eval_rows = encode_rows(read_rows(config.eval_data, STEP_FORMAT), adapter) if config.eval_data else None
    fits, eval_fits, dropped = split_and_fit(
        rows, eval_rows, config.eval_fraction, config.max_length, lambda row: len(row.ids)
    )
    token_labels = 2 if adapter.head == "token-classification" else 0
    model, optimizer = trainer.load_learner(config, device, token_labels=token_labels)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    setattr(base.config, ADAPTER_KEY, config.adapter)  # saved with the weights: ProcessVerifier reads it back
    return PRMState(
        config=config,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        device=device,
        resume_from=resume_from,
        adapter=adapter,
        train_rows=fits,
        eval_rows=eval_fits,
        dropped=dropped,
    )


def row_logits(state: PRMState, rows: Sequence[StepRow]) -> tuple[torch.Tensor, torch.Tensor]:
    """(wrong, right) logits (n, 2) at every labelled step of `rows`, and the labels (n,), in one forward."""
    pad = state.tokenizer.pad_token_id if state.tokenizer.pad_token_id is not None else 0
    ids, attention = padded([r.ids for r in rows], pad, state.device)  # (B, L)
    which = torch.tensor([i for i, r in enumerate(rows) for _ in r.positions], device=state.device)  # (n,)
    positions = torch.tensor([p for r in rows for p in r.positions], device=state.device)  # (n,)
    logits = step_logits(state.model, ids, attention, which, positions, bf16=state.config.bf16)  # (n, V)
    labels = torch.tensor([label for r in rows for label in r.labels], device=state.device)  # (n,)
    return state.adapter.two_way_logits(logits), labels


def update(state: PRMState, rows: Sequence[StepRow]) -> dict[str, float]:
    """One optimisation step over `rows`, `micro_batch` rows per forward, the loss a mean over all their steps."""
    cfg = state.config
    state.model.train()
    state.optimizer.zero_grad(set_to_none=True)
    total = sum(len(r.labels) for r in rows)
    loss_sum, right = 0.0, 0
    for start in range(0, len(rows), cfg.micro_batch):
        chunk = rows[start : start + cfg.micro_batch]
        two_way, labels = row_logits(state, chunk)
        loss = step_loss(two_way, labels) * (len(labels) / total)
        loss.backward()
        loss_sum += loss.item()
        right += int((two_way.argmax(-1) == labels).sum())
    grad_norm = trainer.clip_gradients(trainer.trainable(state.model), cfg.max_grad_norm)
    state.optimizer.step()
    return {
        "loss": loss_sum,
        "step_accuracy": right / total,
        "grad_norm": grad_norm,
        "tokens": sum(len(r.ids) for r in rows),
        "labelled_steps": total,
    }


@torch.inference_mode()
def evaluate(state: PRMState) -> dict[str, float]:
    """Held-out loss, step accuracy, wrong-step F1 and first-error accuracy, in eval mode."""
    state.model.eval()
    probabilities, labels, losses = [], [], []
    for start in range(0, len(state.eval_rows), state.config.micro_batch):
        chunk = state.eval_rows[start : start + state.config.micro_batch]
        two_way, chunk_labels = row_logits(state, chunk)
        losses.append(float(step_loss(two_way, chunk_labels)) * len(chunk_labels))
        probabilities += two_way.float().softmax(-1)[:, 1].tolist()
        labels += chunk_labels.tolist()
    first_right, used = 0, 0
    for row in state.eval_rows:
        scores = probabilities[used : used + len(row.labels)]
        first_right += first_error(scores) == first_error(row.labels)
        used += len(row.labels)
    predicted = np.asarray(probabilities) >= 0.5
    return {
        "eval_loss": sum(losses) / len(labels),
        "eval_step_accuracy": float((predicted == (np.asarray(labels) == 1)).mean()),
        "eval_step_f1": step_f1(probabilities, labels),
        "eval_first_error_accuracy": first_right / len(state.eval_rows),
    }


def train_step(state: PRMState) -> dict[str, Any]:
    """One step: its rows, the update, and the held-out evaluation when one is due."""
    held_out = evaluate if state.eval_rows else None
    return trainer.offline_step(state, state.train_rows, update, held_out, dropped_rows=state.dropped)


def _status(metrics: dict[str, Any]) -> str:
    text = f"loss {metrics['loss']:.3f} step acc {metrics['step_accuracy']:.0%}"
    if "eval_step_f1" in metrics:
        f1, first = metrics["eval_step_f1"], metrics["eval_first_error_accuracy"]
        text += f" [bold]held-out F1 {f1:.2f} first error {first:.0%}[/]"
    return text


def train(config: PRMConfig, *, progress: bool = True) -> PRMState:
    """Train a process reward model on `config.data` or `config.task`'s step data; the state after the last step."""
    return trainer.train(
        config,
        build,
        train_step,
        name="PRM",
        status=_status,
        progress=progress,
        plot_key="step_accuracy",
        subject=config.data or config.task,
    )
