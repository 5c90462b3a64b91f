"""PPO with a critic over llmenv environments, single- and multi-turn, in one readable file.

Each step plays `prompts_per_step` tasks (`group_size` times each) and scores the rollout once
without gradient: the policy's log-probs, the critic's values and, when a KL coefficient is set,
the reference model's log-probs. Rewards are per token: each turn's reward at that turn's last
policy token (the final verdict at the episode's last one), dense process rewards where the
trajectory carries them, and, with `kl_in="reward"`, a per-token k1 penalty `-kl_coef * (logp -
ref_logp)` as in TRL <= 1.12 and OpenRLHF. GAE runs over policy tokens only, so the env and tool
tokens between turns are skipped (veRL's behaviour). Then `epochs` passes over `minibatches`
shuffled minibatches take clipped policy steps (clip-higher allowed) and clipped value steps, with
whitened advantages, an optional entropy bonus, an optional KL loss term (`kl_in="loss"`), and an
approximate-KL early stop (`target_kl`). The critic is a value head on the policy's trunk (one
forward for both, `critic="head"`) or a separate value model with its own optimizer and learning
rate (`critic="separate"`), trained alone for `critic_warmup_steps` first. The KL coefficient is
fixed, or adapted by Ziegler et al.'s controller towards `kl_target` (nats per sequence). Episodes
whose verifier failed are left out of the loss and counted. Loading, the loop, logs, checkpoints
(critic, its optimizer and the KL coefficient included) and resume are agents/trainer.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llmenv.agents import decoding, losses, trainer
from llmenv.agents.config import above, at_least, option
from llmenv.agents.rollout import RolloutBatch
from llmenv.agents.scoring import completion_logprobs, completion_scores, token_values
from llmenv.agents.trainer import LearnerConfig, LearnerState
from llmenv.models import load_model


@dataclass
class PPOConfig(LearnerConfig):
    """Everything a PPO run needs; every field is a `llmenv train ppo` flag (shared ones in `LearnerConfig`)."""

    out: str = option("runs/ppo", "Folder for metrics.jsonl, reward.png, TensorBoard events and checkpoints.")
    critic: str = option(
        "head",
        '"head": a value head on the policy\'s trunk (one forward); "separate": its own value model and optimizer.',
        choices=("head", "separate"),
    )
    critic_model: str | None = option(
        None, "Model a separate critic starts from (default: --model, the policy's starting point)."
    )
    critic_lr: float = option(1e-5, "AdamW learning rate of the critic (the value head, or the separate model).")
    critic_warmup_steps: int = option(0, "First steps in which only the critic learns.", **at_least(0))
    vf_coef: float = option(0.1, "Weight of the value loss next to the policy loss.", **at_least(0))
    value_clip: float = option(0.2, "Values move at most this far from the rollout's per epoch.", **above(0))
    epochs: int = option(4, "PPO epochs: passes over each rollout.", **at_least(1))
    minibatches: int = option(1, "Minibatches per epoch, one optimizer step each.", **at_least(1))
    clip_low: float = option(
        0.2, "Lower clip range of the ratio (1 - clip_low).", check=lambda c: 0 <= c < 1, expects="in [0, 1)"
    )
    clip_high: float = option(0.2, "Upper clip range (1 + clip_high); above clip_low is clip-higher.", **at_least(0))
    gamma: float = option(1.0, "Discount per policy token.", check=lambda g: 0 <= g <= 1, expects="in [0, 1]")
    lam: float = option(0.95, "GAE lambda.", check=lambda g: 0 <= g <= 1, expects="in [0, 1]")
    whiten_advantages: bool = option(True, "Whiten advantages over the batch's policy tokens (unbiased variance).")
    kl_coef: float = option(0.05, "KL coefficient towards the initial model (0 and no kl_target: none).", **at_least(0))
    kl_in: str = option(
        "reward",
        '"reward": a per-token penalty in the reward (TRL <= 1.12, OpenRLHF); "loss": a KL term in the loss.',
        choices=("reward", "loss"),
    )
    kl_estimator: str = option("k1", '"k1" or "k3" (Schulman) per-token KL estimator.', choices=("k1", "k3"))
    kl_target: float | None = option(
        None,
        "Adapt kl_coef towards this KL (nats per sequence: summed k1, batch mean) with Ziegler's controller.",
        **above(0),
    )
    kl_horizon: float = option(10000, "Horizon of the adaptive controller, in sequences.", **above(0))
    target_kl: float | None = option(
        None, "Stop a step's remaining epochs when the approximate KL to the rollout policy exceeds this.", **above(0)
    )
    entropy_coef: float = option(0.0, "Entropy bonus coefficient.")


class ValueHead(torch.nn.Module):
    """A linear map from a hidden state to a scalar value, kept in fp32, starting at exactly 0.

    Zero weights make the first advantages the whitened returns (a REINFORCE start) instead of returns
    minus random values: with a random init of std 1/sqrt(H), SmolLM2's per-token values varied far
    more than the returns they predict (explained variance -3 to -15 through whole 12-step runs).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, H) -> (N, 1)."""
        return self.linear(hidden.float())


class ValueModel(torch.nn.Module):
    """A separate critic: a causal LM's decoder stack (its LM head dropped) and a value head."""

    def __init__(self, decoder: torch.nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.head = ValueHead(hidden_size)


@dataclass
class KLCoefficient:
    """The KL coefficient as checkpointable state (the adaptive controller changes it every step)."""

    value: float

    def state_dict(self) -> dict[str, float]:
        """The coefficient, for the checkpoint."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what `state_dict` returned."""
        self.value = float(state["value"])


@dataclass(kw_only=True)
class TrainState(LearnerState):
    """The shared state plus PPO's critic, its optimizer, the reference and the KL coefficient."""

    config: PPOConfig
    critic: torch.nn.Module
    """A `ValueHead` on the policy's trunk, or a `ValueModel`."""
    critic_optimizer: torch.optim.Optimizer
    reference: Any | None
    kl_coef: KLCoefficient


def build(config: PPOConfig) -> TrainState:
    """The shared set-up, then the critic and its optimizer, and a reference model when a KL is asked for."""
    base = trainer.setup(config)
    device = base.device
    hidden_size = base.model.config.hidden_size
    critic: torch.nn.Module
    if config.critic == "separate":
        causal = load_model(config.critic_model or config.model, device=device)
        if config.gradient_checkpointing:
            causal.gradient_checkpointing_enable()
        critic = ValueModel(causal.get_decoder(), hidden_size).to(device)
        del causal  # the LM head is not needed (with tied embeddings the decoder keeps the matrix)
    else:
        critic = ValueHead(hidden_size).to(device)
    trainer.own_weights(trainer.trainable(critic), device)
    critic_optimizer = trainer.adamw(trainer.trainable(critic), lr=config.critic_lr, weight_decay=0.0, device=device)
    wants_kl = config.kl_coef > 0 or config.kl_target is not None
    reference = trainer.load_frozen(config.model, device) if wants_kl else None
    kl_coef = KLCoefficient(config.kl_coef)
    return trainer.extend(
        base,
        TrainState,
        critic=critic,
        critic_optimizer=critic_optimizer,
        reference=reference,
        kl_coef=kl_coef,
        extra_state={"critic": critic, "critic_optimizer": critic_optimizer, "kl_coef": kl_coef},
    )


def score(
    state: TrainState, rows: RolloutBatch, *, warmup: bool = False, policy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(logp, entropy, values), each (b, L), of `rows` under the current policy and critic (gradient if enabled).

    In the critic warm-up the value loss stays out of the policy's trunk, and a separate critic's
    rows skip the policy forward altogether, as they do with `policy=False` (logp is then 0).
    """
    cfg, device = state.config, state.device
    ids, attention, mask = rows.input_ids.to(device), rows.attention_mask.to(device), rows.loss_mask.to(device)
    training = torch.is_grad_enabled()  # the no-grad rollout scoring has no use for entropies
    entropy_grad = cfg.entropy_coef > 0 and training
    if isinstance(state.critic, ValueHead):
        logp, entropy, values, _ = completion_scores(
            state.model,
            ids,
            attention,
            mask,
            value_head=state.critic,
            value_trunk_grad=not warmup,
            with_entropy=training,
            entropy_grad=entropy_grad,
            bf16=cfg.bf16,
        )
        assert values is not None  # asked for with value_head
        return logp, entropy, values
    critic: Any = state.critic  # a ValueModel
    values = token_values(critic.decoder, critic.head, ids, attention, mask, bf16=cfg.bf16)  # (b, L)
    if warmup or not policy:
        return torch.zeros_like(values), None, values
    logp, entropy = completion_logprobs(
        state.model, ids, attention, mask, with_entropy=training, entropy_grad=entropy_grad, bf16=cfg.bf16
    )  # (b, L)
    return logp, entropy, values


@dataclass
class Rollout:
    """A step's scored rows: what the epochs read, each (n, L) over the rows kept for the loss."""

    rows: RolloutBatch
    old_logp: torch.Tensor
    old_values: torch.Tensor
    ref_logp: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor


@torch.no_grad()
def prepare(state: TrainState, rows: RolloutBatch) -> Rollout:
    """Score the rollout once (policy, critic, reference), then per-token rewards, GAE advantages and returns."""
    cfg = state.config
    state.model.eval()
    state.critic.eval()
    width = rows.input_ids.shape[1]
    old_logp, old_values, ref_logp = [], [], []
    reuse = sampled_logprobs_exact(state)
    for chunk in torch.arange(len(rows.rewards)).split(cfg.micro_batch):
        sub = rows.select(chunk)  # trimmed to its longest row
        logp, _, values = score(state, sub, policy=not reuse)  # (b, w)
        if reuse:
            logp = sub.old_logprobs.to(state.device) * sub.loss_mask.to(state.device)  # (b, w) the sampler's own
        old_logp.append(_widen(logp, width))
        old_values.append(_widen(values, width))
        if state.reference is not None:
            ids, attention = sub.input_ids.to(state.device), sub.attention_mask.to(state.device)
            ref, _ = completion_logprobs(state.reference, ids, attention, sub.loss_mask.to(state.device), bf16=cfg.bf16)
            ref_logp.append(_widen(ref, width))
    mask = rows.loss_mask.to(state.device)  # (n, L)
    logp, values = torch.cat(old_logp), torch.cat(old_values)  # (n, L)
    reference = torch.cat(ref_logp) if ref_logp else None  # (n, L)
    token_rewards = cfg.outcome_weight * rows.token_rewards + cfg.process_weight * rows.process_rewards  # (n, L)
    token_rewards = token_rewards.to(state.device)  # (n, L)
    if reference is not None and cfg.kl_in == "reward":
        token_rewards = token_rewards - state.kl_coef.value * losses.kl_penalty(
            logp, reference, estimator=cfg.kl_estimator
        )
    advantages, returns = losses.gae_advantages(token_rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)  # (n, L)
    if cfg.whiten_advantages:
        advantages = losses.whiten(advantages, mask)  # (n, L)
    return Rollout(rows, logp, values, reference, advantages, returns)


def sampled_logprobs_exact(state: TrainState) -> bool:
    """Whether the sampler's log-probs are the policy's own, so the rollout needs no second policy forward.

    True at temperature 1 and top-p 1 (no processing: sampling from the model's distribution), without
    bf16 (the sampler runs in fp32, as the training forward then does), with a separate critic (a value
    head reads the policy's trunk, which then runs anyway) and llmenv's own decoding loop (the fallback
    through `generate` may apply a model's default logits processors). TRL's PPOTrainer does the same.
    """
    cfg = state.config
    sampling_is_plain = cfg.temperature == 1.0 and cfg.top_p == 1.0 and not cfg.bf16
    return sampling_is_plain and isinstance(state.critic, ValueModel) and decoding.supports(state.model)


def _widen(x: torch.Tensor, width: int) -> torch.Tensor:
    """A (b, w) tensor right-padded with zeros to (b, width), so chunks of trimmed rows concatenate."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


def ppo_loss(
    state: TrainState, rollout: Rollout, index: torch.Tensor, *, warmup: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective on rows `index`: clipped policy loss + vf_coef * clipped value loss (+ KL term, - entropy)."""
    cfg = state.config
    sub = rollout.rows.select(index)
    width = sub.input_ids.shape[1]
    mask = sub.loss_mask.to(state.device)  # (b, L)
    old_logp, old_values = rollout.old_logp[index, :width], rollout.old_values[index, :width]  # (b, L)
    advantages, returns = rollout.advantages[index, :width], rollout.returns[index, :width]  # (b, L)
    logp, entropy, values = score(state, sub, warmup=warmup)  # (b, L)
    value_loss, value_clipped = losses.clipped_value_loss(values, old_values, returns, mask, clip_range=cfg.value_clip)
    stats = {"value_loss": float(value_loss.detach()), "value_clip_fraction": float(value_clipped)}
    if warmup:
        return cfg.vf_coef * value_loss, stats
    per_token, clipped = losses.clipped_surrogate(
        logp, old_logp, advantages, clip_low=cfg.clip_low, clip_high=cfg.clip_high
    )
    if rollout.ref_logp is not None and cfg.kl_in == "loss":
        kl = losses.kl_penalty(logp, rollout.ref_logp[index, :width], estimator=cfg.kl_estimator)  # (b, L)
        per_token = per_token + state.kl_coef.value * kl
    if cfg.entropy_coef:
        assert entropy is not None  # scored with gradient, so with entropies
        per_token = per_token - cfg.entropy_coef * entropy
    policy_loss = losses.token_mean(per_token, mask)
    approx_kl = losses.masked_mean(losses.kl_penalty(old_logp, logp.detach(), estimator="k3"), mask)  # KL(old || new)
    stats |= {
        "policy_loss": float(policy_loss.detach()),
        "clip_fraction": float(losses.masked_mean(clipped.float(), mask)),
        "approx_kl": float(approx_kl),
        "entropy": float(losses.masked_mean(entropy.detach(), mask)) if entropy is not None else 0.0,
    }
    return policy_loss + cfg.vf_coef * value_loss, stats


def update(state: TrainState, batch: RolloutBatch) -> dict[str, float]:
    """Score the rollout, then `epochs` x `minibatches` optimizer steps (stopping early past `target_kl`); metrics.

    Episodes whose verdict carries a verifier error are not trained on: a crashed check is not a wrong answer.
    """
    cfg = state.config
    warmup = state.step < cfg.critic_warmup_steps
    kept = torch.nonzero(~batch.errored)[:, 0]
    metrics: dict[str, float] = {
        "kept": len(kept) / len(batch.rewards),
        "critic_warmup": float(warmup),
        "kl_coef": state.kl_coef.value,
    }
    keys = ("loss", "policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "approx_kl", "entropy")
    metrics |= dict.fromkeys(keys, 0.0)
    metrics |= {"grad_norm": 0.0, "critic_grad_norm": 0.0, "optimizer_steps": 0.0, "early_stopped": 0.0}
    if len(kept) == 0:
        return metrics
    rollout = prepare(state, batch.select(kept))
    mask = rollout.rows.loss_mask.to(state.device)  # (n, L)
    metrics |= _rollout_stats(state, rollout, mask)
    order = torch.Generator().manual_seed(cfg.seed * 1_000_003 + state.step)  # the same shuffles after a resume
    state.model.train()
    state.critic.train()
    taken: list[dict[str, float]] = []
    for _ in range(cfg.epochs):
        permutation = torch.randperm(len(kept), generator=order)
        for minibatch in permutation.tensor_split(min(cfg.minibatches, len(kept))):
            stats = _minibatch_step(state, rollout, minibatch, warmup=warmup)
            if stats is None:  # past target_kl: this and every later step of the update are skipped
                metrics["early_stopped"] = 1.0
                break
            taken.append(stats)
        else:
            continue
        break
    state.model.eval()
    state.critic.eval()
    for key in {k for stats in taken for k in stats}:
        metrics[key] = sum(stats.get(key, 0.0) for stats in taken) / len(taken)
    metrics["optimizer_steps"] = float(len(taken))
    if cfg.kl_target is not None and not warmup:  # Ziegler's controller reads the rollout's KL per sequence
        state.kl_coef.value = losses.adaptive_kl_coef(
            state.kl_coef.value,
            metrics["kl_per_sequence"],
            target=cfg.kl_target,
            horizon=cfg.kl_horizon,
            n_steps=len(kept),
        )
    return metrics


def _minibatch_step(
    state: TrainState, rollout: Rollout, minibatch: torch.Tensor, *, warmup: bool
) -> dict[str, float] | None:
    """Gradients over a minibatch (micro-batched), then one step of each optimizer; None when past target_kl."""
    cfg = state.config
    totals: dict[str, float] = {}
    state.optimizer.zero_grad(set_to_none=True)
    state.critic_optimizer.zero_grad(set_to_none=True)
    for chunk in minibatch.split(cfg.micro_batch):
        loss, stats = ppo_loss(state, rollout, chunk, warmup=warmup)
        share = len(chunk) / len(minibatch)
        (loss * share).backward()
        stats["loss"] = float(loss.detach())
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value * share
    if cfg.target_kl is not None and totals.get("approx_kl", 0.0) > cfg.target_kl:
        state.optimizer.zero_grad(set_to_none=True)
        state.critic_optimizer.zero_grad(set_to_none=True)
        return None
    critic_params = trainer.trainable(state.critic)
    totals["critic_grad_norm"] = trainer.clip_gradients(critic_params, cfg.max_grad_norm)
    state.critic_optimizer.step()
    if not warmup:
        policy_params = trainer.trainable(state.model)
        totals["grad_norm"] = trainer.clip_gradients(policy_params, cfg.max_grad_norm)
        state.optimizer.step()
    return totals


def _rollout_stats(state: TrainState, rollout: Rollout, mask: torch.Tensor) -> dict[str, float]:
    """What the scored rollout says before any step: returns, values, explained variance, KL to the reference."""
    stats = {
        "returns_mean": float(losses.masked_mean(rollout.returns, mask)),
        "values_mean": float(losses.masked_mean(rollout.old_values, mask)),
        "explained_variance": float(losses.explained_variance(rollout.old_values, rollout.returns, mask)),
        "kl": 0.0,
        "kl_per_sequence": 0.0,
    }
    if rollout.ref_logp is not None:
        k1 = losses.kl_penalty(rollout.old_logp, rollout.ref_logp, estimator="k1") * mask  # (n, L)
        chosen = losses.kl_penalty(rollout.old_logp, rollout.ref_logp, estimator=state.config.kl_estimator)
        stats["kl"] = float(losses.masked_mean(chosen, mask))
        stats["kl_per_sequence"] = float(k1.sum(1).mean())
    return stats


def train(config: PPOConfig, *, progress: bool = True) -> TrainState:
    """Run PPO for `config.steps` steps, writing metrics, plot, checkpoints and the final export to `config.out`.

    Ctrl-C stops after the current step with a resume checkpoint saved (`state.interrupted`).
    """
    return trainer.train(config, build, train_step, name="PPO", status=_status, progress=progress)


def _status(metrics: dict[str, Any]) -> str:
    """The progress line's text for one step."""
    text = (
        f"reward {metrics['reward_mean']:.3f} value loss {metrics['value_loss']:.4f} "
        f"kl {metrics['kl']:+.4f} {metrics['step_time_s']:.1f}s"
    )
    if metrics["critic_warmup"]:
        text += " [cyan]critic warm-up[/]"
    if metrics["early_stopped"]:
        text += " [yellow]stopped at target_kl[/]"
    return text + trainer.episode_status(metrics)


def train_step(state: TrainState) -> dict[str, Any]:
    """One rollout and one update; advances `state.step` and returns the step's metrics."""
    return trainer.timed_step(state, update, passes=state.config.epochs)
