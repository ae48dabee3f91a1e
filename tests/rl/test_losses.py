"""PPO loss functions vs hand-computed numbers."""

import math

import pytest
import torch

from maniflow_rl.rl.losses import (
    aggregate_logprobs,
    broadcast_to_level,
    explained_variance,
    masked_mean,
    ppo_policy_loss,
    value_loss,
)

CLIP = 0.2


def test_policy_loss_inside_and_outside_clip_range_both_signs():
    ratios = torch.tensor([1.1, 1.5, 0.5, 0.7, 1.5, 0.5])
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    # per element max(-A r, -A clip(r)): -1.1 (inside), -1.2 (clipped high), -0.5 (pessimistic
    # unclipped), 0.8 (clipped low), 1.5, 0.8
    expected = torch.tensor([-1.1, -1.2, -0.5, 0.8, 1.5, 0.8]).mean()
    logratio = ratios.log().requires_grad_()
    loss, info = ppo_policy_loss(logratio, adv, CLIP)
    assert torch.allclose(loss, expected)
    assert math.isclose(float(info["clipfrac"]), 5 / 6, rel_tol=1e-6)
    assert torch.allclose(info["approx_kl"], ((ratios - 1) - ratios.log()).mean())
    assert torch.allclose(info["ratio_mean"], ratios.mean())
    assert math.isclose(float(info["ratio_max"]), 1.5, rel_tol=1e-6)
    loss.backward()
    # elements where the clipped term is the max (1: r=1.5,A>0; 3: r=0.7,A<0; 5: r=0.5,A<0)
    # carry no gradient; the pessimistic unclipped ones (2, 4) do
    zero_grad = logratio.grad.abs() < 1e-12
    assert zero_grad.tolist() == [False, True, False, True, False, True]


def test_dual_clip_bounds_negative_advantage_losses():
    ratios = torch.tensor([5.0, 2.0, 5.0])
    adv = torch.tensor([-1.0, -1.0, 1.0])
    loss_plain, _ = ppo_policy_loss(ratios.log(), adv, CLIP)
    loss_dual, info = ppo_policy_loss(ratios.log(), adv, CLIP, dual_clip=3.0)
    assert torch.allclose(loss_plain, torch.tensor([5.0, 2.0, -1.2]).mean())
    # r=5, A=-1: min(5, 3) = 3; r=2 below the bound; A>0 unaffected
    assert torch.allclose(loss_dual, torch.tensor([3.0, 2.0, -1.2]).mean())
    assert math.isclose(float(info["dual_clipfrac"]), 1 / 3, rel_tol=1e-6)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_policy_loss(ratios.log(), adv, CLIP, dual_clip=0.5)


def test_policy_loss_mask():
    ratios = torch.tensor([1.0, 3.0])
    loss, info = ppo_policy_loss(ratios.log(), torch.tensor([2.0, -5.0]), CLIP,
                                 mask=torch.tensor([1.0, 0.0]))
    assert torch.allclose(loss, torch.tensor(-2.0))
    assert float(info["clipfrac"]) == 0.0
    assert float(info["ratio_max"]) == pytest.approx(1.0)


def test_aggregate_levels_and_broadcast():
    logprobs = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    assert torch.equal(aggregate_logprobs(logprobs, "chunk"), logprobs.sum((1, 2)))
    assert torch.equal(aggregate_logprobs(logprobs, "action"), logprobs.sum(2))
    assert torch.equal(aggregate_logprobs(logprobs, "dim"), logprobs)
    with pytest.raises(ValueError, match="chunk, action, dim"):
        aggregate_logprobs(logprobs, "token")
    x = torch.tensor([1.0, 2.0])
    assert broadcast_to_level(x, "chunk").shape == (2,)
    assert broadcast_to_level(x, "action").shape == (2, 1)
    assert broadcast_to_level(x, "dim").shape == (2, 1, 1)
    assert broadcast_to_level(x, "dim", like=logprobs).shape == (2, 3, 4)


def test_dim_level_loss_broadcasts_per_sample_advantage():
    torch.manual_seed(0)
    logratio = 0.3 * torch.randn(2, 3, 4)
    adv = torch.tensor([1.0, -2.0])
    loss, _ = ppo_policy_loss(logratio, adv, CLIP)
    full_adv = adv[:, None, None].expand(2, 3, 4)
    r = logratio.exp()
    manual = torch.max(-full_adv * r, -full_adv * r.clamp(1 - CLIP, 1 + CLIP)).mean()
    assert torch.allclose(loss, manual)


def test_value_loss_mse_clipped_and_huber():
    values, old = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0])
    returns = torch.tensor([3.0, 1.0])
    # unclipped 0.5 e^2: [2, .5]
    assert torch.allclose(value_loss(values, old, returns), torch.tensor(1.25))
    # clipped: V_clip = [0.5, 2] -> [3.125, .5]; max with unclipped -> [3.125, .5]
    assert torch.allclose(value_loss(values, old, returns, clip_range_value=0.5),
                          torch.tensor(1.8125))
    # huber delta 1: |e|=2 -> 1*(2 - .5) = 1.5; |e|=1 -> .5
    assert torch.allclose(value_loss(values, old, returns, loss_type="huber"), torch.tensor(1.0))
    assert torch.allclose(value_loss(values, old, returns, loss_type="huber", huber_delta=100.0),
                          value_loss(values, old, returns))
    assert torch.allclose(value_loss(values, old, returns, mask=torch.tensor([0.0, 1.0])),
                          torch.tensor(0.5))
    with pytest.raises(ValueError, match="mse, huber"):
        value_loss(values, old, returns, loss_type="l1")


def test_explained_variance_known_cases_and_masked_mean():
    y = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(y, 2.0), y) == pytest.approx(0.0)
    assert explained_variance(-y, y) == pytest.approx(-3.0)
    assert math.isnan(explained_variance(y, torch.ones(3)))
    assert explained_variance(torch.tensor([1.0, 2.0, 9.0]), y,
                              mask=torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(1.0)
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    assert masked_mean(x) == pytest.approx(4.0)
    assert masked_mean(x, torch.tensor([1.0, 0.0])) == pytest.approx(2.0)
    assert masked_mean(x, torch.zeros(2)) == pytest.approx(0.0)
