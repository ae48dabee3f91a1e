"""The steerability diagnostics of DSRL against hand-computed values."""

import numpy as np
import pytest

from maniflow_rl.rl.dsrl import diagnostics


def test_chunk_spread_hand_example():
    # two states, two noises, one dim: within-state std 1 (population), state means 1 and 11
    chunks = np.array([[[0.0], [2.0]], [[10.0], [12.0]]])
    spread = diagnostics.chunk_spread(chunks)
    assert spread["within"] == pytest.approx(1.0)
    assert spread["between"] == pytest.approx(5.0)
    assert spread["ratio"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="chunks must be"):
        diagnostics.chunk_spread(np.zeros((1, 4, 3)))


def _two_env_replay():
    """Transitions ordered (vector step, env); E = 2. Env 0: s0 -> s1 -> s2 (terminated with
    reward 1). Env 1: an episode truncated at its first transition (the next one starts from
    a reset frame), then a success, then one transition still running at the buffer's end."""
    f = lambda x: np.array([x, 0.0])   # noqa: E731  (1-row feature helper)
    features = np.stack([f(0), f(100), f(1), f(200), f(2), f(300)])
    next_features = np.stack([f(1), f(150), f(2), f(300), f(9), f(400)])
    terminated = np.array([0, 0, 0, 1, 1, 0], dtype=np.float32)
    rewards = np.array([0, 0, 0, 1, 1, 0], dtype=np.float32)
    discounts = np.full(6, 0.5, dtype=np.float32)
    return features, next_features, terminated, rewards, discounts


def test_episode_continuity_and_monte_carlo_returns_hand_example():
    features, next_features, terminated, rewards, discounts = _two_env_replay()
    continues = diagnostics.episode_continues(features, next_features, terminated, num_envs=2)
    assert continues.tolist() == [True, False, True, False, False, False]
    returns = diagnostics.monte_carlo_returns(rewards, discounts, continues, num_envs=2)
    # env 0: G2 = 1, G1 = 0 + 0.5 * 1, G0 = 0 + 0.5 * 0.5; env 1: 0 (truncated), 1, 0 (open)
    np.testing.assert_allclose(returns, [0.25, 0.0, 0.5, 1.0, 1.0, 0.0])


def test_critic_ranking_separates_value_tracking_from_action_ranking():
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, 500)
    residual = rng.normal(0, 0.2, 500)
    returns = values + residual
    aliases = np.repeat(values[:, None], 4, axis=1) + rng.normal(0, 1e-3, (500, 4))
    # a critic that knows the value and the action's effect exactly
    ranking = diagnostics.critic_ranking(aliases.mean(1) + residual, aliases, returns)
    assert ranking["corr_advantage_residual"] == pytest.approx(1.0, abs=1e-4)
    # a critic that knows only the value: tracks returns, ranks nothing
    blind = diagnostics.critic_ranking(values + rng.normal(0, 1e-3, 500), aliases, returns)
    assert blind["corr_q_return"] > 0.7
    assert abs(blind["corr_advantage_residual"]) < 0.15
    assert blind["q_std_within_state"] < 0.01 < blind["q_std_between_states"]
