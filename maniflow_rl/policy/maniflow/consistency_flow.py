"""Consistency flow training loss of ManiFlow (ALGORITHM.md section 2).

Per batch of normalized action chunks ``x1 [B, H, Da]`` with noise ``x0 ~ N(0, I)`` and
``x_t = (1 - t) x0 + t x1`` (t = 1 is data), the first ``round(flow_ratio * B)`` samples are
flow-matching samples, the rest consistency samples:

flow matching (75 %)::

    t ~ flow_t_scale * Beta(a, b)   (0.999 * Beta(1, 1.5)),   dt = 0
    target = x1 - x0

consistency (25 %)::

    t ~ U{0, 1/n, ..., (n-1)/n} (n = 10),  dt ~ U(0, 1),  t' = min(t + dt, 1)
    v_bar  = f_teacher(x_t', t', dt)                       (EMA teacher, no gradient)
    x1_hat = x_t' + (1 - t') v_bar                          (teacher's endpoint estimate)
    target = (x1_hat - x_t) / max(1 - t, eps)

loss = mean over all samples and elements of ``|f(x_t, t, dt) - target|^2``. The student runs
once on the whole batch; the teacher once on the consistency part.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sample_gamma(shape: float, n: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", max_rounds: int = 100) -> torch.Tensor:
    """``n`` samples of Gamma(shape, 1) drawn only from ``generator`` (reproducible).

    Marsaglia-Tsang: ``d = alpha - 1/3``, ``c = 1 / sqrt(9 d)``, ``v = (1 + c z)^3`` with
    ``z ~ N(0, 1)``; accept ``d v`` if ``log u < z^2 / 2 + d - d v + d log v`` (> 95 % accepted).
    For ``shape < 1``: ``Gamma(shape) = Gamma(shape + 1) * U^(1 / shape)``.
    """
    alpha = shape + 1.0 if shape < 1.0 else shape
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, device=device)
    todo = torch.arange(n, device=device)
    for _ in range(max_rounds):
        if todo.numel() == 0:
            break
        z = torch.randn(todo.numel(), generator=generator, device=device)
        u = torch.rand(todo.numel(), generator=generator, device=device)
        v = (1.0 + c * z) ** 3
        log_v = torch.log(v.clamp_min(1e-30))
        accept = (v > 0) & (torch.log(u) < 0.5 * z.square() + d - d * v + d * log_v)
        out[todo[accept]] = d * v[accept]
        todo = todo[~accept]
    else:
        if todo.numel():
            raise RuntimeError(f"Gamma({shape}) rejection sampler did not converge")
    if shape < 1.0:
        out = out * torch.rand(n, generator=generator, device=device).pow(1.0 / shape)
    return out


def sample_beta(a: float, b: float, n: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` samples of Beta(a, b) = ``G_a / (G_a + G_b)`` with Gamma draws from ``generator``."""
    g_a = sample_gamma(a, n, generator, device)
    g_b = sample_gamma(b, n, generator, device)
    return g_a / (g_a + g_b)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 - t) x0 + t x1`` with ``t [B]`` broadcast over the chunk axes."""
    t = t.reshape(-1, *([1] * (x1.ndim - 1)))
    return (1.0 - t) * x0 + t * x1


def consistency_target(x_t: torch.Tensor, x_t_next: torch.Tensor, t: torch.Tensor,
                       t_next: torch.Tensor, v_teacher: torch.Tensor, eps: float
                       ) -> torch.Tensor:
    """``(x_t' + (1 - t') v_bar - x_t) / max(1 - t, eps)`` with ``t, t' [B]``."""
    shape = (-1, *([1] * (x_t.ndim - 1)))
    endpoint = x_t_next + (1.0 - t_next.reshape(shape)) * v_teacher
    return (endpoint - x_t) / (1.0 - t.reshape(shape)).clamp_min(eps)


def num_flow_samples(batch: int, flow_ratio: float) -> int:
    """The first ``round(flow_ratio * batch)`` samples of a batch are flow-matching samples; the
    teacher only sees the rest (so its observation tokens are needed for those rows only)."""
    return int(round(flow_ratio * batch))


def consistency_flow_loss(model_fn: VelocityFn, teacher_fn: VelocityFn, x1: torch.Tensor,
                          context: torch.Tensor, cfg, generator: torch.Generator | None = None,
                          teacher_context: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, dict[str, float]]:
    """Consistency flow training loss (module docstring).

    ``model_fn(x, t, dt, context) -> v`` is the student, ``teacher_fn`` the (EMA) teacher,
    called under ``torch.no_grad``; ``context [B, L, D]`` holds the observation tokens
    (``teacher_context`` those of the teacher's encoder, default ``context.detach()``).
    ``cfg`` provides ``flow_ratio, flow_t_scale, flow_beta_a, flow_beta_b, consistency_num_t,
    consistency_eps``. Returns ``(loss, info)`` with the two partial losses in ``info``.
    ``teacher_context`` may hold every row or only the consistency rows (the last ones).
    """
    batch, device = x1.shape[0], x1.device
    n_flow = num_flow_samples(batch, cfg.flow_ratio)
    n_cons = batch - n_flow
    x0 = torch.randn(x1.shape, generator=generator, device=device, dtype=x1.dtype)
    t_flow = cfg.flow_t_scale * sample_beta(cfg.flow_beta_a, cfg.flow_beta_b, n_flow,
                                            generator, device)
    t_cons = torch.randint(0, cfg.consistency_num_t, (n_cons,), generator=generator,
                           device=device) / cfg.consistency_num_t
    dt_cons = torch.rand(n_cons, generator=generator, device=device)
    t = torch.cat([t_flow, t_cons]).to(x1.dtype)
    dt = torch.cat([torch.zeros(n_flow, device=device), dt_cons]).to(x1.dtype)
    return velocity_regression_loss(model_fn, teacher_fn, x0, x1, t, dt, n_flow, context,
                                    cfg.consistency_eps, teacher_context)


def sampler_grid_consistency_loss(model_fn: VelocityFn, teacher_fn: VelocityFn,
                                  x1: torch.Tensor, context: torch.Tensor, num_steps: int,
                                  eps: float, generator: torch.Generator | None = None,
                                  teacher_context: torch.Tensor | None = None
                                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """The consistency loss at the K-step sampler's own inputs: every sample has
    ``t = k / K`` with ``k ~ U{0, ..., K-1}`` and ``dt = 1 / K``, the exact ``(t, dt)`` at which
    the Euler sampler queries ``f``; the target is the teacher's endpoint estimate from
    ``t' = t + 1/K`` (``x1 - x0`` on the last step, where ``t' = 1``)."""
    batch, device = x1.shape[0], x1.device
    x0 = torch.randn(x1.shape, generator=generator, device=device, dtype=x1.dtype)
    t = (torch.randint(0, num_steps, (batch,), generator=generator, device=device)
         / num_steps).to(x1.dtype)
    dt = torch.full((batch,), 1.0 / num_steps, device=device, dtype=x1.dtype)
    return velocity_regression_loss(model_fn, teacher_fn, x0, x1, t, dt, 0, context, eps,
                                    teacher_context)


def velocity_regression_loss(model_fn: VelocityFn, teacher_fn: VelocityFn, x0: torch.Tensor,
                             x1: torch.Tensor, t: torch.Tensor, dt: torch.Tensor, n_flow: int,
                             context: torch.Tensor, eps: float,
                             teacher_context: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, dict[str, float]]:
    """``mean |f(x_t, t, dt) - target|^2`` where the first ``n_flow`` samples regress the flow
    target ``x1 - x0`` and the rest the teacher's consistency target (module docstring)."""
    n_cons = x1.shape[0] - n_flow
    x_t = interpolate(x0, x1, t)
    targets = [x1[:n_flow] - x0[:n_flow]]
    if n_cons:
        t_next = (t[n_flow:] + dt[n_flow:]).clamp(max=1.0)
        x_t_next = interpolate(x0[n_flow:], x1[n_flow:], t_next)
        teacher_ctx = (context if teacher_context is None else teacher_context).detach()
        if teacher_ctx.shape[0] != n_cons:       # tokens of every row: keep the teacher's
            teacher_ctx = teacher_ctx[n_flow:]
        with torch.no_grad():
            v_teacher = teacher_fn(x_t_next, t_next, dt[n_flow:], teacher_ctx)
        targets.append(consistency_target(x_t[n_flow:], x_t_next, t[n_flow:], t_next,
                                          v_teacher, eps))
    target = torch.cat(targets).detach()

    squared_error = (model_fn(x_t, t, dt, context) - target).square()
    per_sample = squared_error.flatten(1).mean(1)
    loss = per_sample.mean()
    info = {"loss": loss.item(),
            "flow_loss": per_sample[:n_flow].mean().item() if n_flow else 0.0,
            "consistency_loss": per_sample[n_flow:].mean().item() if n_cons else 0.0}
    return loss, info
