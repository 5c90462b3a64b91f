"""Online DPO: `llmenv train online-dpo --task ID`, pairs of the policy's own samples, on the shared trainer.

Each step plays `prompts_per_step` tasks `group_size` (>= 2) times through the environment (single-
or multi-turn: whatever the env is), so every episode is scored by the env's reward: the task's
verifier (which may be a `RewardModelVerifier` or a judge) or a PRM (`--prm`). Within each group,
pairs are drawn by a rule (`best-worst`: the highest-reward episode against the lowest; `all`: every
two whose rewards differ by more than `pair_delta`); groups whose rewards tie give none and are counted (`ties`), and
episodes whose verdict carries a verifier error are left out before pairing and counted. A pair's
log-probability is the sum over the policy's own tokens of its episode (`Trajectory.loss_mask`:
every policy turn of a multi-turn episode), under the policy and under the reference: a frozen copy
of `--reference` (default: the starting model) or, under LoRA, the same model with its adapter
disabled (no second copy in memory). The loss is any pairwise loss of `agents/preference.py` (DPO by
default). Chosen and rejected rows of a group share their prompt, which `agents/scoring.py` runs once.
`--spin` is SPIN (Chen et al. 2024): chosen = the task's reference answer as the assistant's reply
(written through `spin_template`), rejected = the policy's own sample, reference = the previous
iterate (the policy as it was at the start of each of `spin_iterations` equal spans of steps), a frozen
full copy also under LoRA (the base with the adapter merged in at each iteration boundary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llmenv.agents import trainer
from llmenv.agents.config import above, at_least, option
from llmenv.agents.data import padded
from llmenv.agents.dpo import LossOptions, encode_reply, reference_of
from llmenv.agents.preference import LOSSES, REFERENCE_FREE, PairLogps, implicit_rewards, rank_pairs
from llmenv.agents.rollout import RolloutBatch
from llmenv.agents.scoring import completion_logprobs
from llmenv.agents.trainer import LearnerConfig, LearnerState
from llmenv.chat import shared_codec
from llmenv.errors import ConfigError

PAIR_RULES = ("best-worst", "all")


@dataclass
class OnlineDPOConfig(LearnerConfig, LossOptions):
    """Everything an online DPO run needs; every field is a `llmenv train online-dpo` flag."""

    group_size: int = option(4, "Completions per task; pairs are drawn within each group (>= 2; SPIN: any).",
                             **at_least(1))  # fmt: skip
    lr: float = option(1e-6, "AdamW learning rate.", **above(0))
    loss: str = option("dpo", "A pairwise loss: dpo, cdpo, rdpo, ipo, simpo, orpo.", choices=LOSSES)
    pair_rule: str = option("best-worst", "best-worst (one pair per group) or all (every pair beyond pair_delta).",
                            choices=PAIR_RULES)  # fmt: skip
    pair_delta: float = option(
        0.0, "Pairs whose rewards differ by this much or less are ties (dropped).", **at_least(0)
    )
    spin: bool = option(False, "SPIN: chosen = the task's reference answer, rejected = the policy's sample.")
    spin_iterations: int = option(1, "SPIN: the reference becomes the current policy this many times.", **at_least(1))
    spin_template: str = option("{answer}", "SPIN: the chosen reply, with {answer} the task's reference answer.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.spin and self.group_size < 2:
            raise ConfigError(f"online DPO pairs samples of a task: --group-size must be >= 2, got {self.group_size}")
        if self.spin and "{answer}" not in self.spin_template:
            raise ConfigError(f"--spin-template must contain {{answer}}, got {self.spin_template!r}")
        if self.spin and self.loss in REFERENCE_FREE:
            raise ConfigError(f"--spin compares against the previous iterate; --loss {self.loss} reads no reference")


@dataclass(kw_only=True)
class OnlineDPOState(LearnerState):
    """The shared online state plus the reference (None: reference-free, or the LoRA base)."""

    config: OnlineDPOConfig
    reference: Any | None


def build(config: OnlineDPOConfig) -> OnlineDPOState:
    """The shared set-up (device, resume point, env, model, optimizer) and the reference the loss needs."""
    base = trainer.setup(config)
    reference = None  # reference-free, or the LoRA base under a disabled adapter
    if config.spin or (config.loss not in REFERENCE_FREE and (config.reference or not config.lora_rank)):
        reference = trainer.load_frozen(config.reference or config.model, base.device)
    state = trainer.extend(base, OnlineDPOState, reference=reference)
    if config.spin:  # the previous iterate is part of the run: a resume must restore it
        state.extra_state["spin_reference"] = reference
    return state


def choose_pairs(state: OnlineDPOState, batch: RolloutBatch) -> tuple[list[tuple[int, int]], int]:
    """(chosen row, rejected row) pairs within each group by the pair rule, and the number of ties dropped."""
    cfg = state.config
    pairs: list[tuple[int, int]] = []
    ties = 0
    for group in batch.group_ids.unique().tolist():
        members = [i for i in (batch.group_ids == group).nonzero().flatten().tolist() if not batch.errored[i]]
        if len(members) < 2:
            continue
        picked = rank_pairs([float(batch.rewards[i]) for i in members], cfg.pair_rule, cfg.pair_delta)
        pairs += [(members[c], members[r]) for c, r in picked.pairs]
        ties += picked.ties
    return pairs, ties


Side = tuple[list[int], list[float]]
"""One side of a pair: token ids and the loss mask over them (1 on the policy's tokens)."""


def episode_sequence(batch: RolloutBatch, row: int) -> Side:
    """A rollout row's attended tokens and their loss mask (every policy turn of the episode)."""
    width = int(batch.attention_mask[row].sum())
    return batch.input_ids[row, :width].tolist(), batch.loss_mask[row, :width].tolist()


def reference_sequence(state: OnlineDPOState, task: Any) -> Side:
    """SPIN's chosen side: the task's prompt, then its reference answer (through `spin_template`) as the reply."""
    if task.answer is None:
        raise ConfigError(f"--spin needs tasks with a reference answer; {state.config.task} has a task without one")
    reply = state.config.spin_template.replace("{answer}", str(task.answer))
    ids, start = encode_reply(shared_codec(state.tokenizer), task.messages(), reply, f"task {task.prompt!r:.40}")
    return ids, [0.0] * start + [1.0] * (len(ids) - start)


def sequence_logps(
    state: OnlineDPOState, sequences: list[Side]
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Summed policy-token log-probs (R,) under the policy (with gradient) and the reference (or None), and counts."""
    cfg, device = state.config, state.device
    ids, attention = padded([ids for ids, _ in sequences], state.policy.pad_token_id, device)  # (R, L)
    mask = torch.zeros(ids.shape, device=device)
    for i, (_, row_mask) in enumerate(sequences):
        mask[i, : len(row_mask)] = torch.tensor(row_mask)
    logp, _ = completion_logprobs(state.model, ids, attention, mask, bf16=cfg.bf16)  # (R, L)
    ref = None
    if cfg.spin or cfg.loss not in REFERENCE_FREE:
        with torch.no_grad(), reference_of(state.model, state.reference) as reference:
            ref = completion_logprobs(reference, ids, attention, mask, bf16=cfg.bf16)[0].sum(-1)
    return logp.sum(-1), ref, mask.sum(-1)


def step_pairs(state: OnlineDPOState, batch: RolloutBatch) -> tuple[list[tuple[Side, Side]], list[float], int]:
    """The step's (chosen, rejected) sequences, each pair's env-reward gap, and the ties dropped."""
    if state.config.spin:  # every scored sample loses to its task's reference answer
        rows = [i for i in range(len(batch.rewards)) if not batch.errored[i]]
        pairs = [(reference_sequence(state, batch.tasks[i]), episode_sequence(batch, i)) for i in rows]
        return pairs, [float("nan")] * len(rows), 0
    chosen_rows, ties = choose_pairs(state, batch)
    pairs = [(episode_sequence(batch, c), episode_sequence(batch, r)) for c, r in chosen_rows]
    return pairs, [float(batch.rewards[c] - batch.rewards[r]) for c, r in chosen_rows], ties


def copy_policy_into(reference: Any, model: Any) -> None:
    """Make `reference` (a frozen full model) the policy as it is now: its weights, or under LoRA, base + adapter.

    A LoRA policy's trained weights are its adapters: each wrapped linear layer's merged weight is the base
    weight plus the adapter's delta (peft's `get_delta_weight`); every other weight is frozen, so equal already.
    """
    if not hasattr(model, "get_base_model"):
        reference.load_state_dict(model.state_dict())
        return
    targets = dict(reference.named_modules())
    with torch.no_grad():
        for name, module in model.get_base_model().named_modules():
            if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
                delta = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
                targets[name].weight.copy_(module.base_layer.weight + delta)


def advance_spin_iterate(state: OnlineDPOState) -> None:
    """At the start of each SPIN iteration after the first, the reference becomes the current policy."""
    cfg = state.config
    span = -(-cfg.steps // cfg.spin_iterations)
    if cfg.spin and state.step and state.step % span == 0 and state.reference is not None:
        copy_policy_into(state.reference, state.model)


def update(state: OnlineDPOState, batch: RolloutBatch) -> dict[str, float]:
    """Pairs from the rollout, then one optimisation step on their loss (none when no pair was formed)."""
    cfg = state.config
    advance_spin_iterate(state)
    pairs, gaps, ties = step_pairs(state, batch)
    metrics = {"pairs": float(len(pairs)), "ties": float(ties), "loss": 0.0, "grad_norm": 0.0}
    if not pairs:  # no update; the pair figures are 0 so every row has the same fields
        names = ["chosen_reward", "rejected_reward", "preference_accuracy", "reward_margin"]
        names += ["chosen_logratio", "rejected_logratio"] if cfg.spin or cfg.loss not in REFERENCE_FREE else []
        return {**metrics, **dict.fromkeys(names + ([] if cfg.spin else ["score_gap"]), 0.0)}
    state.model.train()
    state.optimizer.zero_grad(set_to_none=True)
    per_forward = max(1, cfg.micro_batch // 2)
    figures: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(pairs), per_forward):
        chunk = pairs[start : start + per_forward]
        logp, ref, length = sequence_logps(state, [c for c, _ in chunk] + [r for _, r in chunk])  # (2p,) each
        n = len(chunk)
        split = PairLogps(logp[:n], logp[n:], None if ref is None else ref[:n], None if ref is None else ref[n:],
                          length[:n], length[n:])  # fmt: skip
        losses = cfg.pair_losses(split)
        loss = losses.sum() / len(pairs)
        loss.backward()
        metrics["loss"] += float(loss.detach())
        for key, value in _pair_figures(split, cfg.beta).items():
            figures.setdefault(key, []).append(value)
    metrics["grad_norm"] = trainer.clip_gradients(trainer.trainable(state.model), cfg.max_grad_norm)
    state.optimizer.step()
    state.model.eval()
    joined = {key: torch.cat(parts) for key, parts in figures.items()}
    metrics.update({key: float(value.mean()) for key, value in joined.items()})
    metrics["preference_accuracy"] = float((joined["chosen_reward"] > joined["rejected_reward"]).float().mean())
    metrics["reward_margin"] = float((joined["chosen_reward"] - joined["rejected_reward"]).mean())
    if not cfg.spin:
        metrics["score_gap"] = sum(gaps) / len(gaps)
    return metrics


def _pair_figures(split: PairLogps, beta: float) -> dict[str, torch.Tensor]:
    """Per-pair figures: implicit rewards and the log-ratios to the reference."""
    figures: dict[str, torch.Tensor] = {}
    if split.ref_chosen is None or split.ref_rejected is None:  # reference-free: beta times the mean token log-prob
        figures["chosen_reward"] = implicit_rewards(split.chosen / split.chosen_length, None, beta)
        figures["rejected_reward"] = implicit_rewards(split.rejected / split.rejected_length, None, beta)
        return figures
    figures["chosen_logratio"] = (split.chosen - split.ref_chosen).detach()
    figures["rejected_logratio"] = (split.rejected - split.ref_rejected).detach()
    figures["chosen_reward"] = implicit_rewards(split.chosen, split.ref_chosen, beta)
    figures["rejected_reward"] = implicit_rewards(split.rejected, split.ref_rejected, beta)
    return figures


def train_step(state: OnlineDPOState) -> dict[str, Any]:
    """One rollout and one update; advances `state.step` and returns the step's metrics."""
    return trainer.timed_step(state, update, passes=1)


def _status(metrics: dict[str, Any]) -> str:
    text = f"reward {metrics['reward_mean']:.3f} pairs {metrics['pairs']:.0f} loss {metrics['loss']:.4f}"
    text += f" {metrics['step_time_s']:.1f}s" + trainer.episode_status(metrics)
    if not metrics["pairs"]:
        text += " [yellow]no pairs: every group's rewards tie[/]"
    return text


def train(config: OnlineDPOConfig, *, progress: bool = True) -> OnlineDPOState:
    """Run online DPO for `config.steps` steps (metrics, plot, checkpoints, final export in `config.out`)."""
    return trainer.train(config, build, train_step, name="online DPO", status=_status, progress=progress)
