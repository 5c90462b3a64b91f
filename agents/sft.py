"""Supervised fine-tuning: `llmenv train sft --data FILE`, or rejection sampling `--task ID --samples K`.

From data, each row is a conversation, `{messages: [...]}` (every assistant turn is trained on) or
`{prompt, completion}` (the completion is). It is rendered through the model's chat template and
tokenised piece by piece at the edges of the trained turns, the way an environment builds a
trajectory from the policy's own tokens: the loss mask is 1 exactly on each trained turn's content
and on the end-of-turn token the template writes after it (the policy has to produce it to stop),
never on the template's role headers; a template that renders an earlier turn differently once a
later one is added is an error naming the row. From a task (DeepSeek-R1's rejection-sampling
stage), each step samples `samples` completions for each of `prompts_per_step` prompts with the
current policy through the environment, keeps the verified successes (`Verdict.passes` with the
task's threshold; episodes whose verifier failed are left out and counted), and trains on their
exact trajectory tokens, the loss on policy tokens (`Trajectory.loss_mask`). Either way the loss is
the mean negative log-likelihood per trained token over the whole batch (summed over every trained
token of every row, divided by their count: TRL's SFTTrainer default), whatever the micro-batching.
Log-probs come from `agents/scoring.py` (the LM head runs on trained positions only). This file
holds the config, the encoding, the loss and the updates; the loop is `agents/trainer.py`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from llmenv.agents import trainer
from llmenv.agents.config import above, at_least, option
from llmenv.agents.data import (
    completion_text,
    padded,
    prompt_messages,
    read_rows,
    split_and_fit,
)
from llmenv.agents.rollout import to_batch
from llmenv.agents.scoring import completion_scores
from llmenv.agents.trainer import LearnerConfig, LearnerState, RunState
from llmenv.chat import ChatCodec
from llmenv.errors import DataError
from llmenv.models import load_tokenizer
from llmenv.registry import spec as task_spec
from llmenv.types import Message

SFT_FORMAT = (
    '{"messages": [{role, content}, ...]} or '
    '{"prompt": str | [messages], "completion": str | [{role: assistant, content}]}'
)
"""One conversation per JSONL line (or `datasets` row): each assistant turn of `messages`, or the completion, trains."""

Chunk = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""One forward's token ids, attention mask and loss mask, (b, L) each."""


@dataclass
class SFTConfig(LearnerConfig):
    """Everything an SFT run needs; each field is a `llmenv train sft` flag (shared ones in `LearnerConfig`).

    `group_size` is set from `samples`; LearnerConfig's process-reward fields mean nothing here and have no flag.
    """

    data: str = option("", "Conversations to imitate ({messages} or {prompt, completion}): JSONL or a datasets folder.")
    task: str = option("", "Instead of --data: a registered task; its verified samples are trained on (rejection).")
    samples: int = option(4, "With --task: completions sampled per prompt each step.", **at_least(1))
    group_size: int = option(4, "Completions per prompt: --samples (set from it).", flag=False)
    prm: str = option("", "Unused: rejection sampling keeps what the task's own verifier passes.", flag=False)
    prm_adapter: str = option("", "Unused (no --prm).", flag=False)
    prm_separator: str = option("\n", "Unused (no --prm).", flag=False)
    outcome_weight: float = option(1.0, "Unused: SFT weighs no rewards.", flag=False)
    process_weight: float = option(1.0, "Unused: SFT weighs no rewards.", flag=False)
    eval_data: str | None = option(None, "Held-out rows in the same form (default: hold out eval_fraction of data).")
    eval_fraction: float = option(
        0.1, "Share of data held out when eval_data is not given.", check=lambda f: 0 <= f < 1, expects="in [0, 1)"
    )
    steps: int = option(100, "Optimisation steps (batch_size rows, or one sampling round, each).", **at_least(1))
    batch_size: int = option(8, "Rows per optimisation step (with --data).", **at_least(1))
    lr: float = option(1e-5, "AdamW learning rate.", **above(0))
    max_length: int = option(1024, "Rows longer than this many tokens are left out (and counted).", **at_least(2))
    eval_every: int = option(0, "Measure held-out loss every this many steps (0: each epoch end).", **at_least(0))
    out: str = option("runs/sft", "Folder for metrics.jsonl, reward.png, TensorBoard events and checkpoints.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.data) == bool(self.task):
            raise DataError(
                f"llmenv train sft needs exactly one of --data (a JSONL file of {SFT_FORMAT}) or --task (a registered "
                f"task to sample from, with --samples K); got {'both' if self.data else 'neither'}"
            )
        self.group_size = self.samples


class SFTRow(NamedTuple):
    """A conversation as the learner reads it: token ids and the loss mask (1 on trained tokens)."""

    ids: list[int]
    loss_mask: list[int]


def encode_turns(codec: ChatCodec, messages: Sequence[Message], trained: Sequence[int], where: str) -> SFTRow:
    """`messages` through the chat template, the loss mask 1 on each trained turn's content and its end-of-turn token.

    The text is cut at each trained content's start and end (found by rendering the turns before it
    with the generation prompt) and each piece is tokenised on its own, as policy tokens are.
    """
    text = codec.render(messages, add_generation_prompt=False)
    pieces: list[tuple[str, bool]] = []
    done = 0
    for turn in trained:
        head = codec.render(messages[:turn], add_generation_prompt=True)
        content = messages[turn]["content"]
        through = codec.render(messages[: turn + 1], add_generation_prompt=False)
        if not (text.startswith(through) and through.startswith(head + content)):
            raise DataError(
                f"{where}: the chat template does not render assistant turn {turn} as it renders the whole "
                "conversation (it rewrites the turn or earlier ones), so its tokens cannot be marked exactly"
            )
        pieces += [(text[done : len(head)], False), (content, True)]
        done = len(head) + len(content)
    pieces.append((text[done:], False))
    ids: list[int] = []
    loss_mask: list[int] = []
    after_turn = False
    for piece, is_turn in pieces:
        piece_ids = codec.encode_text(piece)
        piece_mask = [int(is_turn)] * len(piece_ids)
        if after_turn and piece_ids and piece_ids[0] in codec.stop_token_ids:
            piece_mask[0] = 1  # the end-of-turn token right after the content: the policy's to produce
        ids += piece_ids
        loss_mask += piece_mask
        after_turn = is_turn
    return SFTRow(ids, loss_mask)


def conversation(row: dict[str, Any], where: str) -> tuple[list[Message], list[int]]:
    """A row's messages and the indices of the turns trained on; a DataError naming the row if it fits neither form."""
    if "messages" in row:
        messages = prompt_messages(row["messages"], where, "messages")
        trained = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if not trained:
            raise DataError(f"{where}: messages hold no assistant turn to train on; expected {SFT_FORMAT}")
        return messages, trained
    if "prompt" in row and "completion" in row:
        completion = completion_text(row["completion"], where, "completion")
        messages = [*prompt_messages(row["prompt"], where), Message(role="assistant", content=completion)]
        return messages, [len(messages) - 1]
    raise DataError(f"{where}: has keys {sorted(row)}; expected {SFT_FORMAT}")


def encode_rows(rows: Iterable[tuple[str, dict[str, Any]]], codec: ChatCodec) -> list[SFTRow]:
    """Each (where, row) encoded through `codec` (`encode_turns` on its trained turns)."""
    return [encode_turns(codec, *conversation(row, where), where) for where, row in rows]


def token_nll(logp: torch.Tensor, loss_mask: torch.Tensor, trained_tokens: int) -> torch.Tensor:
    """`-sum(logp * loss_mask) / trained_tokens`, (B, L) -> (); `trained_tokens` counts the whole batch's mask."""
    return -(logp * loss_mask).sum() / max(trained_tokens, 1)


@dataclass(kw_only=True)
class SFTState(RunState):
    """The shared run state plus the encoded training and held-out rows."""

    train_rows: list[SFTRow]
    eval_rows: list[SFTRow]
    dropped: int
    """Rows left out because they are longer than `max_length` tokens."""


@dataclass(kw_only=True)
class SamplingState(LearnerState):
    """An online run's shared state plus the task's pass threshold (what a verified success is)."""

    threshold: float


def build(config: SFTConfig) -> SFTState:
    """Read and encode the rows (data errors before the model loads), then load the model and its optimizer."""
    device, resume_from = trainer.start_run(config)
    tokenizer = load_tokenizer(config.model)
    codec = ChatCodec(tokenizer)
    rows = encode_rows(read_rows(config.data, SFT_FORMAT), codec)
    if not rows:
        raise DataError(f"--data {config.data} holds no rows; expected one per line: {SFT_FORMAT}")
    eval_rows = encode_rows(read_rows(config.eval_data, SFT_FORMAT), codec) if config.eval_data else None
    fits, eval_fits, dropped = split_and_fit(rows, eval_rows, config.eval_fraction, config.max_length, _length)
    model, optimizer = trainer.load_learner(config, device)
    return SFTState(
        config=config,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        device=device,
        resume_from=resume_from,
        train_rows=fits,
        eval_rows=eval_fits,
        dropped=dropped,
    )


def _length(row: SFTRow) -> int:
    return len(row.ids)


def build_sampling(config: SFTConfig) -> SamplingState:
    """The shared online set-up (device, resume point, env, policy, model, optimizer) and the task's pass threshold."""
    base = trainer.setup(config)
    return trainer.extend(base, SamplingState, threshold=task_spec(config.task).pass_threshold)


def row_chunks(state: RunState, rows: Sequence[SFTRow]) -> list[Chunk]:
    """`rows` padded into forwards of `micro_batch` rows each, on the run's device."""
    pad = state.tokenizer.pad_token_id if state.tokenizer.pad_token_id is not None else 0
    chunks = []
    for start in range(0, len(rows), state.config.micro_batch):
        part = rows[start : start + state.config.micro_batch]
        ids, attention = padded([r.ids for r in part], pad, state.device)  # (b, L)
        loss_mask, _ = padded([r.loss_mask for r in part], 0, state.device)  # (b, L)
        chunks.append((ids, attention, loss_mask.float()))
    return chunks


def chunk_scores(state: RunState, chunk: Chunk, trained_tokens: int) -> tuple[torch.Tensor, int]:
    """The chunk's share of the batch loss (`token_nll` over `trained_tokens`) and how many tokens it predicts right."""
    ids, attention, loss_mask = chunk
    scores = completion_scores(state.model, ids, attention, loss_mask, with_hits=True, bf16=state.config.bf16)
    assert scores.hits is not None  # asked for with with_hits
    return token_nll(scores.logp, loss_mask, trained_tokens), int(scores.hits.sum())


def update(state: RunState, chunks: Sequence[Chunk]) -> dict[str, float]:
    """One optimisation step over the chunks (one batch), the loss a mean over all their trained tokens."""
    cfg = state.config
    trained_tokens = sum(int(mask.sum()) for _, _, mask in chunks)
    metrics = {"loss": 0.0, "token_accuracy": 0.0, "grad_norm": 0.0, "trained_tokens": trained_tokens}
    if not trained_tokens:  # nothing kept this step: no gradient, no optimizer step
        return metrics
    state.model.train()
    state.optimizer.zero_grad(set_to_none=True)
    right = 0
    for chunk in chunks:
        loss, hits = chunk_scores(state, chunk, trained_tokens)
        loss.backward()
        metrics["loss"] += loss.item()
        right += hits
    metrics["grad_norm"] = trainer.clip_gradients(trainer.trainable(state.model), cfg.max_grad_norm)
    state.optimizer.step()
    metrics["token_accuracy"] = right / trained_tokens
    return metrics


@torch.inference_mode()
def evaluate(state: SFTState) -> dict[str, float]:
    """Held-out loss (mean NLL per trained token) and token accuracy (argmax = the row's token), in eval mode."""
    state.model.eval()
    chunks = row_chunks(state, state.eval_rows)
    trained_tokens = sum(int(mask.sum()) for _, _, mask in chunks)
    loss, right = 0.0, 0
    for chunk in chunks:
        chunk_loss, hits = chunk_scores(state, chunk, trained_tokens)
        loss += float(chunk_loss)
        right += hits
    return {"eval_loss": loss, "eval_token_accuracy": right / max(trained_tokens, 1)}


def update_rows(state: SFTState, rows: Sequence[SFTRow]) -> dict[str, float]:
    """`update` on the given rows, with `tokens`: every token of the rows."""
    return {**update(state, row_chunks(state, rows)), "tokens": sum(len(r.ids) for r in rows)}


def train_step(state: SFTState) -> dict[str, Any]:
    """One step from data: its rows, the update, and the held-out evaluation when one is due."""
    held_out = evaluate if state.eval_rows else None
    return trainer.offline_step(state, state.train_rows, update_rows, held_out, dropped_rows=state.dropped)


def sampling_step(state: SamplingState) -> dict[str, Any]:
    """One rejection-sampling step: sample, keep the verified successes, train on their policy tokens."""
    started = time.perf_counter()
    episodes = trainer.play_episodes(state)
    generated = time.perf_counter()
    batch = to_batch(episodes, pad_token_id=state.policy.pad_token_id)
    kept = [i for i, e in enumerate(episodes) if e.error is None and e.passed(state.threshold)]
    chunks: list[Chunk] = []
    if kept:
        for rows in torch.tensor(kept).split(state.config.micro_batch):
            part = batch.select(rows)
            chunks.append((part.input_ids.to(state.device), part.attention_mask.to(state.device),
                           part.loss_mask.to(state.device)))  # fmt: skip
    metrics = update(state, chunks)
    state.model.eval()  # the next step samples
    finished = time.perf_counter()
    state.step += 1
    shared = trainer.rollout_metrics(batch, generation_s=generated - started, update_s=finished - generated, passes=1)
    return {"step": state.step, **metrics, "kept_fraction": len(kept) / len(episodes), **shared}


def _status(metrics: dict[str, Any]) -> str:
    text = f"loss {metrics['loss']:.3f} token acc {metrics['token_accuracy']:.0%}"
    if "eval_loss" in metrics:
        text += f" [bold]held-out loss {metrics['eval_loss']:.3f} acc {metrics['eval_token_accuracy']:.0%}[/]"
    return text


def _sampling_status(metrics: dict[str, Any]) -> str:
    text = f"kept {metrics['kept_fraction']:.0%} loss {metrics['loss']:.3f} {metrics['step_time_s']:.1f}s"
    return text + trainer.episode_status(metrics)


def train(config: SFTConfig, *, progress: bool = True) -> SFTState | SamplingState:
    """Fine-tune on `config.data`, or on `config.task`'s verified samples; the state after the last step."""
    if config.task:
        return trainer.train(config, build_sampling, sampling_step, name="SFT (rejection sampling)",
                             status=_sampling_status, progress=progress, subject=config.task)  # fmt: skip
    return trainer.train(config, build, train_step, name="SFT", status=_status, progress=progress,
                         plot_key="loss", subject=config.data)  # fmt: skip
