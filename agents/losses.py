"""Policy-gradient loss pieces as pure functions over tensors: advantages, surrogates, KL, aggregation.

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


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and (population) std of the row's group."""
    groups, index = group_ids.unique(return_inverse=True)  # (G,), (N,)
    count = torch.zeros(len(groups), dtype=rewards.dtype).index_add_(0, index, torch.ones_like(rewards))  # (G,)
    total = torch.zeros(len(groups), dtype=rewards.dtype).index_add_(0, index, rewards)  # (G,)
    mean = (total / count)[index]  # (N,)
    var = torch.zeros(len(groups), dtype=rewards.dtype).index_add_(0, index, (rewards - mean) ** 2) / count  # (G,)
    return mean, var.sqrt()[index]  # (N,), (N,)


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


ADVANTAGES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "std": lambda r, g: group_advantages(r, g, scale="std"),
    "none": lambda r, g: group_advantages(r, g, scale="none"),
    "batch": batch_normalized_advantages,
}


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
    adv = advantages[:, None]  # (B, 1)
    unclipped = token_ratio * adv  # (B, T)
    clipped = token_ratio.clamp(1 - clip_low, 1 + clip_high) * adv  # (B, T)
    loss = -torch.minimum(unclipped, clipped)  # (B, T)
    return loss, (clipped < unclipped).expand_as(loss)


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
