"""Consistency flow training loss (ALGORITHM.md section 2)."""

from types import SimpleNamespace

import pytest
import torch

from maniflow_policy_testlib import POINT_CLOUD_SHAPE_META, make_obs, make_policy
from maniflow_rl.policy.maniflow.consistency_flow import (consistency_flow_loss,
                                                          consistency_target, sample_beta)


def loss_cfg(**overrides):
    base = dict(flow_ratio=0.75, flow_t_scale=0.999, flow_beta_a=1.0, flow_beta_b=1.5,
                consistency_num_t=10, consistency_eps=1e-3)
    return SimpleNamespace(**{**base, **overrides})


class Recorder:
    """Mock velocity net: records its inputs and returns ``fn(x, t, dt)``."""

    def __init__(self, fn=lambda x, t, dt: torch.zeros_like(x)):
        self.fn, self.calls = fn, []

    def __call__(self, x, t, dt, context):
        self.calls.append(dict(x=x.clone(), t=t.clone(), dt=dt.clone(), context=context))
        return self.fn(x, t, dt)


def bcast(t, x):
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def test_sample_beta_moments():
    g = torch.Generator().manual_seed(0)
    for a, b in [(1.0, 1.5), (2.0, 3.0), (0.5, 0.7)]:
        x = sample_beta(a, b, 100_000, g)
        mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
        assert (x >= 0).all() and (x <= 1).all()
        assert x.mean().item() == pytest.approx(mean, abs=5e-3)
        assert x.var().item() == pytest.approx(var, abs=5e-3)


def test_flow_matching_branch_target_is_x1_minus_x0():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(64, 5, 3, generator=g)
    student = Recorder()
    loss, info = consistency_flow_loss(student, Recorder(), x1, torch.zeros(64, 2, 4),
                                       loss_cfg(flow_ratio=1.0), g)
    (call,) = student.calls
    t, x_t = call["t"], call["x"]
    assert (call["dt"] == 0).all()
    assert (t >= 0).all() and (t <= 0.999).all()
    x0 = (x_t - bcast(t, x1) * x1) / (1 - bcast(t, x1))        # invert x_t = (1-t) x0 + t x1
    # zero prediction -> loss = mean |x1 - x0|^2 (hand computation)
    assert loss.item() == pytest.approx((x1 - x0).square().mean().item(), rel=1e-4)
    assert info["consistency_loss"] == 0.0


def test_flow_matching_t_distribution():
    g = torch.Generator().manual_seed(3)
    student = Recorder()
    consistency_flow_loss(student, Recorder(), torch.zeros(20_000, 1, 1), torch.zeros(20_000, 1, 1),
                          loss_cfg(flow_ratio=1.0), g)
    t = student.calls[0]["t"]
    assert t.mean().item() == pytest.approx(0.999 * 1 / 2.5, abs=0.01)   # 0.999 * E[Beta(1,1.5)]


def test_consistency_target_by_hand():
    x_t, x_next, v = torch.tensor([[1.0]]), torch.tensor([[2.0]]), torch.tensor([[4.0]])
    target = consistency_target(x_t, x_next, torch.tensor([0.5]), torch.tensor([0.75]), v, 1e-3)
    assert target.item() == pytest.approx(4.0)   # (2 + 0.25 * 4 - 1) / 0.5
    # t = 1 must not divide by zero: (1 - t) is clamped to eps
    target = consistency_target(x_t, x_next, torch.tensor([1.0]), torch.tensor([1.0]), v, 1e-3)
    assert target.item() == pytest.approx(1.0 / 1e-3)


def test_consistency_branch_inputs_and_target():
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(40, 4, 2, generator=g)
    context = torch.randn(40, 3, 8, generator=g)
    teacher = Recorder(lambda x, t, dt: 0.5 * x + bcast(t, x) - bcast(dt, x))
    student = Recorder()
    loss, info = consistency_flow_loss(student, teacher, x1, context, loss_cfg(flow_ratio=0.0), g)
    s, te = student.calls[0], teacher.calls[0]
    t, dt, t_next = s["t"], s["dt"], te["t"]
    assert torch.allclose(t * 10, (t * 10).round()) and (t <= 0.9 + 1e-6).all()
    assert (dt >= 0).all() and (dt < 1).all() and torch.equal(te["dt"], dt)
    assert torch.allclose(t_next, (t + dt).clamp(max=1.0))
    assert torch.equal(te["context"], context)
    # both points lie on the same straight path x0 -> x1
    x0 = (s["x"] - bcast(t, x1) * x1) / (1 - bcast(t, x1))
    assert torch.allclose(te["x"], (1 - bcast(t_next, x1)) * x0 + bcast(t_next, x1) * x1,
                          atol=1e-5)
    v_bar = 0.5 * te["x"] + bcast(t_next, x1) - bcast(dt, x1)
    target = (te["x"] + (1 - bcast(t_next, x1)) * v_bar - s["x"]) / (1 - bcast(t, x1))
    assert loss.item() == pytest.approx(target.square().mean().item(), rel=1e-5)
    assert info["flow_loss"] == 0.0


def test_consistency_target_of_exact_straight_teacher_is_x1_minus_x0():
    """A teacher that knows the straight path (v = x1 - x0) gives the target x1 - x0."""
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(16, 4, 2, generator=g)

    def straight_teacher(x, t, dt):  # x0 from x_t' = (1-t') x0 + t' x1 (all samples are
        t = bcast(t, x)                  # consistency samples); at t' = 1, v is unused
        x0 = (x - t * x1) / (1 - t).clamp_min(1e-6)
        return torch.where(t < 1, x1 - x0, 0.0)

    student = Recorder(lambda x, t, dt: torch.zeros_like(x))
    loss, _ = consistency_flow_loss(student, Recorder(straight_teacher), x1, torch.zeros(16, 1, 1),
                                    loss_cfg(flow_ratio=0.0), g)
    s = student.calls[0]
    x0 = (s["x"] - bcast(s["t"], x1) * x1) / (1 - bcast(s["t"], x1))
    assert loss.item() == pytest.approx((x1 - x0).square().mean().item(), rel=1e-4)


def test_mixed_batch_split_and_single_student_call():
    student, teacher = Recorder(), Recorder()
    consistency_flow_loss(student, teacher, torch.randn(8, 2, 2), torch.zeros(8, 1, 1),
                          loss_cfg(), torch.Generator().manual_seed(0))
    assert len(student.calls) == 1 and student.calls[0]["x"].shape[0] == 8
    assert (student.calls[0]["dt"][:6] == 0).all()          # 75 % flow-matching samples first
    assert teacher.calls[0]["x"].shape[0] == 2


def test_optimizer_steps_lower_policy_loss():
    policy = make_policy(POINT_CLOUD_SHAPE_META, randomize=False)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 8, seed=1)
    g = torch.Generator().manual_seed(0)
    actions = torch.rand(8, 1, 4, generator=g).expand(8, 8, 4) * 2 - 1
    batch = {"obs": obs, "action": actions}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = policy.compute_loss(batch, generator=torch.Generator().manual_seed(7))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
