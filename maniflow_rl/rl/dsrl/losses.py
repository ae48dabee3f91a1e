"""The math of latent steering (DSRL), as small pure functions (docs/ALGORITHM.md section 9).

Latent actor: ``u ~ N(mu(s), sigma(s)^2)``, ``w = b tanh(u)`` (``b = noise_bound``), so

    log pi(w | s) = sum_i [ log N(u_i; mu_i, sigma_i^2) - log(b (1 - tanh(u_i)^2)) ]

with ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (stable for large |u|).

Critics over chunk transitions ``(s, w | a, R, s', d, gamma_n)``; ``R`` the (n-step discounted)
reward of the executed chunk(s), ``gamma_n = gamma ** (Ca * n)``, ``d`` = terminated (a time
limit is not terminal: it bootstraps)::

    y          = R + gamma_n (1 - d) [ min_e Qbar_e(s', w') - alpha_b log pi(w' | s') ],  w' ~ pi(s')
                 (alpha_b = alpha with backup_entropy, else 0)
    L_critic   = sum_e mean_B (Q_e(s, x) - y)^2        x = w (SAC) or the chunk a (NA: Q^A)
    L_distill  = sum_e mean_B (Q^W_e(s, w_j) - mean_e' Q^A_e'(s, f(s, w_j)))^2,  w_j ~ N(0, I)
    L_actor    = mean_B [ alpha log pi(w~ | s) - min_e Q_e(s, w~) ],  w~ ~ pi(s) (reparametrized)
                 prior_kl regularizer: log pi(w~ | s) - log N(w~; 0, I) in place of log pi (a
                 one-sample estimate of KL(pi(. | s) || N(0, I)): the actor stays at the
                 imitation policy's noise distribution unless Q pays for leaving it; with a
                 residual z = [w, r]: log pi(z | s) - log N(w; 0, I), i.e. KL on the noise
                 and the entropy term on the residual)
    L_alpha    = -mean_B [ log alpha * (log pi(w~ | s) + H_target) ]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def tanh_gaussian_log_prob(u: Tensor, mean: Tensor, log_std: Tensor,
                           bound: float | Tensor) -> Tensor:
    """``log pi(w)`` of ``w = bound * tanh(u)``, ``u ~ N(mean, exp(log_std)^2)``; ``bound`` a
    number or one per dim ``[D]``; sums the last dim, returns ``[B]``."""
    gaussian = -0.5 * ((u - mean) / log_std.exp()).square() - log_std - 0.5 * LOG_2PI
    log_bound = torch.log(torch.as_tensor(bound, dtype=u.dtype, device=u.device))
    log_det = log_bound + 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (gaussian - log_det).sum(-1)


def standard_normal_log_prob(w: Tensor) -> Tensor:
    """``log N(w; 0, I)`` summed over the last dim, ``[B]``."""
    return (-0.5 * w.square() - 0.5 * LOG_2PI).sum(-1)


def actor_penalty(log_prob: Tensor, noise: Tensor, regularizer: str) -> Tensor:
    """What alpha multiplies in ``L_actor``: ``log pi(w|s)`` (``"entropy"``) or
    ``log pi(w|s) - log N(w; 0, I)`` (``"prior_kl"``); ``[B]``."""
    if regularizer == "prior_kl":
        return log_prob - standard_normal_log_prob(noise)
    return log_prob


def td_target(rewards: Tensor, discounts: Tensor, terminated: Tensor, next_q: Tensor,
              next_log_prob: Tensor, alpha: float | Tensor) -> Tensor:
    """``y = R + gamma_n (1 - d) (next_q - alpha log pi(w'|s'))``; all ``[B]``."""
    soft_value = next_q - alpha * next_log_prob
    return rewards + discounts * (1.0 - terminated.to(rewards.dtype)) * soft_value


def ensemble_regression_loss(predictions: Tensor, target: Tensor) -> Tensor:
    """``sum_e mean_B (pred_e - target)^2`` for ``predictions [E, B]``, ``target [B]``."""
    return (predictions - target.detach().unsqueeze(0)).square().mean(1).sum()


def actor_loss(q_values: Tensor, log_prob: Tensor, alpha: float | Tensor) -> Tensor:
    """``mean(alpha log pi - min_e Q_e)`` for ``q_values [E, B]``."""
    return (alpha * log_prob - q_values.min(0).values).mean()


def alpha_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """Temperature loss of SAC: ``-mean(log_alpha (log pi + H_target))`` (log pi detached)."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


@torch.no_grad()
def polyak_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """``theta_target <- (1 - tau) theta_target + tau theta``."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1.0 - tau).add_(s, alpha=tau)
