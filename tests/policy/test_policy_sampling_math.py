"""Numerical checks of stochastic_sampling (ALGORITHM.md section 3)."""

import math

import pytest
import torch

from maniflow_rl.policy.maniflow.stochastic_sampling import (
    euler_step, flow_noise_std, flow_sde_sigma, flow_sde_transition, gaussian_entropy,
    gaussian_log_prob)


def gaussian_data_velocity(x, t, m, s):
    """Exact marginal velocity E[x1 - x0 | x_t = x] for x1 ~ N(m, s^2), x0 ~ N(0, 1).

    x_t = (1-t) x0 + t x1 is Gaussian with mean t m and variance V = (1-t)^2 + t^2 s^2;
    Cov(x1, x_t) = t s^2 and Cov(x0, x_t) = 1 - t, so by Gaussian conditioning
    E[x1 - x0 | x] = m + (t s^2 - (1 - t)) / V * (x - t m).
    """
    var = (1 - t) ** 2 + t ** 2 * s ** 2
    return m + (t * s ** 2 - (1 - t)) / var * (x - t * m)


def test_gaussian_data_velocity_is_the_conditional_expectation():
    g = torch.Generator().manual_seed(0)
    m, s, t = 0.7, 0.3, 0.4
    x0 = torch.randn(400_000, generator=g, dtype=torch.float64)
    x1 = m + s * torch.randn(400_000, generator=g, dtype=torch.float64)
    x_t = (1 - t) * x0 + t * x1
    # least-squares regression of x1 - x0 on x_t recovers the (affine) conditional expectation
    design = torch.stack([torch.ones_like(x_t), x_t], 1)
    coef = torch.linalg.lstsq(design, (x1 - x0)[:, None]).solution.squeeze()
    expected = gaussian_data_velocity(torch.tensor([0.0, 1.0], dtype=torch.float64), t, m, s)
    assert torch.allclose(coef, torch.stack([expected[0], expected[1] - expected[0]]),
                          atol=5e-3)


@pytest.mark.parametrize("a", [0.3, 0.7, 1.0])
def test_flow_sde_reproduces_gaussian_data_at_t1(a):
    m, s, num_steps, n = 0.7, 0.3, 400, 100_000
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    dt = 1.0 / num_steps
    for k in range(num_steps):
        t = k * dt
        mu, std = flow_sde_transition(x, gaussian_data_velocity(x, t, m, s), t, dt, a)
        x = mu + std * torch.randn(n, generator=g, dtype=torch.float64)
    assert abs(x.mean().item() - m) < 0.01
    assert abs(x.std().item() - s) < 0.01


def test_flow_sde_sigma_formula_and_t0_replacement():
    t = torch.tensor([0.0, 0.25, 0.5, 0.9])
    sigma = flow_sde_sigma(t, 0.1, 0.5)
    expected = 0.5 * torch.sqrt(torch.tensor([0.9 / 0.1, 0.75 / 0.25, 1.0, 0.1 / 0.9]))
    assert torch.allclose(sigma, expected)


def test_flow_sde_transition_by_hand():
    x, v, t, dt, a = torch.tensor([0.4]), torch.tensor([-1.2]), 0.3, 0.1, 0.6
    g2 = a ** 2 * (1 - t) / t
    mu_expected = 0.4 + dt * (-1.2 - g2 / (2 * (1 - t)) * (0.4 - t * -1.2))
    mu, std = flow_sde_transition(x, v, t, dt, a)
    assert mu.item() == pytest.approx(mu_expected, rel=1e-6)
    assert std.item() == pytest.approx(math.sqrt(g2 * dt), rel=1e-6)


def test_transition_broadcasts_per_sample_times():
    x, v = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    t = torch.tensor([0.0, 0.5, 0.75])
    mu, std = flow_sde_transition(x, v, t, 0.25, 0.5)
    for i in range(3):
        mu_i, std_i = flow_sde_transition(x[i], v[i], t[i].item(), 0.25, 0.5)
        assert torch.allclose(mu[i], mu_i) and torch.allclose(std[i].squeeze(), std_i)


def test_euler_step():
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(euler_step(x, v, 0.25), x + 0.25 * v)


def test_gaussian_log_prob_matches_torch_distributions():
    x, mu, std = torch.randn(50), torch.randn(50), torch.rand(50) + 0.05
    expected = torch.distributions.Normal(mu, std).log_prob(x)
    assert torch.allclose(gaussian_log_prob(x, mu, std), expected, atol=1e-6)
    assert torch.allclose(gaussian_entropy(std), torch.distributions.Normal(mu, std).entropy(),
                          atol=1e-6)


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_mean_negative_log_prob_of_transition_samples_is_entropy(method):
    g = torch.Generator().manual_seed(2)
    x, v = torch.randn(4, 1, generator=g), torch.randn(4, 1, generator=g)
    if method == "flow_sde":
        mu, std = flow_sde_transition(x, v, torch.tensor([0.0, 0.2, 0.5, 0.9]), 0.1, 0.7)
    else:
        mu = euler_step(x, v, 0.1)
        std = flow_noise_std(torch.tensor([[-3.0], [-0.5], [0.4], [5.0]]), 0.08, 0.16)
    samples = mu + std * torch.randn(4, 200_000, generator=g)
    neg_log_p = -gaussian_log_prob(samples, mu, std).mean(1)
    assert torch.allclose(neg_log_p, gaussian_entropy(std).squeeze(1), atol=0.01)


def test_flow_noise_std_stays_in_range_for_extreme_inputs():
    h = torch.tensor([-float("inf"), -1e9, -100.0, -1.0, 0.0, 1.0, 100.0, 1e9, float("inf")])
    std = flow_noise_std(h, 0.08, 0.16)
    assert torch.isfinite(std).all()
    assert (std >= 0.08 * (1 - 1e-6)).all() and (std <= 0.16 * (1 + 1e-6)).all()
    assert std[0].item() == pytest.approx(0.08, rel=1e-6)
    assert std[-1].item() == pytest.approx(0.16, rel=1e-6)
    assert std[4].item() == pytest.approx(math.sqrt(0.08 * 0.16), rel=1e-6)  # log-midpoint
