"""Bradley–Terry reward-model training: `llmenv train rm --data FILE`, on the shared trainer.

A reward model is the policy's causal LM loaded as a one-output sequence-classification model
(`llmenv.models.load_reward_model`: transformers' own `...ForSequenceClassification` head, so the
result loads anywhere as a reward model; LoRA allowed, the head then trains in full). Each
preference pair `{prompt, chosen, rejected[, margin]}` is rendered through the model's chat
template and scored at an explicit end index by the same code `RewardModelVerifier` scores with
(`encode_conversation`, and `pair_rewards`, which equals `sequence_rewards` on each side but runs the
tokens both sides share once), so training and scoring read the same position. The
loss is `-log sigmoid(r_chosen - r_rejected - margin)`, plus `center_coef * mean((r_c + r_r)^2)`
when asked (it keeps rewards centred on 0). Pairs are visited in a fresh seeded order each epoch
(the order is a function of seed and epoch, so a resumed run sees the same pairs as an
uninterrupted one); held-out pair accuracy is measured at the end of every epoch and at the last
step (or every `eval_every` steps). This file holds the config, the loss and the update; loading,
the loop, logs and checkpoints are `agents/trainer.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from llmenv.agents import trainer
from llmenv.agents.config import above, at_least, option
from llmenv.agents.data import completion_text, epoch_batch, prompt_messages, read_rows, split_and_fit
from llmenv.agents.trainer import RunConfig, RunState
from llmenv.chat import ChatCodec
from llmenv.errors import DataError
from llmenv.models import load_tokenizer
from llmenv.types import Message
from llmenv.verifiers.reward_model import encode_conversation
from llmenv.verifiers.reward_model import pair_rewards as pair_rewards_of

PAIR_FORMAT = '{"prompt": str | [messages], "chosen": str, "rejected": str, "margin": float (optional)}'
"""One preference pair per JSONL line (or `datasets` row); chosen/rejected may be `[{role: assistant, content}]`."""


@dataclass
class RMConfig(RunConfig):
    """Everything a reward-model run needs; every field is a `llmenv train rm` flag (shared ones in `RunConfig`)."""

    data: str = option("", "Preference pairs (prompt, chosen, rejected): JSONL or a datasets save_to_disk folder.")
    eval_data: str | None = option(None, "Held-out pairs in the same form (default: hold out eval_fraction of data).")
    eval_fraction: float = option(
        0.1, "Share of data held out when eval_data is not given.", check=lambda f: 0 <= f < 1, expects="in [0, 1)"
    )
    steps: int = option(100, "Optimisation steps (batch_size pairs each).", **at_least(1))
    batch_size: int = option(8, "Preference pairs per optimisation step.", **at_least(1))
    lr: float = option(1e-5, "AdamW learning rate.", **above(0))
    max_length: int = option(512, "Pairs with a side longer than this many tokens are left out (and counted).")
    center_coef: float = option(0.0, "Weight c of the centring term c * mean((r_chosen + r_rejected)^2).")
    eval_every: int = option(0, "Measure held-out accuracy every this many steps (0: each epoch end).", **at_least(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise DataError(f"llmenv train rm needs --data: a JSONL file of {PAIR_FORMAT}")


class Pair(NamedTuple):
    """A preference pair as token ids, each side with the index its reward is read at."""

    chosen: list[int]
    chosen_end: int
    rejected: list[int]
    rejected_end: int
    margin: float


def read_pairs(path: str, codec: ChatCodec) -> list[Pair]:
    """Every pair of a JSONL file / datasets folder, encoded through `codec`; DataError naming a bad row."""
    pairs = []
    for where, row in read_rows(path, PAIR_FORMAT):
        missing = [key for key in ("prompt", "chosen", "rejected") if key not in row]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}; expected {PAIR_FORMAT}")
        messages: list[Message] = prompt_messages(row["prompt"], where)
        margin = row.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
            raise DataError(f"{where}: margin must be a number, got {margin!r:.40}")
        chosen = encode_conversation(codec, messages, completion_text(row["chosen"], where, "chosen"))
        rejected = encode_conversation(codec, messages, completion_text(row["rejected"], where, "rejected"))
        pairs.append(Pair(*chosen, *rejected, float(margin or 0.0)))
    if not pairs:
        raise DataError(f"--data {path} holds no pairs; expected one per line: {PAIR_FORMAT}")
    return pairs


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None, center_coef: float = 0.0
) -> torch.Tensor:
    """`mean(-log sigmoid(r_c - r_r - margin)) + center_coef * mean((r_c + r_r)^2)` over pairs (P,) -> ()."""
    diff = r_chosen - r_rejected - (margin if margin is not None else 0.0)  # (P,)
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss


@dataclass(kw_only=True)
class RMState(RunState):
    """The shared run state plus the encoded training and held-out pairs."""

    train_pairs: list[Pair]
    eval_pairs: list[Pair]
    dropped: int
    """Pairs left out because a side is longer than `max_length` tokens."""


def build(config: RMConfig) -> RMState:
    """Read and encode the pairs (data errors before the model loads), then load the model and its optimizer."""
    device, resume_from = trainer.start_run(config)
    tokenizer = load_tokenizer(config.model)
    codec = ChatCodec(tokenizer)
    pairs = read_pairs(config.data, codec)
    eval_pairs = read_pairs(config.eval_data, codec) if config.eval_data else None
    fits, eval_fits, dropped = split_and_fit(
        pairs,
        eval_pairs,
        config.eval_fraction,
        config.max_length,
        lambda p: max(len(p.chosen), len(p.rejected)),
        "pair",
    )
    model, optimizer = trainer.load_learner(config, device, scalar_head=True)
    return RMState(
        config=config,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        device=device,
        resume_from=resume_from,
        train_pairs=fits,
        eval_pairs=eval_fits,
        dropped=dropped,
    )


def step_pairs(state: RMState, step: int) -> list[int]:
    """Indices of the pairs of `step` (0-based): `batch_size` positions of per-epoch seeded orders (`epoch_batch`)."""
    return epoch_batch(len(state.train_pairs), state.config.batch_size, state.config.seed, step)


def pair_rewards(state: RMState, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the chosen and rejected sides (P,) each; the prompt both sides share runs once per pair."""
    pad = state.tokenizer.pad_token_id if state.tokenizer.pad_token_id is not None else 0
    return pair_rewards_of(state.model, [p.chosen for p in pairs], [p.chosen_end for p in pairs],
                           [p.rejected for p in pairs], [p.rejected_end for p in pairs], pad=pad,
                           bf16=state.config.bf16)  # fmt: skip


def update(state: RMState, pairs: list[Pair]) -> dict[str, float]:
    """One optimisation step over `pairs`, `micro_batch` sequences (half as many pairs) per forward."""
    cfg = state.config
    state.model.train()
    state.optimizer.zero_grad(set_to_none=True)
    per_forward = max(1, cfg.micro_batch // 2)
    chosen, rejected, loss_sum = [], [], 0.0
    for start in range(0, len(pairs), per_forward):
        chunk = pairs[start : start + per_forward]
        r_c, r_r = pair_rewards(state, chunk)
        margin = torch.tensor([p.margin for p in chunk], device=state.device)
        loss = bradley_terry_loss(r_c, r_r, margin, cfg.center_coef) * (len(chunk) / len(pairs))
        loss.backward()
        loss_sum += loss.item()
        chosen.append(r_c.detach())
        rejected.append(r_r.detach())
    grad_norm = trainer.clip_gradients(trainer.trainable(state.model), cfg.max_grad_norm)
    state.optimizer.step()
    r_c, r_r = torch.cat(chosen), torch.cat(rejected)
    return {
        "loss": loss_sum,
        "accuracy": float((r_c > r_r).float().mean()),
        "margin_mean": float((r_c - r_r).mean()),
        "reward_chosen": float(r_c.mean()),
        "reward_rejected": float(r_r.mean()),
        "grad_norm": grad_norm,
        "tokens": sum(len(p.chosen) + len(p.rejected) for p in pairs),
    }


@torch.inference_mode()
def evaluate(state: RMState) -> dict[str, float]:
    """Held-out pair accuracy (ties count as wrong), loss and mean margin, in eval mode."""
    state.model.eval()
    chosen, rejected = [], []
    per_forward = max(1, state.config.micro_batch // 2)
    for start in range(0, len(state.eval_pairs), per_forward):
        r_c, r_r = pair_rewards(state, state.eval_pairs[start : start + per_forward])
        chosen.append(r_c)
        rejected.append(r_r)
    r_c, r_r = torch.cat(chosen), torch.cat(rejected)
    margin = torch.tensor([p.margin for p in state.eval_pairs], device=state.device)
    return {
        "eval_accuracy": float((r_c > r_r).float().mean()),
        "eval_loss": float(bradley_terry_loss(r_c, r_r, margin)),
        "eval_margin_mean": float((r_c - r_r).mean()),
    }


def train_step(state: RMState) -> dict[str, Any]:
    """One step: its pairs, the update, and the held-out evaluation when one is due."""
    held_out = evaluate if state.eval_pairs else None
    return trainer.offline_step(state, state.train_pairs, update, held_out, dropped_pairs=state.dropped)


def _status(metrics: dict[str, Any]) -> str:
    text = f"loss {metrics['loss']:.3f} acc {metrics['accuracy']:.0%}"
    if "eval_accuracy" in metrics:
        text += f" [bold]held-out acc {metrics['eval_accuracy']:.1%}[/]"
    return text


def train(config: RMConfig, *, progress: bool = True) -> RMState:
    """Train a reward model on `config.data` (see the module doc); the state after the last step."""
    return trainer.train(
        config,
        build,
        train_step,
        name="RM",
        status=_status,
        progress=progress,
        plot_key="margin_mean",
        subject=config.data,
    )
