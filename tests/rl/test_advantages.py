"""Advantage estimators vs hand-computed numbers and independent naive loops."""

import dataclasses

import pytest
import torch

from maniflow_rl.rl.advantages import (
    ADVANTAGE_FUNCTIONS,
    AdvantageConfig,
    ManiFlowAdvantageCalculator,
    bootstrap_truncated_rewards,
    compute_gae,
    compute_grpo,
    compute_mc_returns,
    compute_nstep,
    normalize_advantages,
    register_advantage,
)
from maniflow_rl.rl.batch import RolloutBatch


def col(*xs):
    """A [T, 1] column tensor."""
    return torch.tensor(xs, dtype=torch.float64).unsqueeze(1)


def naive_gae(rewards, values, dones, last_values, gamma, lam):
    """Textbook per-env python loop, independent of the vectorized implementation."""
    T, N = len(rewards), len(rewards[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            next_v = last_values[n] if t == T - 1 else values[t + 1][n]
            nd = 1.0 - dones[t][n]
            delta = rewards[t][n] + gamma * next_v * nd - values[t][n]
            running = delta + gamma * lam * nd * running
            adv[t][n] = running
    return torch.tensor(adv, dtype=torch.float64)


def random_rollout(T=7, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    dones = (torch.rand(T, N, generator=g) < 0.3).double()
    last_values = torch.randn(N, generator=g, dtype=torch.float64)
    return rewards, values, dones, last_values


def test_gae_hand_example_with_done_in_the_middle():
    rewards, values, dones = col(1.0, 2.0, 3.0), col(0.5, 1.0, 1.5), col(0.0, 1.0, 0.0)
    adv, ret = compute_gae(rewards, values, dones, torch.tensor([2.0], dtype=torch.float64),
                           gamma=0.9, gae_lambda=0.8)
    # t=2: 3 + .9*2 - 1.5 = 3.3; t=1 (done): 2 - 1 = 1; t=0: 1 + .9*1 - .5 + .9*.8*1 = 2.12
    assert torch.allclose(adv[:, 0], torch.tensor([2.12, 1.0, 3.3], dtype=torch.float64))
    assert torch.allclose(ret[:, 0], torch.tensor([2.62, 2.0, 4.8], dtype=torch.float64))


def test_gae_matches_naive_loop():
    rewards, values, dones, last = random_rollout()
    adv, ret = compute_gae(rewards, values, dones, last, gamma=0.97, gae_lambda=0.9)
    expected = naive_gae(rewards.tolist(), values.tolist(), dones.tolist(), last.tolist(),
                         gamma=0.97, lam=0.9)
    assert torch.allclose(adv, expected)
    assert torch.allclose(ret, expected + values)


def test_mc_hand_example_and_equals_gae_lambda_one():
    rewards, values, dones = col(1.0, 2.0, 3.0), col(0.5, 1.0, 1.5), col(0.0, 1.0, 0.0)
    adv, ret = compute_mc_returns(rewards, values, dones, torch.tensor([2.0], dtype=torch.float64),
                                  gamma=0.9)
    # G2 = 3 + .9*2 = 4.8 (bootstrapped), G1 = 2 (done), G0 = 1 + .9*2 = 2.8
    assert torch.allclose(ret[:, 0], torch.tensor([2.8, 2.0, 4.8], dtype=torch.float64))
    assert torch.allclose(adv[:, 0], torch.tensor([2.3, 1.0, 3.3], dtype=torch.float64))
    r, v, d, last = random_rollout(seed=1)
    assert torch.allclose(compute_mc_returns(r, v, d, last, gamma=0.95)[1],
                          compute_gae(r, v, d, last, gamma=0.95, gae_lambda=1.0)[1])


def test_nstep_hand_example():
    rewards, values = col(1.0, 2.0, 3.0, 4.0), col(0.1, 0.2, 0.3, 0.4)
    dones = col(0.0, 0.0, 1.0, 0.0)
    adv, ret = compute_nstep(rewards, values, dones, torch.tensor([5.0], dtype=torch.float64),
                             gamma=0.5, nstep=2)
    # t0: 1 + .5*2 + .25*V2(.3); t1: 2 + .5*3 (done at 2, no bootstrap); t2: 3; t3: 4 + .5*5
    expected = torch.tensor([2.075, 3.5, 3.0, 6.5], dtype=torch.float64)
    assert torch.allclose(ret[:, 0], expected)
    assert torch.allclose(adv[:, 0], expected - values[:, 0])


def test_nstep_limits_match_td0_and_mc():
    r, v, d, last = random_rollout(seed=2)
    assert torch.allclose(compute_nstep(r, v, d, last, gamma=0.9, nstep=1)[0],
                          compute_gae(r, v, d, last, gamma=0.9, gae_lambda=0.0)[0])
    assert torch.allclose(compute_nstep(r, v, d, last, gamma=0.9, nstep=100)[1],
                          compute_mc_returns(r, v, d, last, gamma=0.9)[1])


def test_grpo_hand_example():
    # envs 0,1 -> group 0; envs 2,3 -> group 1 (T = 3)
    rewards = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.float64)
    dones = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=torch.float64)
    group_ids = torch.tensor([0, 0, 1, 1])
    adv, scores, mask = compute_grpo(rewards, dones, group_ids, eps=1e-9)
    # group 0 episodes {1, 0}: mean .5, std .5. group 1 episodes {1, 0 (running), 1, 1}:
    # mean .75, std sqrt(.1875)
    s1 = 0.1875 ** 0.5
    expected = torch.tensor([[1, -1, 0.25 / s1, 0.25 / s1],
                             [1, -1, -0.75 / s1, 0.25 / s1],
                             [1, -1, -0.75 / s1, 0.25 / s1]], dtype=torch.float64)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert torch.equal(scores[:, 2], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(mask, torch.ones_like(mask))


def test_grpo_drops_uniform_groups():
    rewards = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    dones = torch.ones(1, 4)
    group_ids = torch.tensor([0, 0, 1, 1])
    adv, _, mask = compute_grpo(rewards, dones, group_ids, drop_uniform_groups=True)
    assert torch.equal(mask, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert torch.allclose(adv[:, :2], torch.zeros(1, 2))
    _, _, keep_all = compute_grpo(rewards, dones, group_ids, drop_uniform_groups=False)
    assert torch.equal(keep_all, torch.ones(1, 4))


def test_bootstrap_truncated_rewards():
    out = bootstrap_truncated_rewards(col(1.0, 2.0, 3.0), col(0.0, 1.0, 0.0),
                                      col(7.0, 10.0, 7.0), gamma=0.9)
    assert torch.allclose(out[:, 0], torch.tensor([1.0, 11.0, 3.0], dtype=torch.float64))


def test_normalize_advantages_masked_and_distributed():
    adv = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert torch.allclose(normalize_advantages(adv, mask), torch.tensor([-1.0, 0.0, 1.0, 0.0]),
                          atol=1e-6)
    # two ranks holding the same data == normalizing the concatenation on one rank
    two_ranks = normalize_advantages(adv, mask, all_reduce=lambda x: 2 * x)
    single = normalize_advantages(torch.cat([adv, adv]), torch.cat([mask, mask]))[:4]
    assert torch.allclose(two_ranks, single)


def make_batch(rewards, values, dones, truncated, final_values, last_values):
    T, N = rewards.shape
    return RolloutBatch(
        obs={"state": torch.zeros(T, N, 2, 3)}, chains=torch.zeros(T, N, 3, 4, 2),
        denoise_inds=torch.zeros(T, N, 2, dtype=torch.long), actions=torch.zeros(T, N, 2, 2),
        logprobs=torch.zeros(T, N, 2, 2), values=values, rewards=rewards, dones=dones,
        truncated=truncated, final_values=final_values, last_values=last_values)


def test_calculator_applies_truncation_bootstrap_then_gae():
    batch = make_batch(col(1.0, 2.0, 3.0), col(0.5, 1.0, 1.5), col(0.0, 1.0, 0.0),
                       col(0.0, 1.0, 0.0), col(0.0, 10.0, 0.0),
                       torch.tensor([2.0], dtype=torch.float64))
    config = AdvantageConfig(gamma=0.9, gae_lambda=0.8, normalize_advantages=False)
    out = ManiFlowAdvantageCalculator(config).calculate(batch)
    # reward at t=1 becomes 2 + .9*10 = 11: A1 = 10, A0 = 1.4 + .72*10 = 8.6, A2 = 3.3
    assert torch.allclose(out.advantages[:, 0], torch.tensor([8.6, 10.0, 3.3], dtype=torch.float64))
    assert torch.allclose(out.returns, out.advantages + batch.values)
    assert torch.equal(batch.rewards[:, 0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))


def test_calculator_grpo_uses_group_size_and_mask_and_normalizes():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    batch = make_batch(rewards, torch.zeros(1, 4), torch.ones(1, 4), torch.zeros(1, 4),
                       torch.zeros(1, 4), torch.zeros(4))
    config = AdvantageConfig(advantage_type="grpo", group_size=2)
    out = ManiFlowAdvantageCalculator(config).calculate(batch)
    assert torch.equal(out.mask, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert torch.allclose(out.advantages, torch.tensor([[2 ** -0.5, -(2 ** -0.5), 0.0, 0.0]]),
                          atol=1e-5)


def test_config_validation_and_registry():
    with pytest.raises(ValueError, match="gae.*grpo.*mc.*nstep"):
        AdvantageConfig(advantage_type="nope")
    for bad in ({"gamma": 1.5}, {"gae_lambda": -0.1}, {"nstep": 0}, {"group_size": 0},
                {"grpo_eps": 0.0}):
        with pytest.raises(ValueError):
            AdvantageConfig(**bad)
    assert {"gae", "mc", "nstep", "grpo"} <= set(ADVANTAGE_FUNCTIONS)
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("gae")(compute_gae)


def test_custom_advantage_hook():
    batch = make_batch(col(1.0, 2.0), col(0.0, 0.0), col(0.0, 1.0), col(0.0, 1.0),
                       col(0.0, 5.0), torch.tensor([0.0], dtype=torch.float64))
    config = AdvantageConfig(advantage_type="custom", normalize_advantages=False)
    with pytest.raises(NotImplementedError, match="_calculate_custom_advantages"):
        ManiFlowAdvantageCalculator(config).calculate(batch)

    class RewardAsAdvantage(ManiFlowAdvantageCalculator):
        def _calculate_custom_advantages(self, rollout_batch, next_values):
            return rollout_batch.rewards, rollout_batch.rewards

    out = RewardAsAdvantage(config).calculate(batch)
    assert torch.allclose(out.advantages[:, 0], torch.tensor([1.0, 2.0 + 0.99 * 5.0],
                                                             dtype=torch.float64))


def test_time_limit_as_failure_skips_the_truncation_bootstrap():
    from maniflow_rl.rl.advantages import AdvantageConfig, ManiFlowAdvantageCalculator
    from maniflow_rl.rl.batch import RolloutBatch

    T, N = 2, 1
    zeros = torch.zeros(T, N)
    batch = RolloutBatch(
        obs={"s": torch.zeros(T, N, 1, 1)}, chains=torch.zeros(T, N, 2, 1, 1),
        denoise_inds=torch.zeros(T, N, 1, dtype=torch.long), actions=torch.zeros(T, N, 1, 1),
        logprobs=torch.zeros(T, N, 1, 1), values=torch.tensor([[0.5], [0.5]]),
        rewards=zeros.clone(), dones=torch.tensor([[0.0], [1.0]]),
        truncated=torch.tensor([[0.0], [1.0]]), final_values=torch.tensor([[0.0], [0.8]]),
        last_values=torch.zeros(N))
    common = dict(gamma=0.5, gae_lambda=1.0, normalize_advantages=False)
    with_bootstrap = ManiFlowAdvantageCalculator(AdvantageConfig(**common)).calculate(
        dataclasses.replace(batch))
    as_failure = ManiFlowAdvantageCalculator(AdvantageConfig(
        **common, bootstrap_truncated=False)).calculate(dataclasses.replace(batch))
    # bootstrap: r_1 = 0.5 * 0.8 = 0.4 -> returns [0.2, 0.4]; as failure: returns [0, 0]
    torch.testing.assert_close(with_bootstrap.returns[:, 0], torch.tensor([0.2, 0.4]))
    torch.testing.assert_close(as_failure.returns[:, 0], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(as_failure.advantages[:, 0], torch.tensor([-0.5, -0.5]))


def test_grpo_complete_episodes_only_ignores_running_segments():
    # same rollout as test_grpo_hand_example; env 2's second episode is still running at the end
    rewards = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.float64)
    dones = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=torch.float64)
    group_ids = torch.tensor([0, 0, 1, 1])
    adv, _, mask = compute_grpo(rewards, dones, group_ids, eps=1e-9, drop_uniform_groups=False,
                                complete_episodes_only=True)
    # group 1 keeps {1 (env 2), 1, 1 (env 3)}: mean 1, std 0 -> advantage 0 everywhere
    assert torch.equal(mask[:, 2], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(mask[:, 3], torch.ones(3, dtype=torch.float64))
    assert torch.allclose(adv[:, 2:], torch.zeros(3, 2, dtype=torch.float64))
    assert torch.allclose(adv[:, :2], torch.tensor([[1.0, -1.0]] * 3, dtype=torch.float64))
    # dropping uniform groups now removes group 1 (all its finished episodes succeeded)
    _, _, mask = compute_grpo(rewards, dones, group_ids, complete_episodes_only=True)
    assert torch.equal(mask[:, 2:], torch.zeros(3, 2, dtype=torch.float64))


def test_grpo_group_without_finished_episodes_is_masked_not_nan():
    rewards = torch.zeros(2, 2, dtype=torch.float64)
    dones = torch.tensor([[0, 1], [0, 1]], dtype=torch.float64)
    adv, _, mask = compute_grpo(rewards, dones, torch.tensor([0, 1]), drop_uniform_groups=False,
                                complete_episodes_only=True)
    assert torch.isfinite(adv).all()
    assert torch.equal(mask[:, 0], torch.zeros(2, dtype=torch.float64))
