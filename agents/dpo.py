"""Offline preference optimisation: `llmenv train dpo --data FILE` (DPO, cDPO, rDPO, IPO, SimPO, ORPO, KTO).

Pairs `{prompt, chosen, rejected}` (what `llmenv pairs` and `llmenv cai` write, and what
`llmenv train rm` reads) or, for `--loss kto`, unpaired rows `{prompt, completion, label}` come
from a JSONL file or a `datasets` folder. Each completion is rendered after its prompt through the
model's chat template; its tokens are the reply the policy would have generated (the content and
the end-of-turn token, not the template's trailing whitespace), and the loss reads the sum of their
log-probs (`sequence_logps`, which slices hidden states to those positions before the LM head). The
reference is a frozen copy of `--reference` (default: the starting model) or, under LoRA, the same
model with its adapter disabled (no second copy in memory); SimPO and ORPO load none. The losses are
`agents/preference.py`'s pure functions. A batch's chosen and rejected sides (KTO: its completions
and the mismatched completions that estimate the reference point) run in one forward.
Pairs are visited in a fresh seeded order each epoch, so a resume is exact; held-out preference
accuracy is measured at each epoch end and the last step. The loop, logs and checkpoints are
`agents/trainer.py`'s. `agents/online_dpo.py` reuses `sequence_logps` and the losses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from llmenv.agents import trainer
from llmenv.agents.config import above, at_least, option
from llmenv.agents.data import (
    completion_text,
    held_out_split,
    padded,
    prompt_messages,
    read_rows,
)
from llmenv.agents.preference import (
    LOSSES,
    REFERENCE_FREE,
    PairLogps,
    implicit_rewards,
    kto_loss,
    kto_reference_point,
    pair_loss,
)
from llmenv.agents.scoring import completion_logprobs
from llmenv.agents.trainer import RunConfig, RunState
from llmenv.chat import ChatCodec
from llmenv.errors import DataError
from llmenv.models import load_tokenizer
from llmenv.types import Message
from llmenv.verifiers.reward_model import encode_conversation

PAIR_FORMAT = '{"prompt": str | [messages], "chosen": str, "rejected": str}'
"""One preference pair per JSONL line (or `datasets` row); chosen/rejected may be `[{role: assistant, content}]`."""

KTO_FORMAT = '{"prompt": str | [messages], "completion": str, "label": bool}'
"""One unpaired example per line for `--loss kto`: label true for a desirable completion."""


@dataclass
class LossOptions:
    """The preference-loss flags offline and online DPO share (`loss` itself is each learner's own)."""

    loss: str = option("dpo", "The preference loss (each learner lists its own choices).")
    beta: float = option(0.1, "beta (the KL strength; SimPO's reward scale; ORPO's lambda).", **above(0))
    label_smoothing: float = option(
        0.0, "cdpo/rdpo: the assumed rate of flipped labels.", check=lambda e: 0 <= e < 0.5, expects="in [0, 0.5)"
    )
    ipo_length_normalized: bool = option(False, "ipo: divide each log-ratio by its token count (TRL's IPO).")
    simpo_gamma: float = option(0.5, "simpo: the target reward margin gamma.")
    nll_coef: float = option(0.0, "Add this times the chosen side's mean token NLL (RPO; SimPO's NLL term).")
    reference: str = option("", "Reference model (default: the starting model; under LoRA the adapter disabled).")

    def pair_losses(self, logps: PairLogps) -> torch.Tensor:
        """`pair_loss` (P,) of `self.loss` over `logps` with these options."""
        return pair_loss(self.loss, logps, beta=self.beta, epsilon=self.label_smoothing, gamma=self.simpo_gamma,
                         nll_coef=self.nll_coef, ipo_length_normalized=self.ipo_length_normalized)  # fmt: skip


@dataclass
class DPOConfig(RunConfig, LossOptions):
    """Everything an offline preference run needs; every field is a `llmenv train dpo` flag."""

    data: str = option("", "Preference pairs (prompt, chosen, rejected), or KTO rows: JSONL or a datasets folder.")
    eval_data: str | None = option(None, "Held-out rows in the same form (default: hold out eval_fraction).")
    eval_fraction: float = option(
        0.1, "Share of rows held out when eval_data is not given.", check=lambda f: 0 <= f < 1, expects="in [0, 1)"
    )
    loss: str = option(
        "dpo",
        "dpo, cdpo (label smoothing), rdpo (robust), ipo, simpo, orpo (reference-free), kto (unpaired rows).",
        check=lambda name: name in (*LOSSES, "kto"),
        expects=f"one of {', '.join((*LOSSES, 'kto'))}",
    )
    desirable_weight: float = option(1.0, "kto: weight of desirable examples.", **above(0))
    undesirable_weight: float = option(1.0, "kto: weight of undesirable examples.", **above(0))
    steps: int = option(100, "Optimisation steps (batch_size rows each).", **at_least(1))
    batch_size: int = option(8, "Pairs (KTO: examples) per optimisation step.", **at_least(1))
    lr: float = option(5e-7, "AdamW learning rate.", **above(0))
    max_length: int = option(1024, "Rows with a sequence longer than this many tokens are left out (and counted).")
    eval_every: int = option(0, "Measure held-out metrics every this many steps (0: each epoch end).", **at_least(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            form = KTO_FORMAT if self.loss == "kto" else PAIR_FORMAT
            raise DataError(f"llmenv train dpo needs --data: a JSONL file of {form}")


class Reply(NamedTuple):
    """A completion after its prompt as the policy sees it: the token ids up to its end, and where it starts."""

    ids: list[int]
    start: int


class Row(NamedTuple):
    """One training row: a pair (chosen, rejected) or, for KTO, one completion (`rejected` None) and its label."""

    chosen: Reply
    rejected: Reply | None
    label: bool


def encode_reply(codec: ChatCodec, messages: list[Message], completion: str, where: str) -> Reply:
    """`messages` then the assistant's `completion`: ids through its end-of-turn token, the reply's first index."""
    prompt = [int(i) for i in codec.encode(messages, add_generation_prompt=True)]
    ids, end = encode_conversation(codec, messages, completion)
    if ids[: len(prompt)] != prompt or end < len(prompt):
        raise DataError(f"{where}: the chat template renders the prompt differently once a reply follows it")
    return Reply(ids[: end + 1], len(prompt))


def read_data(path: str, codec: ChatCodec, kto: bool) -> list[Row]:
    """Every row of a JSONL file / datasets folder, encoded; a DataError naming a bad row and the expected form."""
    form = KTO_FORMAT if kto else PAIR_FORMAT
    keys = ("prompt", "completion", "label") if kto else ("prompt", "chosen", "rejected")
    rows = []
    for where, row in read_rows(path, form):
        missing = [key for key in keys if key not in row]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}; expected {form}")
        messages = prompt_messages(row["prompt"], where)
        if kto:
            if not isinstance(row["label"], bool):
                raise DataError(f"{where}: label must be true or false, got {row['label']!r:.40}")
            reply = encode_reply(codec, messages, completion_text(row["completion"], where, "completion"), where)
            rows.append(Row(reply, None, row["label"]))
        else:
            chosen = encode_reply(codec, messages, completion_text(row["chosen"], where, "chosen"), where)
            rejected = encode_reply(codec, messages, completion_text(row["rejected"], where, "rejected"), where)
            rows.append(Row(chosen, rejected, True))
    if not rows:
        raise DataError(f"--data {path} holds no rows; expected one per line: {form}")
    return rows


def sequence_logps(
    model: Any, replies: Sequence[Reply], *, pad: int, device: torch.device, bf16: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each reply's tokens (R,) under `model`, and the replies' token counts (R,), one forward."""
    ids, attention = padded([r.ids for r in replies], pad, device)  # (R, L)
    mask = torch.zeros_like(ids)
    for i, reply in enumerate(replies):
        mask[i, reply.start : len(reply.ids)] = 1
    logp, _ = completion_logprobs(model, ids, attention, mask, bf16=bf16)  # (R, L)
    return logp.sum(-1), mask.sum(-1).to(logp.dtype)


@contextlib.contextmanager
def reference_of(model: Any, reference: Any | None) -> Iterator[Any]:
    """The model to read reference log-probs from: `reference`, else `model` with its LoRA adapter disabled."""
    if reference is not None:
        yield reference
        return
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        model.train(was_training)


@dataclass(kw_only=True)
class DPOState(RunState):
    """The shared run state plus the reference (None: reference-free, or the LoRA base) and the rows."""

    reference: Any | None
    train_rows: list[Row]
    eval_rows: list[Row]
    dropped: int
    """Rows left out because a sequence is longer than `max_length` tokens."""


def _fits(row: Row, limit: int) -> bool:
    return len(row.chosen.ids) <= limit and (row.rejected is None or len(row.rejected.ids) <= limit)


def uses_reference(config: DPOConfig) -> bool:
    """Whether the loss compares against a reference model (SimPO and ORPO do not)."""
    return config.loss not in REFERENCE_FREE


def build(config: DPOConfig) -> DPOState:
    """Read and encode the rows (data errors before any model loads), then the model, optimizer and reference."""
    device, resume_from = trainer.start_run(config)
    tokenizer = load_tokenizer(config.model)
    codec = ChatCodec(tokenizer)
    kto = config.loss == "kto"
    rows = read_data(config.data, codec, kto)
    eval_rows = read_data(config.eval_data, codec, kto) if config.eval_data else []
    if not config.eval_data and config.eval_fraction:
        kept, held = held_out_split(len(rows), config.eval_fraction)
        eval_rows, rows = [rows[i] for i in held], [rows[i] for i in kept]
    fits = [r for r in rows if _fits(r, config.max_length)]
    if not fits:
        raise DataError(f"no training row fits max_length={config.max_length} tokens ({len(rows)} rows read)")
    eval_fits = [r for r in eval_rows if _fits(r, config.max_length)]
    model, optimizer = trainer.load_learner(config, device)
    reference = None
    if uses_reference(config) and (config.reference or not config.lora_rank):
        reference = trainer.load_frozen(config.reference or config.model, device)
    return DPOState(
        config=config,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        device=device,
        resume_from=resume_from,
        reference=reference,
        train_rows=fits,
        eval_rows=eval_fits,
        dropped=len(rows) - len(fits) + len(eval_rows) - len(eval_fits),
    )


def _pad(state: DPOState) -> int:
    return state.tokenizer.pad_token_id if state.tokenizer.pad_token_id is not None else 0


def row_logps(state: DPOState, replies: Sequence[Reply]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Policy log-probs (R,) (with gradient when enabled), reference log-probs (R,) or None, token counts (R,)."""
    pad, bf16 = _pad(state), state.config.bf16
    logp, length = sequence_logps(state.model, replies, pad=pad, device=state.device, bf16=bf16)
    ref = None
    if uses_reference(state.config):
        with torch.no_grad(), reference_of(state.model, state.reference) as reference:
            ref, _ = sequence_logps(reference, replies, pad=pad, device=state.device, bf16=bf16)
    return logp, ref, length


def pair_losses(state: DPOState, rows: Sequence[Row]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair losses (P,) and the detached per-pair figures the metrics average (rewards, log-probs)."""
    cfg, count = state.config, len(rows)
    replies = [r.chosen for r in rows] + [r.rejected for r in rows if r.rejected is not None]
    logp, ref, length = row_logps(state, replies)  # (2P,) each: the chosen sides, then the rejected
    split = PairLogps(logp[:count], logp[count:], None if ref is None else ref[:count],
                      None if ref is None else ref[count:], length[:count], length[count:])  # fmt: skip
    losses = cfg.pair_losses(split)
    if ref is None:  # reference-free: the reward is beta times the mean token log-prob
        chosen_reward = implicit_rewards(split.chosen / split.chosen_length, None, cfg.beta)
        rejected_reward = implicit_rewards(split.rejected / split.rejected_length, None, cfg.beta)
    else:
        chosen_reward = implicit_rewards(split.chosen, split.ref_chosen, cfg.beta)
        rejected_reward = implicit_rewards(split.rejected, split.ref_rejected, cfg.beta)
    figures = {
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "chosen_logp": split.chosen.detach(),
        "rejected_logp": split.rejected.detach(),
    }
    return losses, figures


def kto_losses(state: DPOState, rows: Sequence[Row]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example KTO losses (N,) and figures; the reference point is the batch's mismatched-pair KL estimate."""
    cfg, count = state.config, len(rows)
    # completion i + 1 after prompt i: a completion that does not answer its prompt, for the KL estimate
    mismatched = [Reply(r.chosen.ids[: r.chosen.start] + s.chosen.ids[s.chosen.start :], r.chosen.start)
                  for r, s in zip(rows, [*rows[1:], rows[0]])]  # fmt: skip
    logp, ref, _ = row_logps(state, [r.chosen for r in rows] + mismatched)  # (2N,) each
    assert ref is not None  # KTO always has a reference
    z0 = kto_reference_point(logp[count:], ref[count:])
    desirable = torch.tensor([r.label for r in rows], device=state.device)
    losses = kto_loss(logp[:count], ref[:count], desirable, z0, beta=cfg.beta,
                      desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)  # fmt: skip
    rewards = implicit_rewards(logp[:count], ref[:count], cfg.beta)
    return losses, {"chosen_reward": rewards[desirable], "rejected_reward": rewards[~desirable], "kl": z0[None]}


def batch_losses(state: DPOState, rows: Sequence[Row]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`kto_losses` for `--loss kto`, else `pair_losses`."""
    return kto_losses(state, rows) if state.config.loss == "kto" else pair_losses(state, rows)


def _summary(figures: dict[str, list[torch.Tensor]], prefix: str = "") -> dict[str, float]:
    """Means of the gathered per-row figures, and the preference accuracy and margin of paired rewards."""
    joined = {key: torch.cat(parts) for key, parts in figures.items()}
    out = {prefix + key: float(value.mean()) if value.numel() else float("nan") for key, value in joined.items()}
    chosen, rejected = joined["chosen_reward"], joined["rejected_reward"]
    if "kl" not in joined:  # pairs: accuracy and margin are per pair
        out[prefix + "preference_accuracy"] = float((chosen > rejected).float().mean())
        out[prefix + "reward_margin"] = float((chosen - rejected).mean())
    elif chosen.numel() and rejected.numel():  # KTO: desirable vs undesirable means
        out[prefix + "reward_margin"] = float(chosen.mean() - rejected.mean())
    return out


def update(state: DPOState, rows: Sequence[Row]) -> dict[str, float]:
    """One optimisation step over `rows`, `micro_batch` sequences per forward, the loss the mean over rows.

    KTO's reference point is estimated per forward (per micro-batch), as its batch KL.
    """
    cfg = state.config
    state.model.train()
    state.optimizer.zero_grad(set_to_none=True)
    per_forward = max(1, cfg.micro_batch // 2)
    loss_sum = 0.0
    figures: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(rows), per_forward):
        chunk = rows[start : start + per_forward]
        losses, chunk_figures = batch_losses(state, chunk)
        loss = losses.sum() / len(rows)
        loss.backward()
        loss_sum += loss.item()
        for key, value in chunk_figures.items():
            figures.setdefault(key, []).append(value)
    grad_norm = trainer.clip_gradients(trainer.trainable(state.model), cfg.max_grad_norm)
    state.optimizer.step()
    tokens = sum(len(r.chosen.ids) + (len(r.rejected.ids) if r.rejected else 0) for r in rows)
    return {"loss": loss_sum, **_summary(figures), "grad_norm": grad_norm, "tokens": tokens}


@torch.inference_mode()
def evaluate(state: DPOState) -> dict[str, float]:
    """Held-out loss, preference accuracy, reward margin and rewards, in eval mode."""
    state.model.eval()
    per_forward = max(1, state.config.micro_batch // 2)
    total = 0.0
    figures: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(state.eval_rows), per_forward):
        losses, chunk_figures = batch_losses(state, state.eval_rows[start : start + per_forward])
        total += float(losses.sum())
        for key, value in chunk_figures.items():
            figures.setdefault(key, []).append(value)
    return {"eval_loss": total / len(state.eval_rows), **_summary(figures, "eval_")}


def train_step(state: DPOState) -> dict[str, Any]:
    """One step: its rows, the update, and the held-out evaluation when one is due."""
    held_out = evaluate if state.eval_rows else None
    return trainer.offline_step(state, state.train_rows, update, held_out, dropped_rows=state.dropped)


def _status(metrics: dict[str, Any]) -> str:
    text = f"loss {metrics['loss']:.3f} margin {metrics.get('reward_margin', float('nan')):.3f}"
    if "eval_preference_accuracy" in metrics:
        text += f" [bold]held-out acc {metrics['eval_preference_accuracy']:.1%}[/]"
    return text


def train(config: DPOConfig, *, progress: bool = True) -> DPOState:
    """Train a policy on `config.data` with `config.loss` (see the module doc); the state after the last step."""
    return trainer.train(
        config,
        build,
        train_step,
        name=config.loss.upper(),
        status=_status,
        progress=progress,
        plot_key="reward_margin",
        subject=config.data,
    )
