"""The preference-optimisation losses as pure functions over sequence log-probabilities.

Every loss here takes, per pair (or per example for KTO), the completion's log-probability under
the policy and, where the loss has one, under a reference model: summed over the completion's
tokens (`logp`), and the completion's token count (`length`) where the loss averages. Nothing here
runs a model; `agents/dpo.py` (offline) and `agents/online_dpo.py` (online) compute the log-probs
and call these. Each function returns the per-pair losses (P,) so a caller can weight or mask
them; the batch loss is their mean. The implicit reward of a completion is
`beta * (logp - ref_logp)` (`implicit_rewards`), what the metrics report for chosen and rejected.

Notation: `delta = (logp_c - ref_c) - (logp_r - ref_r)`, the difference of the two log-ratios.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

LOSSES = ("dpo", "cdpo", "rdpo", "ipo", "simpo", "orpo")
"""Pairwise losses `pair_loss` computes; KTO (unpaired) is `kto_loss`."""

REFERENCE_FREE = frozenset({"simpo", "orpo"})
"""Losses that read no reference model (so none is loaded)."""


class PairLogps(NamedTuple):
    """Sequence log-probs of P pairs, each (P,): policy, reference (None when unused) and token counts."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    chosen_length: torch.Tensor
    rejected_length: torch.Tensor


def log_ratio_delta(logps: PairLogps) -> torch.Tensor:
    """`(logp_c - ref_c) - (logp_r - ref_r)` per pair (P,), from summed log-probs."""
    if logps.ref_chosen is None or logps.ref_rejected is None:
        raise ValueError("this loss compares against a reference model; ref_chosen/ref_rejected are None")
    return (logps.chosen - logps.ref_chosen) - (logps.rejected - logps.ref_rejected)


def dpo_loss(delta: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (sigmoid): `-log sigmoid(beta * delta)` per pair, over summed (not length-averaged) log-ratios."""
    return -F.logsigmoid(beta * delta)


def cdpo_loss(delta: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """Conservative DPO: labels flipped with probability `epsilon` (label smoothing), over summed log-ratios.

    `(1 - eps) * -log sigmoid(beta * delta) + eps * -log sigmoid(-beta * delta)`.
    """
    return -(1 - epsilon) * F.logsigmoid(beta * delta) - epsilon * F.logsigmoid(-beta * delta)


def rdpo_loss(delta: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024): the unbiased loss under label noise `epsilon` < 0.5, summed log-ratios.

    `((1 - eps) * -log sigmoid(beta * delta) - eps * -log sigmoid(-beta * delta)) / (1 - 2 eps)`.
    """
    if not 0 <= epsilon < 0.5:
        raise ValueError(f"rDPO needs a label-noise rate in [0, 0.5), got {epsilon}")
    return (-(1 - epsilon) * F.logsigmoid(beta * delta) + epsilon * F.logsigmoid(-beta * delta)) / (1 - 2 * epsilon)


def ipo_loss(logps: PairLogps, beta: float, *, length_normalized: bool) -> torch.Tensor:
    """IPO: `(h - 1 / (2 beta))^2` per pair, h the log-ratio difference.

    With `length_normalized` each side's log-ratio is divided by its token count first (what TRL's
    `loss_type="ipo"` does); without, h is `delta` over summed log-probs (the paper's form).
    """
    if logps.ref_chosen is None or logps.ref_rejected is None:
        raise ValueError("IPO compares against a reference model; ref_chosen/ref_rejected are None")
    if length_normalized:
        h = (logps.chosen - logps.ref_chosen) / logps.chosen_length - (
            logps.rejected - logps.ref_rejected
        ) / logps.rejected_length
    else:
        h = log_ratio_delta(logps)
    return (h - 1 / (2 * beta)) ** 2


def simpo_loss(logps: PairLogps, beta: float, gamma: float, nll_coef: float = 0.0) -> torch.Tensor:
    """SimPO (reference-free): `-log sigmoid(beta * (logp_c / |y_c| - logp_r / |y_r|) - gamma)` per pair.

    Log-probs are length-averaged. `nll_coef` > 0 adds `nll_coef * (-logp_c / |y_c|)`, the chosen side's
    mean token NLL (CPO's behaviour-cloning term); 0 is SimPO as published.
    """
    chosen, rejected = logps.chosen / logps.chosen_length, logps.rejected / logps.rejected_length
    loss = -F.logsigmoid(beta * (chosen - rejected) - gamma)
    return loss - nll_coef * chosen if nll_coef else loss


def orpo_loss(logps: PairLogps, lam: float) -> torch.Tensor:
    """ORPO (reference-free): chosen mean-token NLL minus `lam * log sigmoid(log odds ratio)` per pair.

    With length-averaged log-probs a = logp_c / |y_c|, b = logp_r / |y_r|, the log odds ratio is
    `(a - log(1 - e^a)) - (b - log(1 - e^b))`; the NLL term is `-a`.
    """
    a, b = logps.chosen / logps.chosen_length, logps.rejected / logps.rejected_length

    def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:  # log(p / (1 - p)), p = e^mean_logp < 1
        return mean_logp - torch.log1p(-torch.exp(mean_logp).clamp(max=1 - 1e-6))

    return -a - lam * F.logsigmoid(log_odds(a) - log_odds(b))


def pair_loss(
    name: str, logps: PairLogps, *, beta: float, epsilon: float = 0.0, gamma: float = 0.5, nll_coef: float = 0.0,
    ipo_length_normalized: bool = False,
) -> torch.Tensor:  # fmt: skip
    """The per-pair loss (P,) `name` (one of LOSSES) over `logps`; `nll_coef` adds the chosen NLL to any loss.

    For dpo/cdpo/rdpo/ipo a nonzero `nll_coef` adds `nll_coef * (-logp_c / |y_c|)` (RPO's term); for
    simpo it is SimPO's own NLL term; orpo has the NLL built in (its weight is 1, `beta` is ORPO's lambda).
    """
    if name == "simpo":
        return simpo_loss(logps, beta, gamma, nll_coef)
    if name == "orpo":
        return orpo_loss(logps, beta)
    if name == "ipo":
        loss = ipo_loss(logps, beta, length_normalized=ipo_length_normalized)
    else:
        delta = log_ratio_delta(logps)
        if name == "dpo":
            loss = dpo_loss(delta, beta)
        elif name == "cdpo":
            loss = cdpo_loss(delta, beta, epsilon)
        elif name == "rdpo":
            loss = rdpo_loss(delta, beta, epsilon)
        else:
            raise ValueError(f"unknown preference loss {name!r}; expected one of {LOSSES} (or kto_loss)")
    return loss - nll_coef * logps.chosen / logps.chosen_length if nll_coef else loss


def implicit_rewards(logp: torch.Tensor, ref_logp: torch.Tensor | None, beta: float) -> torch.Tensor:
    """`beta * (logp - ref_logp)` (reference-free losses: `beta * logp`), detached, for the metrics."""
    return (beta * (logp - ref_logp) if ref_logp is not None else beta * logp).detach()


def kto_reference_point(logp_mismatched: torch.Tensor, ref_mismatched: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0: the batch KL estimate `mean(logp - ref)` over mismatched (x, y') pairs,
    clamped at 0 and detached (no gradient flows through it), a scalar."""
    return (logp_mismatched - ref_mismatched).mean().clamp(min=0).detach()


def kto_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    desirable: torch.Tensor,
    reference_point: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """KTO per example (N,): `w_D (1 - sigmoid(beta (r - z0)))` if desirable, else `w_U (1 - sigmoid(beta (z0 - r)))`.

    `r = logp - ref_logp` over summed log-probs, `z0` from `kto_reference_point` (detached).
    """
    r = logp - ref_logp
    good = desirable_weight * (1 - torch.sigmoid(beta * (r - reference_point)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (reference_point - r)))
    return torch.where(desirable.bool(), good, bad)


class Pairing(NamedTuple):
    """Which samples of a group form preference pairs: (chosen index, rejected index) pairs."""

    pairs: list[tuple[int, int]]
    ties: int


def rank_pairs(rewards: list[float], rule: str, delta: float = 0.0) -> Pairing:
    """Preference pairs within one group of rewards by `rule`: best-vs-worst or all pairs with margin > delta.

    `best-worst`: the highest reward against the lowest (a group whose rewards are all equal is one
    tie and gives none). `all`: every (i, j) with `rewards[i] - rewards[j] > delta`; pairs whose
    rewards differ by `delta` or less count as ties. Earlier indices win among equal rewards.
    """
    if rule == "best-worst":
        best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
        worst = min(range(len(rewards)), key=lambda i: (rewards[i], i))
        if rewards[best] - rewards[worst] > delta:
            return Pairing([(best, worst)], 0)
        return Pairing([], 1)
    if rule == "all":
        pairs, ties = [], 0
        for i in range(len(rewards)):
            for j in range(i + 1, len(rewards)):
                gap = rewards[i] - rewards[j]
                if abs(gap) <= delta:
                    ties += 1
                else:
                    pairs.append((i, j) if gap > 0 else (j, i))
        return Pairing(pairs, ties)
    raise ValueError(f"unknown pairing rule {rule!r}; expected 'best-worst' or 'all'")
