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


def test_rloo_subtracts_the_mean_of_the_other_rewards():
    advantages = losses.rloo_advantages(t([1, 0, 0, 1]), torch.tensor([0, 0, 0, 0]))
    # r_0 = 1 against the others' mean (0 + 0 + 1) / 3: 1 - 1/3 = 2/3; r_1 = 0 against (1 + 0 + 1) / 3: -2/3
    torch.testing.assert_close(advantages, t([2 / 3, -2 / 3, -2 / 3, 2 / 3]), atol=1e-6, rtol=0)
    mixed = losses.rloo_advantages(t([3, 1, 5]), torch.tensor([0, 0, 1]))  # a group of one gets 0
    torch.testing.assert_close(mixed, t([2, -2, 0]), atol=1e-6, rtol=0)


INF = float("inf")


def test_gae_skips_env_tokens_golden_value_of_the_issue():
    rewards, values = t([[0, 0, 0, 0, 1]]), t([[0.5, 0.6, 99, 99, 0.7]])
    mask = t([[1, 1, 0, 0, 1]])
    advantages, returns = losses.gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95)
    # policy-only sequence r = [0, 0, 1], v = [.5, .6, .7]: deltas [.1, .1, .3];
    # A_2 = .3, A_1 = .1 + .95 * .3 = .385, A_0 = .1 + .95 * .385 = .46575
    torch.testing.assert_close(advantages, t([[0.46575, 0.385, 0, 0, 0.3]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(returns, t([[0.96575, 0.985, 0, 0, 1.0]]), atol=1e-6, rtol=0)


def test_gae_discounts_per_policy_token_and_ignores_whatever_env_tokens_hold():
    mask = t([[1, 0, 1, 1], [1, 1, 0, 0]])
    rewards = t([[0, 5, 0, 1], [0, 2, INF, -INF]])  # row 0's env token holds a reward, row 1 pads with inf
    values = t([[0.5, 7, 0.4, 0.2], [1.0, 0.5, INF, float("nan")]])
    advantages, returns = losses.gae_advantages(rewards, values, mask, gamma=0.5, lam=1.0)
    # lambda 1: A_t = G_t - v_t with G discounted once per POLICY token. Row 0: G = [.25, .5, 1] over
    # the policy tokens, so A = [.25 - .5, .5 - .4, 1 - .2]. Counting the env token as a step (G_0 =
    # .125) or bootstrapping from its value 7 (or its reward 5) would give something else.
    # Row 1: G = [0 + .5 * 2, 2] -> A = [1 - 1, 2 - .5].
    expected = t([[-0.25, 0, 0.1, 0.8], [0.0, 1.5, 0, 0]])
    torch.testing.assert_close(advantages, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(returns, t([[0.25, 0, 0.5, 1.0], [1.0, 2.0, 0, 0]]), atol=1e-6, rtol=0)


def test_gae_equals_gae_on_each_compressed_policy_only_sequence():
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 9, generator=generator), torch.randn(5, 9, generator=generator)
    mask = (torch.rand(5, 9, generator=generator) > 0.4).float()
    advantages, returns = losses.gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    for row in range(5):
        keep = mask[row].bool()
        r, v = rewards[row, keep].tolist(), values[row, keep].tolist()
        expected, running = [0.0] * len(r), 0.0
        for i in reversed(range(len(r))):
            next_value = v[i + 1] if i + 1 < len(r) else 0.0
            running = r[i] + 0.9 * next_value - v[i] + 0.9 * 0.8 * running
            expected[i] = running
        torch.testing.assert_close(advantages[row, keep], t(expected), atol=1e-6, rtol=0)
        torch.testing.assert_close(returns[row, keep], t(expected) + values[row, keep], atol=1e-6, rtol=0)
        assert advantages[row, ~keep].abs().sum() == 0 and returns[row, ~keep].abs().sum() == 0


def test_whiten_uses_the_unbiased_variance_over_masked_positions():
    x, mask = t([[1, 2, INF], [3, -50, 0]]), t([[1, 1, 0], [1, 0, 0]])
    # values 1, 2, 3: mean 2, variance with ddof=1 = (1 + 0 + 1) / 2 = 1
    torch.testing.assert_close(losses.whiten(x, mask), t([[-1, 0, 0], [1, 0, 0]]), atol=1e-6, rtol=0)
    kept_mean = losses.whiten(x, mask, shift_mean=False)  # unit variance, the mean added back as in TRL
    torch.testing.assert_close(kept_mean, t([[1, 2, 0], [3, 0, 0]]), atol=1e-6, rtol=0)
    spread = losses.whiten(t([[0, 4]]), t([[1, 1]]))  # mean 2, variance (4 + 4) / 1 = 8
    torch.testing.assert_close(spread, t([[-2, 2]]) / math.sqrt(8), atol=1e-6, rtol=0)
    assert losses.whiten(t([[5.0, 1.0]]), t([[1, 0]])).tolist() == [[0.0, 0.0]]  # one value: variance 0


def test_reinforce_pp_whitens_the_returns_over_every_policy_token():
    token_rewards = t([[0, 1, 99], [0, 7, 7]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    # gamma 1: returns [1, 1] and [0]; mean 2/3, centred [1/3, 1/3, -2/3], variance (ddof 1) 1/3
    root3 = math.sqrt(3)
    expected = t([[root3 / 3, root3 / 3, 0], [-2 * root3 / 3, 0, 0]])
    torch.testing.assert_close(losses.reinforce_pp_advantages(token_rewards, mask), expected, atol=1e-6, rtol=0)


def test_reinforce_pp_discounts_per_policy_token():
    token_rewards, mask = t([[0, 5, 0, 1]]), t([[1, 0, 1, 1]])
    # gamma .5 over the policy tokens: returns [.25, .5, 1]; mean 7/12, centred [-4, -1, 5] / 12,
    # variance (16 + 1 + 25) / 144 / 2 = 21 / 144, so the whitened values are [-4, -1, 5] / sqrt(21)
    advantages = losses.reinforce_pp_advantages(token_rewards, mask, gamma=0.5)
    expected = t([[-4, 0, -1, 5]]) / math.sqrt(21)
    expected[0, 1] = 0.0
    torch.testing.assert_close(advantages, expected, atol=1e-6, rtol=0)


def test_reinforce_pp_baseline_subtracts_the_group_mean_first():
    token_rewards, mask = t([[0, 1], [0, 0], [1, 0], [1, 0]]), t([[1, 1], [1, 1], [1, 0], [1, 0]])
    groups = torch.tensor([0, 0, 1, 1])
    # sequence rewards [1, 0 | 1, 1], group means .5 and 1: returns [.5, .5 | -.5, -.5 | 0 | 0] on the
    # six policy tokens; mean 0, variance (ddof 1) 1 / 5, so +-.5 becomes +-.5 * sqrt(5)
    advantages = losses.reinforce_pp_advantages(token_rewards, mask, group_ids=groups)
    half = 0.5 * math.sqrt(5)
    torch.testing.assert_close(advantages, t([[half, half], [-half, -half], [0, 0], [0, 0]]), atol=1e-6, rtol=0)
    # without the baseline the returns are [1, 1 | 0, 0 | 1 | 1]: mean 2/3, variance (ddof 1) 4/15
    plain = losses.reinforce_pp_advantages(token_rewards, mask)
    scale = math.sqrt(15 / 4)
    torch.testing.assert_close(plain[:, 0], t([1 / 3, -2 / 3, 1 / 3, 1 / 3]) * scale, atol=1e-6, rtol=0)


def test_outcome_rewards_sit_at_the_last_policy_token():
    mask = t([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]])
    assert losses.outcome_token_rewards(t([2, 3]), mask).tolist() == [[0, 0, 0, 2, 0], [0, 0, 0, 0, 0]]


def test_every_registered_advantage_takes_rewards_groups_and_the_loss_mask():
    rewards, groups = t([1, 0, 0, 1]), torch.tensor([0, 0, 1, 1])
    mask = t([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]])
    assert set(losses.ADVANTAGES) == {"std", "none", "batch", "rloo", "reinforce_pp", "reinforce_pp_baseline"}
    for name, advantage_fn in losses.ADVANTAGES.items():
        advantages = advantage_fn(rewards, groups, mask)
        assert advantages.shape in {(4,), (4, 3)} and torch.isfinite(advantages).all(), name
    torch.testing.assert_close(losses.ADVANTAGES["rloo"](rewards, groups, mask), t([1, -1, -1, 1]))
    per_token = losses.ADVANTAGES["reinforce_pp"](rewards, groups, mask)
    torch.testing.assert_close(
        per_token, losses.reinforce_pp_advantages(losses.outcome_token_rewards(rewards, mask), mask)
    )


def test_clipped_value_loss_takes_the_worse_error_and_counts_clipping():
    values, old = t([[1.0, 0.5, 1.0, INF]]), t([[0.5, 0.5, 0.5, 0.0]])
    returns, mask = t([[2.0, 0.0, 0.5, 3.0]]), t([[1, 1, 1, 0]])
    loss, clip_fraction = losses.clipped_value_loss(values, old, returns, mask, clip_range=0.2)
    # token 0: v clipped to .7, errors (1 - 2)^2 = 1 and (.7 - 2)^2 = 1.69 -> 1.69 (clipped);
    # token 1: inside the range, .25 both; token 2: (1 - .5)^2 = .25 beats (.7 - .5)^2 = .04 (not clipped)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.25 + 0.25) / 3, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(1 / 3, abs=1e-6)


def test_explained_variance():
    returns, mask = t([[1, 2, 3, INF]]), t([[1, 1, 1, 0]])
    values = t([[1, 2, 4, 0]])
    # R - v = [0, 0, -1]: variance 2/9; Var[R] = 2/3; 1 - (2/9) / (2/3) = 2/3
    assert losses.explained_variance(values, returns, mask).item() == pytest.approx(2 / 3, abs=1e-6)
    assert losses.explained_variance(returns, returns, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(losses.explained_variance(values, t([[2, 2, 2, 0]]), mask).item())  # Var[R] = 0


def test_adaptive_kl_coefficient_golden_values():
    def coef(kl):
        return losses.adaptive_kl_coef(0.1, kl, target=6.0, horizon=10000, n_steps=256)

    # KL 3: error 3/6 - 1 = -.5, clipped to -.2: .1 * (1 - .2 * 256 / 10000); KL 12: error +1 -> +.2
    assert coef(3.0) == pytest.approx(0.099488, abs=1e-6)
    assert coef(12.0) == pytest.approx(0.100512, abs=1e-6)
    assert coef(6.0) == pytest.approx(0.1, abs=1e-12)
    with pytest.raises(ValueError, match=r"target must be a KL > 0 in nats per sequence .*got 0\.0"):
        losses.adaptive_kl_coef(0.1, 3.0, target=0.0, horizon=10000, n_steps=256)


def test_gspo_accepts_per_token_advantages():
    logp, old, mask = t([[math.log(2.0), 0.0]]), t([[0.0, 0.0]]), t([[1, 1]])
    per_row, _ = losses.gspo_surrogate(logp, old, t([1.0]), mask, clip_low=0.9, clip_high=9.0)
    per_token, _ = losses.gspo_surrogate(logp, old, t([[1.0, 1.0]]), mask, clip_low=0.9, clip_high=9.0)
    assert torch.equal(per_row, per_token)


def test_gae_targets_carry_no_gradient():
    values = t([[0.5, 0.6]]).requires_grad_()
    advantages, returns = losses.gae_advantages(t([[0, 1]]), values, t([[1, 1]]), gamma=1.0, lam=1.0)
    assert not advantages.requires_grad and not returns.requires_grad


def test_process_advantages_golden_values():
    # group 0: row 0 has steps ending at t=1 (reward 1) and t=3 (reward 0); row 1 one step at t=2 (reward 1).
    # The group's step rewards {1, 0, 1}: mean 2/3, population std sqrt(2)/3, so 1 -> 1/sqrt(2), 0 -> -sqrt(2).
    # Group 1 (row 2) has one step: std 0, advantage 0 (not NaN). Row 1's env token (mask 0 at t=1) gets 0.
    rewards = t([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0.7, 0, 0]])
    steps = torch.tensor([[0, 1, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    mask = t([[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1, 1]])
    groups = torch.tensor([0, 0, 1])
    a, b = 1 / math.sqrt(2), -math.sqrt(2)
    expected = t([[a + b, a + b, b, b], [a, 0, a, 0], [0, 0, 0, 0]])
    found = losses.process_advantages(rewards, steps, groups, mask)
    torch.testing.assert_close(found, expected, atol=1e-5, rtol=0)


def test_process_advantages_ignore_rewards_off_the_steps_and_mean_zero_over_steps():
    rewards = t([[5, 0.2, 9, 0.9], [0, 0.4, 0, 0.6]])
    steps = torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]], dtype=torch.bool)
    found = losses.process_advantages(rewards, steps, torch.tensor([0, 0]), torch.ones(2, 4))
    clean = losses.process_advantages(rewards * steps, steps, torch.tensor([0, 0]), torch.ones(2, 4))
    torch.testing.assert_close(found, clean)
    per_step = found - torch.nn.functional.pad(found[:, 1:], (0, 1))  # each step's own normalised reward
    assert float(per_step[steps].sum()) == pytest.approx(0.0, abs=1e-5)
