"""EMA decay schedule and update math; cosine-with-warm-up learning-rate factors."""

import math

import pytest
import torch
from torch import nn

from maniflow_rl.train import EMAModel, cosine_warmup_factor, cosine_with_warmup, ema_decay


def test_ema_decay_schedule():
    assert ema_decay(0) == 0.0 and ema_decay(1) == 0.0            # starts as a copy
    assert ema_decay(2) == pytest.approx(1 - 2 ** -0.75)
    assert ema_decay(11, power=2 / 3) == pytest.approx(1 - 11 ** (-2 / 3))
    assert ema_decay(10**9) == 0.9999                              # capped at max_value
    assert ema_decay(5, power=None, max_value=0.9) == 0.9          # constant decay
    assert ema_decay(3, update_after_step=5) == 0.0


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.frozen = nn.Parameter(torch.zeros(2), requires_grad=False)
        self.register_buffer("stat", torch.zeros(2))


def test_ema_update_math():
    net = _Net()
    ema = EMAModel(net, power=None, max_value=0.9)
    w0 = net.lin.weight.detach().clone()
    assert not any(p.requires_grad for p in ema.averaged_model.parameters())
    with torch.no_grad():
        net.lin.weight.add_(1.0)
        net.frozen.fill_(3.0)
        net.stat.fill_(5.0)
    ema.step(net)
    torch.testing.assert_close(ema.averaged_model.lin.weight, 0.9 * w0 + 0.1 * (w0 + 1.0))
    assert torch.equal(ema.averaged_model.frozen, net.frozen)      # frozen params copied
    assert torch.equal(ema.averaged_model.stat, net.stat)          # buffers copied
    assert ema.optimization_step == 1 and ema.decay == 0.9

    scheduled = EMAModel(net)                                      # power schedule: first
    scheduled.step(net)                                            # update copies the weights
    assert torch.equal(scheduled.averaged_model.lin.weight, net.lin.weight)
    state = ema.state_dict()
    restored = EMAModel(_Net(), power=None, max_value=0.9)
    restored.load_state_dict(state)
    assert restored.optimization_step == 1
    assert torch.equal(restored.averaged_model.lin.weight, ema.averaged_model.lin.weight)


def test_cosine_warmup_factor_values():
    f = lambda s: cosine_warmup_factor(s, warmup_steps=10, total_steps=110)  # noqa: E731
    assert f(0) == 0.0 and f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.5)                       # half-way through the cosine
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    assert cosine_warmup_factor(110, 10, 110, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_cosine_scheduler_steps_and_state():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = cosine_with_warmup(opt, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(5e-4) and lrs[4] == pytest.approx(1e-3)
    assert lrs[12] == pytest.approx(5e-4)
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched2 = cosine_with_warmup(opt2, 4, 20)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ValueError):
        cosine_with_warmup(opt, warmup_steps=-1, total_steps=10)
