"""Gaussian denoising transitions with tractable log-probabilities (ALGORITHM.md section 3).

Convention: ``x_t = (1 - t) x0 + t x1``, noise ``x0 ~ N(0, I)`` at t = 0, data at t = 1; the
velocity net predicts ``v = f(x_t, t, dt) ~ x1 - x0``. Euler grid ``t_k = k / K``, ``dt = 1 / K``.
Every stochastic step is ``x_{k+1} ~ N(mu_k, std_k^2 I)``.

flow_sde (ODE -> SDE with the same marginals). With the predicted noise ``x0_hat = x - t v`` the
score is ``grad log p_t(x) = -x0_hat / (1 - t)`` and the SDE
``dx = [v - g(t)^2 / (2 (1 - t)) * (x - t v)] dt + g(t) dW`` has the marginals of the ODE, with

    g(t)  = a * sqrt((1 - t) / t)              (t replaced by dt at t = 0, where g is infinite)
    mu_k  = x_k + dt * [v - g(t_k)^2 / (2 (1 - t_k)) * (x_k - t_k v)]
    std_k = g(t_k) * sqrt(dt)

flow_noise (ReinFlow / pi-RL): ``mu_k = x_k + dt v`` (Euler) and a learned std

    log std^2 = log smin^2 + (log smax^2 - log smin^2) * (tanh(h) + 1) / 2  in [smin, smax].

All functions are pure; ``t`` and ``dt`` may be floats or tensors of shape ``[B]`` (broadcast
over the trailing axes of ``x``) or already broadcastable to ``x``.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)


def _like(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor on ``x``'s device/dtype, ``[B] -> [B, 1, ..., 1]`` to match ``x``."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if value.ndim == 1 and x.ndim > 1:
        value = value.reshape(-1, *([1] * (x.ndim - 1)))
    return value


def euler_step(x: torch.Tensor, v: torch.Tensor, dt: torch.Tensor | float) -> torch.Tensor:
    """Deterministic step ``x + dt * v``."""
    return x + _like(dt, x) * v


def flow_sde_sigma(t: torch.Tensor | float, dt: torch.Tensor | float,
                   a: torch.Tensor | float) -> torch.Tensor:
    """Diffusion coefficient ``g(t) = a sqrt((1 - t) / t)``, using ``t = dt`` where ``t <= 0``."""
    t = torch.as_tensor(t, dtype=torch.get_default_dtype())
    dt = torch.as_tensor(dt, dtype=t.dtype, device=t.device)
    t_safe = torch.where(t <= 0, dt, t)
    return a * torch.sqrt((1.0 - t_safe) / t_safe)


def flow_sde_transition(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float,
                        dt: torch.Tensor | float, a: torch.Tensor | float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of ``x_{k+1}`` for the flow_sde step from ``(x_k, t_k)`` (module docstring).

    Returns ``mu`` shaped like ``x`` and ``std`` broadcastable to ``x``.
    """
    t, dt = _like(t, x), _like(dt, x)
    sigma = flow_sde_sigma(t, dt, a).to(x.dtype)
    predicted_noise = x - t * v
    mu = x + dt * (v - sigma.square() / (2.0 * (1.0 - t)) * predicted_noise)
    return mu, sigma * torch.sqrt(dt)


def flow_noise_std(h_raw: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Learned std in ``[sigma_min, sigma_max]``, log-variance interpolated by ``tanh(h)``."""
    log_var_min, log_var_max = 2.0 * math.log(sigma_min), 2.0 * math.log(sigma_max)
    log_var = log_var_min + (log_var_max - log_var_min) * (torch.tanh(h_raw) + 1.0) / 2.0
    return torch.exp(0.5 * log_var)


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-element ``log N(x; mu, std^2) = -(x-mu)^2 / (2 std^2) - log std - log(2 pi) / 2``."""
    return -0.5 * ((x - mu) / std).square() - torch.log(std) - 0.5 * LOG_2PI


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Per-element differential entropy ``1/2 + log(2 pi)/2 + log std``."""
    return 0.5 + 0.5 * LOG_2PI + torch.log(std)
