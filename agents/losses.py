"""Policy-gradient loss pieces as pure functions over tensors: advantages, surrogates, values, KL, aggregation.

Every learner builds its objective from these. Variants are separate functions, and the registries
`ADVANTAGES` and `AGGREGATIONS` let a config choose one once. Masks are (B, T) with 1 on policy
tokens; padded positions never influence a result, whatever values they hold. Nothing here touches
a model, an optimizer or a config.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is set (0 when nothing is set)."""
    mask = mask.to(x.dtype)
    x = torch.where(mask.bool(), x, torch.zeros_like(x))  # padded values (even inf) contribute nothing
    if dim is None:
        return x.sum() / mask.sum().clamp(min=1)
    return x.sum(dim) / mask.sum(dim).clamp(min=1)


# -- advantages -------------------------------------------------------------------------------


def _group_sums(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row size of the row's group and sum of `values` over it."""
    groups, index = group_ids.unique(return_inverse=True)  # (G,), (N,)
    count = torch.zeros(len(groups), dtype=values.dtype).index_add_(0, index, torch.ones_like(values))  # (G,)
    total = torch.zeros(len(groups), dtype=values.dtype).index_add_(0, index, values)  # (G,)
    return count[index], total[index]  # (N,), (N,)


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and (population) std of the row's group."""
    count, total = _group_sums(rewards, group_ids)  # (N,), (N,)
    mean = total / count  # (N,)
    _, squares = _group_sums((rewards - mean) ** 2, group_ids)  # (N,)
    return mean, (squares / count).sqrt()  # (N,), (N,)


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, scale: str = "std", eps: float = 1e-6
) -> torch.Tensor:
    """Reward minus its group's mean, divided by the group's std ("std", GRPO) or not ("none", Dr. GRPO)."""
    mean, std = _group_stats(rewards, group_ids)  # (N,), (N,)
    centred = rewards - mean  # (N,)
    if scale == "none":
        return centred
    if scale != "std":
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    return torch.where(std > eps, centred / (std + eps), torch.zeros_like(centred))  # zero-variance groups -> 0


def batch_normalized_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """Reward minus its group's mean, divided by the std of those centred values over the whole batch."""
    centred = group_advantages(rewards, group_ids, scale="none")  # (N,)
    std = centred.std(unbiased=False)
    return centred / (std + eps) if std > eps else torch.zeros_like(centred)


def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """RLOO: reward minus the mean of the other rewards of its group; a group of one gets 0."""
    count, total = _group_sums(rewards, group_ids)  # (N,), (N,)
    others = (total - rewards) / (count - 1).clamp(min=1)  # (N,)
    return torch.where(count > 1, rewards - others, torch.zeros_like(rewards))  # (N,)


@torch.no_grad()
def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over policy tokens only (as veRL): env tokens between turns are skipped; returns (advantages, returns).

    Each row equals GAE on its compressed policy-only sequence: the next value of a policy token is
    the value at the next policy token of the row (0 after the last), and discounting is per policy
    token, not per position. Positions with mask 0 get advantage and return 0 and, whatever rewards
    or values they hold (even inf), change nothing. Computed without gradient: both are targets.
    """
    policy = mask.bool()  # (B, T)
    rewards = torch.where(policy, rewards, torch.zeros_like(rewards))  # (B, T)
    values = torch.where(policy, values, torch.zeros_like(values))  # (B, T)
    advantages = torch.zeros_like(rewards)  # (B, T)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,)
    next_advantage = torch.zeros_like(rewards[:, 0])  # (B,)
    for step in reversed(range(rewards.shape[1])):
        here = policy[:, step]  # (B,)
        delta = rewards[:, step] + gamma * next_value - values[:, step]  # (B,)
        advantage = delta + gamma * lam * next_advantage  # (B,)
        advantages[:, step] = torch.where(here, advantage, torch.zeros_like(advantage))
        next_value = torch.where(here, values[:, step], next_value)  # (B,): env tokens carry the later value over
        next_advantage = torch.where(here, advantage, next_advantage)  # (B,)
    returns = torch.where(policy, advantages + values, torch.zeros_like(values))  # (B, T)
    return advantages, returns


def whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over masked positions, var unbiased (ddof=1) as TRL's masked_whiten; 0 elsewhere.

    With `shift_mean=False` the mean is added back (unit variance, original mean), as in TRL. Fewer
    than two masked values have variance 0.
    """
    policy = mask.bool()  # (B, T)
    count = policy.sum()
    mean = masked_mean(x, mask)
    centred = torch.where(policy, x - mean, torch.zeros_like(x))  # (B, T)
    var = (centred**2).sum() / (count - 1).clamp(min=1)
    whitened = centred * torch.rsqrt(var + eps)  # (B, T)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(policy, whitened, torch.zeros_like(whitened))  # (B, T)


def reinforce_pp_advantages(
    token_rewards: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0, group_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """REINFORCE++: discounted reward-to-go per policy token, whitened over every policy token of the batch.

    Discounting is per policy token (env tokens are skipped, as in `gae_advantages`). With `group_ids`
    (REINFORCE++-baseline) the group mean of the sequence rewards (the sum of a row's token rewards)
    is first subtracted at each row's last policy token, where an outcome reward sits.
    """
    policy = mask.bool()  # (B, T)
    token_rewards = torch.where(policy, token_rewards, torch.zeros_like(token_rewards))  # (B, T)
    if group_ids is not None:
        baseline, _ = _group_stats(token_rewards.sum(1), group_ids)  # (B,)
        token_rewards = token_rewards - baseline[:, None] * last_policy_token(mask)  # (B, T)
    returns, _ = gae_advantages(token_rewards, torch.zeros_like(token_rewards), mask, gamma=gamma, lam=1.0)  # (B, T)
    return whiten(returns, mask)  # (B, T)


def process_advantages(
    step_rewards: torch.Tensor,
    step_mask: torch.Tensor,
    group_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """DeepSeekMath's process supervision: a token's advantage is the sum of normalised step rewards from it on.

    Step rewards (B, T) sit where `step_mask` is set (each step's last token). They are normalised
    over their group: minus the mean and divided by the (population) std of every step reward of
    every output in the group (a group whose step rewards do not vary gives 0). A policy token's
    advantage is the sum of the normalised rewards of the steps ending at or after it; positions
    with mask 0 get 0.
    """
    steps = step_mask.bool()  # (B, T)
    rewards = torch.where(steps, step_rewards, torch.zeros_like(step_rewards))  # (B, T)
    _, count = _group_sums(steps.sum(1).to(rewards.dtype), group_ids)  # (B,): steps in the row's group
    _, total = _group_sums(rewards.sum(1), group_ids)  # (B,): their rewards' sum
    mean = total / count.clamp(min=1)  # (B,)
    centred = torch.where(steps, rewards - mean[:, None], torch.zeros_like(rewards))  # (B, T)
    _, squares = _group_sums((centred**2).sum(1), group_ids)  # (B,)
    std = (squares / count.clamp(min=1)).sqrt()  # (B,)
    normalised = torch.where(std[:, None] > eps, centred / (std[:, None] + eps), torch.zeros_like(centred))  # (B, T)
    to_go = normalised.flip(1).cumsum(1).flip(1)  # (B, T): sum over steps ending at or after each position
    return torch.where(mask.bool(), to_go, torch.zeros_like(to_go))  # (B, T)


def last_policy_token(mask: torch.Tensor) -> torch.Tensor:
    """One-hot (B, T) of each row's last policy token (all zero for a row without one)."""
    position = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    last = torch.where(mask.bool(), position, -1).max(1).values  # (B,)
    return (position == last[:, None]).to(mask.dtype) * mask  # (B, T)


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sequence rewards (B,) as per-token rewards (B, T): each at its row's last policy token, 0 elsewhere."""
    return rewards[:, None] * last_policy_token(mask).to(rewards.dtype)  # (B, T)


ADVANTAGES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "std": lambda r, g, m: group_advantages(r, g, scale="std"),
    "none": lambda r, g, m: group_advantages(r, g, scale="none"),
    "batch": lambda r, g, m: batch_normalized_advantages(r, g),
    "rloo": lambda r, g, m: rloo_advantages(r, g),
    "reinforce_pp": lambda r, g, m: reinforce_pp_advantages(outcome_token_rewards(r, m), m),
    "reinforce_pp_baseline": lambda r, g, m: reinforce_pp_advantages(outcome_token_rewards(r, m), m, group_ids=g),
}
"""Advantage estimators a config picks from: (rewards (N,), group_ids (N,), loss_mask (N, T)) -> (N,) or (N, T)."""


# -- surrogates ---------------------------------------------------------------------------------


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip per-token loss with ratio bounds [1 - clip_low, 1 + clip_high]; also which tokens were clipped."""
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    ratio = (logp - old_logp).exp()  # (B, T)
    clipped_ratio = ratio.clamp(1 - clip_low, 1 + clip_high)  # (B, T)
    unclipped, clipped = ratio * adv, clipped_ratio * adv  # (B, T)
    loss = -torch.minimum(unclipped, clipped)  # (B, T)
    was_clipped = clipped < unclipped  # (B, T): the clipped branch was chosen and differs
    return loss, was_clipped


def gspo_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GSPO: one length-normalised ratio s_i = exp(mean_t(logp - old_logp)) per sequence, clipped per sequence.

    Uses the token-level form of the GSPO paper, s_i,t = sg[s_i] * pi(y_t) / sg[pi(y_t)], whose value
    equals s_i on every token and whose gradient is the sequence-level one spread over the tokens,
    so the usual aggregation functions apply to the returned (B, T) loss.
    """
    log_ratio = torch.where(mask.bool(), logp - old_logp, torch.zeros_like(logp))  # (B, T)
    seq_log_ratio = log_ratio.sum(1) / mask.sum(1).clamp(min=1)  # (B,)
    token_ratio = (seq_log_ratio.detach()[:, None] + logp - logp.detach()).exp()  # (B, T) = s_i in value
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    unclipped = token_ratio * adv  # (B, T)
    clipped = token_ratio.clamp(1 - clip_low, 1 + clip_high) * adv  # (B, T)
    loss = -torch.minimum(unclipped, clipped)  # (B, T)
    return loss, (clipped < unclipped).expand_as(loss)


# -- values and KL control --------------------------------------------------------------------


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO value loss: masked mean of 0.5 * max((v - R)^2, (clip(v, old +- clip_range) - R)^2); also the clip fraction.

    The clip fraction is the share of policy tokens where the clipped error is the larger one.
    """
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)  # (B, T)
    unclipped_error = (values - returns) ** 2  # (B, T)
    clipped_error = (clipped_values - returns) ** 2  # (B, T)
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clip_fraction = masked_mean((clipped_error > unclipped_error).to(values.dtype), mask)
    return loss, clip_fraction


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[R - v] / Var[R] over masked tokens (1: perfect, 0: no better than a constant); NaN when Var[R] is 0."""
    policy = mask.bool()  # (B, T)
    returns = torch.where(policy, returns, torch.zeros_like(returns))  # (B, T)
    residual = torch.where(policy, returns - values, torch.zeros_like(returns))  # (B, T)

    def variance(x: torch.Tensor) -> torch.Tensor:
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    var_returns = variance(returns)
    if var_returns == 0:
        return torch.tensor(float("nan"), dtype=returns.dtype)
    return 1 - variance(residual) / var_returns


def adaptive_kl_coef(beta: float, kl: float, *, target: float, horizon: float, n_steps: int) -> float:
    """Ziegler et al.'s adaptive KL controller: beta * (1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon).

    `kl` is the batch mean of each sequence's summed per-token k1 KL (nats per sequence), as TRL's
    PPO reads it; `n_steps` is the number of samples (sequences) the step trained on.
    """
    if target <= 0:
        raise ValueError(f"target must be a KL > 0 in nats per sequence (e.g. 6.0), got {target!r}")
    if horizon <= 0:
        raise ValueError(f"horizon must be > 0 samples (e.g. 10000), got {horizon!r}")
    error = min(max(kl / target - 1, -0.2), 0.2)
    return beta * (1 + error * n_steps / horizon)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, *, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL(pi || ref) estimate: k1 = logp - ref_logp; k3 = exp(ref - logp) - (ref - logp) - 1 >= 0."""
    if estimator == "k1":
        return logp - ref_logp  # (B, T)
    if estimator == "k3":
        delta = ref_logp - logp  # (B, T)
        return delta.exp() - delta - 1  # (B, T)
    raise ValueError(f"estimator must be 'k1' or 'k3', got {estimator!r}")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis, computed stably."""
    norm = logits.logsumexp(-1)  # (...,)
    return norm - (logits.softmax(-1) * logits).sum(-1)  # (...,)


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[ids] without materialising the full log-softmax."""
    return logits.gather(-1, ids[..., None])[..., 0] - logits.logsumexp(-1)  # (...,)


# -- aggregation --------------------------------------------------------------------------------


def token_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DAPO: the sum over every policy token in the batch divided by their number."""
    return masked_mean(loss, mask)


def sequence_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRPO: each sequence's mean over its tokens, then the mean over sequences."""
    return masked_mean(loss, mask, dim=1).mean()


def constant_normalizer(loss: torch.Tensor, mask: torch.Tensor, *, max_tokens: int) -> torch.Tensor:
    """Dr. GRPO: the token sum divided by a constant, batch size x max completion tokens."""
    summed = torch.where(mask.bool(), loss, torch.zeros_like(loss)).sum()
    return summed / (loss.shape[0] * max_tokens)


AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "token_mean": token_mean,
    "sequence_mean": sequence_mean,
    "constant": constant_normalizer,
}
