"""The demo term's anchor (issue 8, defect 5): it regresses the velocity exactly at the
K-step sampler's (t, dt), and its teacher is always the imitation checkpoint, also when a run
continues from a fine-tuned checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from maniflow_rl.policy.maniflow.consistency_flow import (consistency_flow_loss,
                                                          sampler_grid_consistency_loss)
from maniflow_rl.rl.ppo.demo_regularizer import DemoRegularizer
from maniflow_rl.utils.checkpoint import checkpoint_identity, load_checkpoint_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_demo_regularizer import demos  # noqa: E402,F401  (module-scoped fixture)
from test_trainer import _dummy_trainer  # noqa: E402


def test_demo_term_queries_the_velocity_only_at_the_samplers_grid(demos):  # noqa: F811
    dataset, policy = demos
    k_steps = policy.num_inference_steps
    regularizer = DemoRegularizer(dataset, policy, batch_size=16)
    calls = {"student": [], "teacher": []}

    def recorder(name):
        def hook(module, args):
            calls[name].append((args[1].detach().clone(), torch.as_tensor(args[2]).clone()))
        return hook

    policy.model.register_forward_pre_hook(recorder("student"))
    regularizer.teacher.model.register_forward_pre_hook(recorder("teacher"))
    for _ in range(3):
        regularizer.loss(policy)
    (t, dt), = calls["student"][:1]
    assert torch.allclose(dt, torch.full_like(dt, 1.0 / k_steps))          # no dt = 0 samples
    grid = t * k_steps
    assert torch.allclose(grid, grid.round(), atol=1e-5) and grid.min() >= 0
    assert grid.max() <= k_steps - 1 and len(grid.round().unique()) > 1
    t_teacher, dt_teacher = calls["teacher"][0]
    assert torch.allclose(t_teacher, (t + 1.0 / k_steps).clamp(max=1.0))   # one sampler step on
    assert torch.allclose(dt_teacher, torch.full_like(dt_teacher, 1.0 / k_steps))


@pytest.mark.parametrize("grid", [True, False])
def test_the_exact_velocity_of_a_point_mass_has_zero_loss(grid):
    """Data x1 = c (one point): the exact flow velocity is (c - x) / (1 - t). As student and
    teacher it must give loss 0 (the target is x1 - x0 on every sample); v = 0 must not."""
    torch.manual_seed(0)
    c = torch.randn(1, 4, 3)
    x1 = c.expand(64, -1, -1).clone()
    context = torch.zeros(64, 1, 8)

    def exact(x, t, dt, ctx):
        return (c - x) / (1.0 - t.view(-1, 1, 1)).clamp_min(1e-6)

    def zero(x, t, dt, ctx):
        return torch.zeros_like(x)

    class Cfg:
        flow_ratio, flow_t_scale, flow_beta_a, flow_beta_b = 0.75, 0.999, 1.0, 1.5
        consistency_num_t, consistency_eps = 10, 1e-3

    def loss(student):
        if grid:
            return sampler_grid_consistency_loss(student, exact, x1, context, 4, 1e-3,
                                                 torch.Generator().manual_seed(1))[0]
        return consistency_flow_loss(student, exact, x1, context, Cfg,
                                     torch.Generator().manual_seed(1))[0]

    assert float(loss(exact)) < 1e-8
    assert float(loss(zero)) > 0.5


def _pretrain_checkpoint(trainer, path):
    """A pretraining-kind checkpoint holding the trainer policy's current weights."""
    from maniflow_rl.utils.checkpoint import save_checkpoint_atomic

    state = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    return save_checkpoint_atomic({"kind": "pretrain", "shape_meta": trainer.policy.shape_meta,
                                   "policy_config": trainer.policy.get_config(),
                                   "policy_state_dict": state, "ema_state_dict": state}, path)


def test_a_continued_run_anchors_to_the_imitation_checkpoint_not_the_ppo_one(tmp_path):
    from maniflow_rl.pipeline.finetune import imitation_checkpoint_of, imitation_teacher

    trainer = _dummy_trainer(tmp_path)
    imitation_path = _pretrain_checkpoint(trainer, tmp_path / "imitation.pt")
    identity = imitation_checkpoint_of(imitation_path, load_checkpoint_file(imitation_path))
    assert identity == checkpoint_identity(imitation_path)
    imitation_weights = next(trainer.policy.model.parameters()).detach().clone()

    trainer.imitation_checkpoint = identity
    with torch.no_grad():                       # stands for PPO having moved the policy
        for p in trainer.policy.model.parameters():
            p.add_(0.5)
    ppo_path = trainer.save_checkpoint()
    ppo_payload = load_checkpoint_file(ppo_path)
    assert imitation_checkpoint_of(ppo_path, ppo_payload, required=True) == identity
    teacher = imitation_teacher(identity)
    assert torch.equal(next(teacher.model.parameters()), imitation_weights)
    assert not torch.equal(next(teacher.model.parameters()),
                           ppo_payload["policy_state_dict"][next(
                               k for k in ppo_payload["policy_state_dict"] if k.startswith("model."))])

    # a resumed trainer keeps recording the same identity
    resumed = _dummy_trainer(tmp_path)
    resumed.load_checkpoint(ppo_path)
    assert resumed.checkpoint_payload()["imitation_checkpoint"] == identity

    # the imitation checkpoint changed or vanished: refuse rather than anchor to another policy
    _pretrain_checkpoint(resumed, imitation_path)
    with pytest.raises(ValueError, match="changed"):
        imitation_teacher(identity)
    imitation_path.unlink()
    with pytest.raises(ValueError, match="gone"):
        imitation_teacher(identity)
    del ppo_payload["imitation_checkpoint"]
    with pytest.raises(ValueError, match="does not record"):
        imitation_checkpoint_of(ppo_path, ppo_payload, required=True)
