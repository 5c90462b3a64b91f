"""Loss pieces against hand-computed values: advantages, PPO/GSPO clipping, KL estimators, aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from llmenv.agents import losses


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def test_group_advantages_std_none_and_zero_variance():
    rewards, groups = t([1, 0, 1, 1]), torch.tensor([0, 0, 1, 1])
    # group 0: mean 0.5, std 0.5 -> +-1; group 1: all equal -> 0, not NaN
    torch.testing.assert_close(losses.group_advantages(rewards, groups), t([1, -1, 0, 0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(losses.group_advantages(rewards, groups, scale="none"), t([0.5, -0.5, 0, 0]))
    single = losses.group_advantages(t([3.0]), torch.tensor([7]))
    assert single.tolist() == [0.0]


def test_batch_normalized_advantages():
    rewards, groups = t([1, 0, 1, 1]), torch.tensor([0, 0, 1, 1])
    # centred [0.5, -0.5, 0, 0]; population std over the batch = sqrt(0.5 / 4)
    expected = t([0.5, -0.5, 0, 0]) / math.sqrt(0.125)
    torch.testing.assert_close(losses.batch_normalized_advantages(rewards, groups), expected, atol=1e-4, rtol=0)
    assert losses.batch_normalized_advantages(t([2, 2]), torch.tensor([0, 1])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "ratio, adv, expected_loss, clipped",
    [
        (1.5, 1.0, -1.2, True),  # positive advantage: capped at 1 + 0.2
        (1.5, -1.0, 1.5, False),  # negative advantage: the unclipped (worse) side is kept
        (0.5, 1.0, -0.5, False),
        (0.5, -1.0, 0.8, True),  # negative advantage: floored at 1 - 0.2
        (1.0, 1.0, -1.0, False),
    ],
)
def test_clipped_surrogate_picks_the_pessimistic_side(ratio, adv, expected_loss, clipped):
    logp, old = t([[math.log(ratio)]]), t([[0.0]])
    loss, was_clipped = losses.clipped_surrogate(logp, old, t([adv]), clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx(expected_loss, abs=1e-6) and was_clipped.item() is clipped


def test_clip_higher_is_asymmetric():
    logp, old = t([[math.log(1.25)], [math.log(0.75)]]), t([[0.0], [0.0]])
    loss, was_clipped = losses.clipped_surrogate(logp, old, t([1.0, -1.0]), clip_low=0.2, clip_high=0.28)
    # 1.25 < 1.28 is inside the upper range; 0.75 < 0.8 is floored for the negative advantage
    assert loss[:, 0].tolist() == pytest.approx([-1.25, 0.8]) and was_clipped[:, 0].tolist() == [False, True]


def test_gspo_uses_one_length_normalised_ratio_per_sequence():
    logp = t([[math.log(2.0), 0.0, 5.0]])  # the third position is padding
    old = t([[0.0, 0.0, -5.0]])
    mask = t([[1, 1, 0]])
    loss, was_clipped = losses.gspo_surrogate(logp, old, t([1.0]), mask, clip_low=0.5, clip_high=0.5)
    s = math.sqrt(2.0)  # exp(mean(log 2, 0)); clip at 1.5 leaves it
    assert loss[0, :2].tolist() == pytest.approx([-s, -s]) and not was_clipped[0, 0]
    loss, was_clipped = losses.gspo_surrogate(logp, old, t([1.0]), mask, clip_low=3e-4, clip_high=4e-4)
    assert loss[0, 0].item() == pytest.approx(-1.0004) and was_clipped[0, 0]


def test_gspo_gradient_is_the_sequence_ratio_spread_over_tokens():
    logp = t([[math.log(2.0), 0.0]]).requires_grad_()
    loss, _ = losses.gspo_surrogate(logp, t([[0.0, 0.0]]), t([1.0]), t([[1, 1]]), clip_low=0.9, clip_high=9.0)
    loss.sum().backward()
    # d/dlogp_t of -(s * A) summed over 2 tokens, with s_t = sg[s] * exp(logp_t - sg[logp_t]): -s per token
    assert logp.grad[0].tolist() == pytest.approx([-math.sqrt(2.0)] * 2)


def test_kl_estimators():
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    assert losses.kl_penalty(logp, ref, estimator="k1").item() == pytest.approx(math.log(2.0))
    assert losses.kl_penalty(logp, ref, estimator="k3").item() == pytest.approx(0.5 + math.log(2.0) - 1)
    grid = torch.linspace(-3, 3, 13)
    assert (losses.kl_penalty(grid, torch.zeros(13), estimator="k3") >= 0).all()
    with pytest.raises(ValueError, match="k1' or 'k3"):
        losses.kl_penalty(logp, ref, estimator="k2")


def test_aggregations_on_unequal_lengths_and_padding():
    loss = t([[1, 1, 1, float("inf")], [2, float("nan"), 0, 0]])
    mask = t([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert losses.token_mean(loss, mask).item() == pytest.approx((3 + 2) / 4)
    assert losses.sequence_mean(loss, mask).item() == pytest.approx((1 + 2) / 2)
    assert losses.constant_normalizer(loss, mask, max_tokens=4).item() == pytest.approx(5 / 8)
    assert set(losses.AGGREGATIONS) == {"token_mean", "sequence_mean", "constant"}


def test_entropy_and_selective_log_softmax():
    assert losses.entropy_from_logits(torch.zeros(2, 7)).tolist() == pytest.approx([math.log(7)] * 2)
    logits = torch.randn(3, 5, 11)
    ids = torch.randint(0, 11, (3, 5))
    expected = logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]
    torch.testing.assert_close(losses.selective_log_softmax(logits, ids), expected)


def test_masked_mean_ignores_padding_and_handles_empty_masks():
    assert losses.masked_mean(t([1.0, 1e30]), t([1, 0])).item() == 1.0
    assert losses.masked_mean(t([1.0]), t([0])).item() == 0.0
