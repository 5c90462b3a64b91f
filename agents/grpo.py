"""GRPO: group-relative policy optimisation over llmenv environments, in one readable file.

Each step plays `prompts_per_step` tasks `group_size` times (a `VectorLLMEnv` with groups),
turns rewards into group-relative advantages, and takes a clipped policy-gradient step on the
policy tokens only. Episodes whose verifier failed (`Verdict.error`) are left out of the loss and
of their group's baseline, and counted (`verifier_error_fraction`). The variants that papers argue
about are config choices, each resolved to one function once: advantage estimator (GRPO std /
Dr. GRPO none / batch / RLOO / REINFORCE++ per token, with or without a group baseline), loss
aggregation (token mean as DAPO, sequence mean as GRPO, constant normaliser as Dr. GRPO), token
or sequence (GSPO) importance ratios, clip-higher, dynamic sampling, KL to a reference model (off
by default, so no reference model is loaded). Log-probs are computed on completion positions only
(see agents/scoring.py). Reward shaping is the task's business (a `Rubric`), not the learner's.
When verdicts carry step scores (`Verdict.steps`, e.g. from `--prm`), DeepSeekMath's process
advantages are added, weighed against the outcome's by `outcome_weight` and `process_weight`.
`train(config)` is the loop behind `llmenv train grpo`; what every learner shares around it (loading,
the step loop, progress, metrics, checkpoints, resume, Ctrl-C) is in agents/trainer.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from llmenv.agents import losses, trainer
from llmenv.agents.config import at_least, option
from llmenv.agents.rollout import RolloutBatch
from llmenv.agents.scoring import completion_logprobs
from llmenv.agents.trainer import LearnerConfig, LearnerState


@dataclass
class GRPOConfig(LearnerConfig):
    """Everything a GRPO run needs; every field is a `llmenv train grpo` flag (shared ones in `LearnerConfig`)."""

    group_size: int = option(
        4,
        "Completions per task; advantages are relative within a group.",
        check=lambda g: g >= 2,
        expects=">= 2: with one completion per task every advantage is 0 and nothing is learned",
    )
    out: str = option("runs/grpo", "Folder for metrics.jsonl, reward.png, TensorBoard events and checkpoints.")
    epochs: int = option(
        1,
        "Optimisation passes over each rollout; >1 stores old log-probs with an extra forward pass.",
        **at_least(1),
    )
    advantage: str = option(
        "std",
        'Advantage: "std" (GRPO), "none" (Dr. GRPO), "batch" (batch-std), "rloo" (leave-one-out), "reinforce_pp" or'
        ' "reinforce_pp_baseline" (REINFORCE++ per token, whitened over the batch; with a group-mean baseline).',
        choices=losses.ADVANTAGES,
    )
    loss_aggregation: str = option(
        "token_mean",
        '"token_mean" (DAPO), "sequence_mean" (GRPO) or "constant" (Dr. GRPO: / max_new_tokens).',
        choices=losses.AGGREGATIONS,
    )
    importance: str = option(
        "token", '"token" (PPO/GRPO ratio per token) or "sequence" (GSPO).', choices=("token", "sequence")
    )
    clip_low: float = option(
        0.2, "Lower clip range of the ratio (1 - clip_low).", check=lambda c: 0 <= c < 1, expects="in [0, 1)"
    )
    clip_high: float = option(
        0.28,
        "Upper clip range (1 + clip_high); above clip_low is DAPO's clip-higher.",
        **at_least(0),
    )
    beta: float = option(
        0.0,
        "KL coefficient towards the initial model; 0 loads no reference model.",
        **at_least(0),
    )
    kl_estimator: str = option("k3", '"k1" or "k3" (Schulman) per-token KL estimator.', choices=("k1", "k3"))
    entropy_coef: float = option(0.0, "Entropy bonus coefficient.")
    dynamic_sampling: bool = option(False, "Drop groups whose rewards do not vary (DAPO); they carry no gradient.")
    drop_cut: bool = option(False, "Leave completions cut at max_new_tokens (no stop token) out of the loss.")


@dataclass(kw_only=True)
class TrainState(LearnerState):
    """What the loop carries between steps: the shared state plus GRPO's reference and chosen functions."""

    config: GRPOConfig
    reference: Any | None
    advantage_fn: Callable[..., torch.Tensor]
    aggregate_fn: Callable[..., torch.Tensor]


def build(config: GRPOConfig) -> TrainState:
    """The shared set-up (device, resume point, env, model, optimizer), a reference when beta > 0, the variants."""
    base = trainer.setup(config)
    reference = trainer.load_frozen(config.model, base.device) if config.beta > 0 else None
    aggregate = losses.AGGREGATIONS[config.loss_aggregation]
    if config.loss_aggregation == "constant":
        aggregate = _constant_aggregation(config.max_new_tokens)
    return trainer.extend(
        base,
        TrainState,
        reference=reference,
        advantage_fn=losses.ADVANTAGES[config.advantage],
        aggregate_fn=aggregate,
    )


def _constant_aggregation(max_tokens: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def aggregate(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return losses.constant_normalizer(loss, mask, max_tokens=max_tokens)

    return aggregate


def policy_loss(
    state: TrainState, rows: RolloutBatch, advantages: torch.Tensor, old_logp: torch.Tensor | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective on some rows of a rollout (`old_logp` None = single on-policy pass)."""
    cfg, device = state.config, state.device
    ids, attention = rows.input_ids.to(device), rows.attention_mask.to(device)  # (b, L)
    mask = rows.loss_mask.to(device)  # (b, L)
    logp, entropy = completion_logprobs(
        state.model, ids, attention, mask, with_entropy=True, entropy_grad=cfg.entropy_coef > 0, bf16=cfg.bf16
    )  # (b, L)
    old = logp.detach() if old_logp is None else old_logp.to(device)  # (b, L)
    adv = advantages.to(device)  # (b, L)
    if cfg.importance == "sequence":
        per_token, clipped = losses.gspo_surrogate(logp, old, adv, mask, clip_low=cfg.clip_low, clip_high=cfg.clip_high)
    else:
        per_token, clipped = losses.clipped_surrogate(logp, old, adv, clip_low=cfg.clip_low, clip_high=cfg.clip_high)
    kl = torch.zeros_like(logp)  # (b, L)
    if state.reference is not None:
        with torch.no_grad():
            ref_logp, _ = completion_logprobs(state.reference, ids, attention, mask, bf16=cfg.bf16)  # (b, L)
        kl = losses.kl_penalty(logp, ref_logp, estimator=cfg.kl_estimator) * mask  # (b, L)
        per_token = per_token + cfg.beta * kl
    if cfg.entropy_coef:
        assert entropy is not None  # asked for with with_entropy=True
        per_token = per_token - cfg.entropy_coef * entropy
    loss = state.aggregate_fn(per_token, mask)
    stats = {
        "kl": float(losses.masked_mean(kl.detach(), mask)),
        "entropy": float(losses.masked_mean(entropy.detach(), mask)) if entropy is not None else 0.0,
        "clip_fraction": float(losses.masked_mean(clipped.float(), mask)),
    }
    return loss, stats


def update(state: TrainState, batch: RolloutBatch) -> dict[str, float]:
    """Advantages, filtering, then `epochs` passes of micro-batched gradient steps; returns metrics.

    Episodes whose verdict carries a verifier error are neither trained on nor counted in their
    group's advantage baseline: a crashed check is not a wrong answer.
    """
    cfg = state.config
    scored = ~batch.errored  # (B,)
    advantages = torch.zeros_like(batch.loss_mask, dtype=batch.rewards.dtype)  # (B, L): sequence-level ones fill a row
    if scored.any():
        rewards, groups, mask = batch.rewards[scored], batch.group_ids[scored], batch.loss_mask[scored]
        found = state.advantage_fn(rewards, groups, mask)  # (n,) sequence-level or (n, L) per token
        advantages[scored] = cfg.outcome_weight * found.reshape(len(found), -1)  # (n, 1) broadcasts over L
    varying = _varying_groups(batch.rewards, batch.group_ids, scored)  # (B,)
    if cfg.process_weight > 0 and batch.step_mask[scored].any():  # process supervision on the scored steps
        process = losses.process_advantages(
            batch.process_rewards[scored], batch.step_mask[scored], batch.group_ids[scored], batch.loss_mask[scored]
        )  # (n, L)
        advantages[scored] += cfg.process_weight * process
        varying[scored] |= process.abs().sum(1) > 0  # steps that vary within the group carry signal too
    keep = scored.clone()  # (B,)
    if cfg.dynamic_sampling:
        keep &= varying
    if cfg.drop_cut:
        keep &= ~batch.cut
    rows = torch.nonzero(keep)[:, 0]
    groups = batch.group_ids[scored].unique()
    flat = [g for g in groups.tolist() if not varying[(batch.group_ids == g) & scored].any()]
    metrics = {
        "kept": float(keep.float().mean()),
        "zero_variance_group_fraction": len(flat) / max(len(groups), 1),
        "loss": 0.0,
        "kl": 0.0,
        "entropy": 0.0,
        "clip_fraction": 0.0,
        "grad_norm": 0.0,
    }
    if len(rows) == 0:
        return metrics
    chunks = [(chunk, batch.select(chunk)) for chunk in rows.split(cfg.micro_batch)]
    old_logps: list[torch.Tensor | None] = [None] * len(chunks)
    if cfg.epochs > 1:  # later epochs are off-policy: keep the log-probs of the weights that sampled
        device = state.device
        with torch.no_grad():
            old_logps = [
                completion_logprobs(
                    state.model,
                    sub.input_ids.to(device),
                    sub.attention_mask.to(device),
                    sub.loss_mask.to(device),
                    bf16=cfg.bf16,
                )[0]
                for _, sub in chunks
            ]
    state.model.train()
    for _ in range(cfg.epochs):
        state.optimizer.zero_grad(set_to_none=True)
        for (chunk, sub), old in zip(chunks, old_logps):
            loss, stats = policy_loss(state, sub, advantages[chunk, : sub.input_ids.shape[1]], old)
            (loss * len(chunk) / len(rows)).backward()
            metrics["loss"] += float(loss.detach()) * len(chunk) / len(rows) / cfg.epochs
            for key, value in stats.items():
                metrics[key] += value * len(chunk) / len(rows) / cfg.epochs
        grad_norm = trainer.clip_gradients(trainer.trainable(state.model), cfg.max_grad_norm)
        metrics["grad_norm"] += float(grad_norm) / cfg.epochs
        state.optimizer.step()
    state.model.eval()
    return metrics


def _varying_groups(rewards: torch.Tensor, group_ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """True for rows whose group's scored rewards are not all equal (a group with signal)."""
    keep = torch.zeros_like(rewards, dtype=torch.bool)  # (B,)
    for group in group_ids.unique():
        members = (group_ids == group) & scored  # (B,)
        if members.any():
            keep[members] = bool(rewards[members].max() > rewards[members].min())
    return keep


def train(config: GRPOConfig, *, progress: bool = True) -> TrainState:
    """Run GRPO for `config.steps` steps, writing metrics, plot, checkpoints and the final export to `config.out`.

    Ctrl-C stops after the current step with a resume checkpoint saved (`state.interrupted`).
    """
    return trainer.train(config, build, train_step, name="GRPO", status=_status, progress=progress)


def _status(metrics: dict[str, Any]) -> str:
    """The progress line's text for one step, with a warning when the step carried no learning signal."""
    text = f"reward {metrics['reward_mean']:.3f} loss {metrics['loss']:+.4f} {metrics['step_time_s']:.1f}s"
    text += trainer.episode_status(metrics)
    if metrics["zero_variance_group_fraction"] >= 1.0 or metrics["kept"] == 0.0:
        text += " [yellow]no learning signal: every group's rewards are equal[/]"
    return text


def train_step(state: TrainState) -> dict[str, Any]:
    """One rollout and one update; advances `state.step` and returns the step's metrics."""
    return trainer.timed_step(state, update, passes=state.config.epochs)
