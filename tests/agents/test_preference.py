"""Golden values of every preference loss and the pairing rule, on hand-computed log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from llmenv.agents.preference import (
    PairLogps,
    implicit_rewards,
    kto_loss,
    kto_reference_point,
    log_ratio_delta,
    pair_loss,
    rank_pairs,
)


def logps(chosen, rejected, ref_chosen=None, ref_rejected=None, chosen_length=1.0, rejected_length=1.0):
    t = lambda v: None if v is None else torch.tensor([float(v)])  # noqa: E731
    return PairLogps(t(chosen), t(rejected), t(ref_chosen), t(ref_rejected), t(chosen_length), t(rejected_length))


DELTA_1_5 = logps(-10.0, -14.0, -11.0, -13.5)  # (-10 + 11) - (-14 + 13.5) = 1.5


def value(name, pair=DELTA_1_5, **kw):
    return float(pair_loss(name, pair, **kw))


def test_delta_is_the_difference_of_the_log_ratios():
    assert float(log_ratio_delta(DELTA_1_5)) == pytest.approx(1.5)


def test_dpo_family_golden_values_at_beta_0_1_and_delta_1_5():
    assert value("dpo", beta=0.1) == pytest.approx(0.620957, abs=1e-6)
    assert value("cdpo", beta=0.1, epsilon=0.1) == pytest.approx(0.635957, abs=1e-6)
    assert value("rdpo", beta=0.1, epsilon=0.1) == pytest.approx(0.602207, abs=1e-6)
    assert value("cdpo", beta=0.1, epsilon=0.0) == pytest.approx(value("dpo", beta=0.1), abs=1e-7)
    assert value("rdpo", beta=0.1, epsilon=0.0) == pytest.approx(value("dpo", beta=0.1), abs=1e-7)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        value("rdpo", beta=0.1, epsilon=0.5)


def test_ipo_unnormalised_and_length_normalised():
    assert value("ipo", beta=0.1) == pytest.approx(12.25, abs=1e-6)  # (1.5 - 5)^2
    pair = logps(-10.0, -14.0, -11.0, -13.5, chosen_length=2, rejected_length=5)
    h = 1 / 2 - (-0.5) / 5  # 0.6
    assert value("ipo", pair, beta=0.1, ipo_length_normalized=True) == pytest.approx((h - 5) ** 2, abs=1e-6)  # 19.36


def test_simpo_with_and_without_its_nll_term():
    pair = logps(-6.0, -12.0, chosen_length=3, rejected_length=4)  # averages -2 and -3
    assert value("simpo", pair, beta=2.0, gamma=0.5) == pytest.approx(0.201413, abs=1e-6)  # -log sigmoid(1.5)
    assert value("simpo", pair, beta=2.0, gamma=0.5, nll_coef=0.5) == pytest.approx(0.201413 + 1.0, abs=1e-6)


def test_orpo_golden_value():
    pair = logps(-6.0, -12.0, chosen_length=3, rejected_length=4)
    odds = (-2 - math.log1p(-math.exp(-2))) - (-3 - math.log1p(-math.exp(-3)))  # 1.094344
    expected = 2 - 0.1 * math.log(1 / (1 + math.exp(-odds)))
    assert value("orpo", pair, beta=0.1) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(2.028875, abs=1e-6)


def test_a_reference_loss_without_reference_logps_says_so():
    with pytest.raises(ValueError, match="reference model"):
        value("dpo", logps(-1.0, -2.0), beta=0.1)
    with pytest.raises(ValueError, match="unknown preference loss"):
        value("hinge", beta=0.1)


def test_rpo_nll_term_adds_the_chosen_mean_token_nll():
    pair = logps(-10.0, -14.0, -11.0, -13.5, chosen_length=4)
    assert value("dpo", pair, beta=0.1, nll_coef=1.0) == pytest.approx(0.620957 + 2.5, abs=1e-6)


def test_gradients_raise_the_chosen_and_lower_the_rejected():
    chosen, rejected = torch.tensor([-10.0], requires_grad=True), torch.tensor([-14.0], requires_grad=True)
    for name in ("dpo", "cdpo", "rdpo", "ipo", "simpo", "orpo"):
        chosen.grad = rejected.grad = None
        pair = PairLogps(chosen, rejected, torch.tensor([-11.0]), torch.tensor([-13.5]), torch.ones(1), torch.ones(1))
        pair_loss(name, pair, beta=0.1, epsilon=0.1).sum().backward()
        assert chosen.grad < 0 < rejected.grad, name  # descending the loss raises logp_c, lowers logp_r


def test_implicit_rewards():
    assert float(implicit_rewards(torch.tensor(-10.0), torch.tensor(-11.0), 0.1)) == pytest.approx(0.1)
    assert float(implicit_rewards(torch.tensor(-10.0), None, 2.0)) == pytest.approx(-20.0)


def test_kto_golden_values_and_a_detached_reference_point():
    mismatched = torch.tensor([-9.0, -12.0], requires_grad=True)
    z0 = kto_reference_point(mismatched, torch.tensor([-10.0, -12.5]))  # mean(1, 0.5) = 0.75
    assert float(z0) == pytest.approx(0.75) and not z0.requires_grad
    assert float(kto_reference_point(torch.tensor([-12.0]), torch.tensor([-10.0]))) == 0.0  # clamped at 0
    logp, ref = torch.tensor([-10.0, -10.0]), torch.tensor([-12.0, -9.0])  # r = 2, -1
    losses = kto_loss(
        logp, ref, torch.tensor([True, False]), z0, beta=0.1, desirable_weight=1.0, undesirable_weight=1.5
    )
    good = 1 - 1 / (1 + math.exp(-0.1 * (2 - 0.75)))  # 0.468791
    bad = 1.5 * (1 - 1 / (1 + math.exp(-0.1 * (0.75 + 1))))  # 0.684542
    assert losses.tolist() == pytest.approx([good, bad], abs=1e-6)
    assert good == pytest.approx(0.468791, abs=1e-6) and bad == pytest.approx(0.684542, abs=1e-6)


def test_pairing_rules_best_worst_and_all_with_a_margin():
    assert rank_pairs([0.0, 1.0, 0.5, 1.0], "best-worst") == ([(1, 0)], 0)  # the first best, the first worst
    assert rank_pairs([1.0, 1.0], "best-worst") == ([], 1)
    assert rank_pairs([0.0, 1.0, 0.5], "all") == ([(1, 0), (2, 0), (1, 2)], 0)
    assert rank_pairs([0.0, 1.0, 0.5], "all", delta=0.5) == ([(1, 0)], 2)  # gaps of 0.5 are ties
    with pytest.raises(ValueError, match="best-worst"):
        rank_pairs([0.0], "random")
