"""DSRL math (issue 9): the latent actor's tanh-Gaussian log-prob, TD targets, n-step chunk
transitions and the replay buffer, against independent computations and hand examples."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import AffineTransform, TanhTransform

from maniflow_rl.rl.dsrl.losses import (actor_loss, alpha_loss, ensemble_regression_loss,
                                        tanh_gaussian_log_prob, td_target)
from maniflow_rl.rl.dsrl.networks import LatentActor
from maniflow_rl.rl.replay import TRANSITION_FIELDS, ChunkReplayBuffer, NStepAccumulator


@pytest.mark.parametrize("bound", [1.0, 1.5, (1.5, 1.5, 1.5, 0.2, 0.2)])   # last: per dim
def test_tanh_gaussian_log_prob_matches_torch_distributions(bound):
    if isinstance(bound, tuple):   # noise dims, then residual dims with their own bound
        bound = torch.tensor(bound, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    mean, log_std = torch.randn(64, 5, **f64), torch.randn(64, 5, **f64) * 0.5
    u = (mean + log_std.exp() * torch.randn(64, 5, **f64) * 2).clamp(-6, 6)   # large |u| too
    reference = TransformedDistribution(Normal(mean, log_std.exp()),
                                        [TanhTransform(), AffineTransform(0.0, bound)])
    expected = reference.log_prob(bound * torch.tanh(u)).sum(-1)
    ours = tanh_gaussian_log_prob(u, mean, log_std, bound)
    keep = u.abs().amax(-1) < 4      # torch's tanh inverse loses precision near +-1
    assert keep.sum() > 10
    assert torch.allclose(ours[keep], expected[keep], atol=1e-6)


def test_actor_samples_are_bounded_and_their_log_prob_is_consistent():
    torch.manual_seed(0)
    actor = LatentActor(6, 4, (16,), noise_bound=1.5)
    features = torch.randn(2000, 6)
    w, log_prob = actor.sample(features, torch.Generator().manual_seed(1))
    assert w.abs().max() <= 1.5 and w.shape == (2000, 4)
    mean, log_std = actor.distribution(features)
    keep = (w.abs() / 1.5).amax(-1) < 0.99          # atanh of float32 w is exact enough here
    u = torch.atanh(w[keep].double() / 1.5)
    expected = tanh_gaussian_log_prob(u, mean[keep].double(), log_std[keep].double(), 1.5)
    assert keep.sum() > 1000
    assert torch.allclose(log_prob[keep].double(), expected, atol=1e-3)
    assert torch.allclose(actor.mean_noise(features), 1.5 * torch.tanh(mean))


def test_td_target_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.5])
    discounts = torch.tensor([0.9, 0.81, 0.9])            # 1-step, 2-step, 1-step
    terminated = torch.tensor([1.0, 0.0, 0.0])            # the third is a time limit: bootstrap
    next_q = torch.tensor([10.0, 2.0, 4.0])
    next_log_prob = torch.tensor([-1.0, 0.5, 0.0])
    y = td_target(rewards, discounts, terminated, next_q, next_log_prob, alpha=0.2)
    assert torch.allclose(y, torch.tensor([1.0, 0.81 * (2.0 - 0.1), 0.5 + 0.9 * 4.0]))


def test_losses_by_hand():
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]])            # [E=2, B=2]
    assert ensemble_regression_loss(q, torch.tensor([1.0, 1.0])).item() == pytest.approx(
        (0 + 1) / 2 + (4 + 1) / 2)
    log_prob = torch.tensor([-2.0, 1.0])
    assert actor_loss(q, log_prob, 0.5).item() == pytest.approx(((-1 - 1) + (0.5 - 0)) / 2)
    log_alpha = torch.tensor(0.3, requires_grad=True)
    alpha_loss(log_alpha, log_prob, target_entropy=0.0).backward()
    assert log_alpha.grad.item() == pytest.approx(-log_prob.mean().item())


def _step(reward, terminated=0.0, tag=0.0):
    return {"features": np.full(2, tag, np.float32), "noise": np.zeros(3, np.float32),
            "action": np.zeros(4, np.float32), "reward": reward, "discount": 0.0,
            "terminated": terminated, "next_features": np.full(2, tag + 1, np.float32),
            "alias_noise": np.zeros((1, 3), np.float32),
            "alias_action": np.zeros((1, 4), np.float32), "is_demo": 0.0}


def test_nstep_accumulator_by_hand():
    acc = NStepAccumulator(num_envs=1, nstep=3, chunk_discount=0.5)
    assert acc.push(0, _step(1.0, tag=0), False) == []
    assert acc.push(0, _step(2.0, tag=1), False) == []
    first, = acc.push(0, _step(4.0, tag=2), False)
    assert first["reward"] == pytest.approx(1 + 0.5 * 2 + 0.25 * 4)
    assert first["discount"] == pytest.approx(0.125)
    assert first["features"][0] == 0 and first["next_features"][0] == 3   # s_0 -> s_3
    # the episode terminates: the pending chains flush with shorter horizons
    out = acc.push(0, _step(8.0, terminated=1.0, tag=3), True)
    assert [o["features"][0] for o in out] == [1, 2, 3]
    assert [o["reward"] for o in out] == pytest.approx([2 + 0.5 * 4 + 0.25 * 8, 4 + 0.5 * 8, 8])
    assert [o["discount"] for o in out] == pytest.approx([0.125, 0.25, 0.5])
    assert all(o["terminated"] == 1.0 for o in out)
    assert acc.push(0, _step(1.0, tag=9), False) == []    # a new episode starts empty


def _batch(n, value, demo=0.0):
    buffer_shapes = {"features": (2,), "noise": (3,), "action": (4,), "reward": (),
                     "discount": (), "terminated": (), "next_features": (2,),
                     "alias_noise": (1, 3), "alias_action": (1, 4), "is_demo": ()}
    out = {k: np.full((n, *s), value, np.float32) for k, s in buffer_shapes.items()}
    out["is_demo"][:] = demo
    return out


def test_replay_demo_ratio_ring_overwrite_and_resume(tmp_path):
    buffer = ChunkReplayBuffer(capacity=10, feature_dim=2, noise_dim=3, action_dim=4,
                               num_aliases=1, seed=0)
    buffer.add_demos(_batch(5, -1.0, demo=1.0))
    buffer.add(_batch(8, 1.0))
    buffer.add(_batch(4, 2.0))                               # wraps: 2 oldest overwritten
    assert buffer.size == 10 and buffer.num_demos == 5
    assert (buffer.online["reward"] == 2.0).sum() == 4 and (buffer.online["reward"] == 1.0).sum() == 6
    batch = buffer.sample(400, demo_fraction=0.25)
    assert int(batch["is_demo"].sum()) == 100 and set(batch.keys()) == set(TRANSITION_FIELDS)
    buffer.save(tmp_path / "replay.npz")
    restored = ChunkReplayBuffer(10, 2, 3, 4, 1, seed=123)
    restored.load(tmp_path / "replay.npz")
    assert restored.size == 10 and restored.position == buffer.position
    buffer.load(tmp_path / "replay.npz")                     # same RNG state on both sides
    again, other = buffer.sample(16, 0.5), restored.sample(16, 0.5)
    for key in TRANSITION_FIELDS:
        assert torch.equal(again[key], other[key])
    with pytest.raises(ValueError, match="shape"):
        buffer.add({**_batch(2, 0.0), "features": np.zeros((2, 5), np.float32)})


def test_actor_penalty_prior_kl_is_log_pi_minus_standard_normal_log_density():
    from maniflow_rl.rl.dsrl.losses import actor_penalty

    noise, log_prob = torch.randn(5, 6), torch.randn(5)
    reference = log_prob - Normal(0.0, 1.0).log_prob(noise).sum(-1)
    assert torch.allclose(actor_penalty(log_prob, noise, "prior_kl"), reference, atol=1e-6)
    assert torch.equal(actor_penalty(log_prob, noise, "entropy"), log_prob)


@pytest.mark.parametrize("regularizer, variance_range", [
    ("entropy", (0.68, 0.80)),    # max entropy on [-1.5, 1.5]: uniform, variance 0.75
    ("prior_kl", (0.45, 0.65)),   # closest to N(0, 1) on [-1.5, 1.5]: truncated normal, 0.55
])
def test_with_a_flat_q_the_actor_goes_to_its_regularizer_optimum(regularizer, variance_range):
    from maniflow_rl.rl.dsrl.losses import actor_penalty

    torch.manual_seed(0)
    actor = LatentActor(feature_dim=3, noise_dim=4, hidden_dims=(16,), noise_bound=1.5)
    optimizer = torch.optim.Adam(actor.parameters(), lr=3e-3)
    features = torch.ones(512, 3)
    for _ in range(600):   # Q = 0: the loss is alpha * penalty alone
        noise, log_prob = actor.sample(features)
        loss = actor_penalty(log_prob, noise, regularizer).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        samples = actor.sample(torch.ones(20000, 3))[0]
    low, high = variance_range
    assert low < samples.var().item() < high
    assert abs(samples.mean().item()) < 0.05


def test_finite_step_skips_a_finite_loss_with_a_non_finite_gradient():
    from maniflow_rl.rl.dsrl.update import finite_step

    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param], lr=0.1)
    loss = torch.sqrt(param - param.detach()).sum()   # value 0, gradient 1 / (2 sqrt(0)) = inf
    assert torch.isfinite(loss)
    assert not finite_step(optimizer, loss)
    assert torch.equal(param.detach(), torch.ones(3)) and param.grad is None
    assert not optimizer.state   # Adam state untouched
    assert finite_step(optimizer, (param ** 2).sum())   # a healthy step is taken
    assert not torch.equal(param.detach(), torch.ones(3))


def test_prior_kl_with_a_residual_pulls_the_noise_to_n01_and_spreads_the_residual():
    """Flat Q, latent z = [w (4 dims, bound 1.5), r (2 dims, bound 0.2)], the penalty update.py
    uses: log pi(z|s) - log N(w; 0, I). The noise dims go to the truncated normal (variance
    0.55), the residual dims to the max-entropy uniform on [-0.2, 0.2] (variance 0.0133)."""
    from maniflow_rl.rl.dsrl.losses import actor_penalty

    torch.manual_seed(0)
    bounds = torch.tensor([1.5] * 4 + [0.2] * 2)
    actor = LatentActor(feature_dim=3, noise_dim=6, hidden_dims=(16,), noise_bound=bounds)
    optimizer = torch.optim.Adam(actor.parameters(), lr=3e-3)
    features = torch.ones(512, 3)
    for _ in range(600):
        latent, log_prob = actor.sample(features)
        loss = actor_penalty(log_prob, latent[:, :4], "prior_kl").mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        samples = actor.sample(torch.ones(20000, 3))[0]
    assert 0.45 < samples[:, :4].var().item() < 0.65
    assert 0.2 ** 2 / 3 * 0.9 < samples[:, 4:].var().item() < 0.2 ** 2 / 3 * 1.05
