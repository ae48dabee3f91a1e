"""ManiFlowPointcloudRLPolicy: the RL policy interface of docs/ARCHITECTURE.md."""

import math

import numpy as np
import pytest
import torch

from maniflow_policy_testlib import (POINT_CLOUD_SHAPE_META, SEED_SHAPE_META,
                                     SMALL_SEED_SHAPE_META, make_obs, make_policy, tiny_config)
from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
from maniflow_rl.policy.maniflow.stochastic_sampling import flow_sde_sigma

METHODS = ["flow_sde", "flow_noise"]
SHAPE_METAS = {"seed_small": SMALL_SEED_SHAPE_META, "point_cloud": POINT_CLOUD_SHAPE_META}


def rollout_then_forward(policy, obs, seed=0):
    out = policy.sample_actions(obs, generator=torch.Generator().manual_seed(seed))
    new = policy.default_forward({"observation": obs, "chains": out["chains"],
                                  "denoise_inds": out["denoise_inds"]})
    return out, new


def fit_normalizer(policy, shape_meta, seed=3):
    g = torch.Generator().manual_seed(seed)
    data = {k: torch.randn(20, *spec["shape"], generator=g) * 3 + 1
            for k, spec in shape_meta["obs"].items() if spec.get("type") != "rgb"}
    data["action"] = torch.randn(50, shape_meta["action"]["shape"][0], generator=g) * 2
    policy.normalizer.fit(data)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("meta_name", list(SHAPE_METAS))
def test_sample_actions_and_default_forward_shapes(method, meta_name):
    shape_meta = SHAPE_METAS[meta_name]
    policy = make_policy(shape_meta, noise_method=method)
    batch, k, h, da = 3, 4, 8, shape_meta["action"]["shape"][0]
    out, new = rollout_then_forward(policy, make_obs(shape_meta, batch))
    expected = {"actions": (batch, 4, da), "chains": (batch, k + 1, h, da),
                "denoise_inds": (batch, k), "logprobs": (batch, 4, da), "values": (batch,)}
    assert {key: tuple(v.shape) for key, v in out.items()} == expected
    assert out["denoise_inds"].dtype == torch.long
    assert all(out[key].dtype == torch.float32 for key in expected if key != "denoise_inds")
    assert {key: tuple(v.shape) for key, v in new.items()} == {
        "logprobs": (batch, 4, da), "values": (batch,), "entropy": (batch, 1)}
    inds = out["denoise_inds"]
    if method == "flow_sde":
        assert (inds == inds[:, :1]).all() and ((inds >= 0) & (inds < k)).all()
    else:
        assert torch.equal(inds, torch.arange(k).expand(batch, k))


@pytest.mark.parametrize("method", METHODS)
def test_exact_seed_shapes(method):
    policy = make_policy(SEED_SHAPE_META, noise_method=method)
    obs = make_obs(SEED_SHAPE_META, 2)
    out, new = rollout_then_forward(policy, obs)
    assert out["actions"].shape == (2, 4, 10) and new["logprobs"].shape == (2, 4, 10)
    assert (new["logprobs"] - out["logprobs"]).abs().max() < 1e-5


def test_public_constructor_signature_of_the_seed():
    policy = ManiFlowPointcloudRLPolicy(
        SEED_SHAPE_META, horizon=16, n_action_steps=8, n_obs_steps=2, noise_method="flow_sde",
        num_inference_steps=10, noise_level=0.5, noise_anneal=True, add_value_head=True)
    assert (policy.horizon, policy.n_action_steps, policy.n_obs_steps, policy.action_dim,
            policy.num_inference_steps, policy.noise_method) == (16, 8, 2, 10, 10, "flow_sde")
    rebuilt = ManiFlowPointcloudRLPolicy.from_config(SEED_SHAPE_META, policy.get_config())
    assert rebuilt.config == policy.config


@pytest.mark.parametrize("method", METHODS)
def test_default_forward_reproduces_rollout_logprobs_after_save_load(method, tmp_path):
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method=method)
    fit_normalizer(policy, POINT_CLOUD_SHAPE_META)
    obs = {k: v * 4 - 1 for k, v in make_obs(POINT_CLOUD_SHAPE_META, 6).items()}
    out, new = rollout_then_forward(policy, obs)
    ratio = torch.exp(new["logprobs"] - out["logprobs"])
    assert (ratio - 1).abs().max() < 1e-5
    assert out["logprobs"].abs().mean() > 0.1                       # not trivially zero

    torch.save(policy.state_dict(), tmp_path / "policy.pt")
    fresh = ManiFlowPointcloudRLPolicy(POINT_CLOUD_SHAPE_META, tiny_config(noise_method=method))
    fresh.load_state_dict(torch.load(tmp_path / "policy.pt"))
    assert fresh.normalizer.is_fitted
    again = fresh.default_forward({"observation": obs, "chains": out["chains"],
                                   "denoise_inds": out["denoise_inds"]})
    assert (torch.exp(again["logprobs"] - out["logprobs"]) - 1).abs().max() < 1e-5
    assert torch.allclose(again["values"], out["values"], atol=1e-6)


def test_numpy_observations_are_accepted():
    policy = make_policy(POINT_CLOUD_SHAPE_META)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 2)
    out_np = policy.sample_actions({k: v.numpy() for k, v in obs.items()},
                                   generator=torch.Generator().manual_seed(0))
    out_t = policy.sample_actions(obs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_np["actions"], out_t["actions"])


def test_flow_sde_one_noisy_step_per_sample_drawn_independently():
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method="flow_sde")
    batch, k_steps, dt = 32, 4, 0.25
    obs = make_obs(POINT_CLOUD_SHAPE_META, batch)
    out = policy.sample_actions(obs, generator=torch.Generator().manual_seed(0))
    chains, noisy_step = out["chains"], out["denoise_inds"][:, 0]
    assert len(noisy_step.unique()) > 1
    context, _ = policy.encode_obs(obs)
    for k in range(k_steps):
        v, _ = policy.model(chains[:, k], torch.full((batch,), k * dt), dt, context)
        is_euler = torch.isclose(chains[:, k + 1], chains[:, k] + dt * v, atol=1e-5)
        assert torch.equal(is_euler.flatten(1).all(1), noisy_step != k)


def test_entropy_is_the_true_gaussian_entropy_flow_sde():
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method="flow_sde", noise_level=0.6)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 4)
    out, new = rollout_then_forward(policy, obs)
    t = out["denoise_inds"][:, 0].float() / 4
    std = flow_sde_sigma(t, 0.25, 0.6) * math.sqrt(0.25)
    expected = 0.5 + 0.5 * math.log(2 * math.pi) + torch.log(std)
    assert torch.allclose(new["entropy"].squeeze(1), expected, atol=1e-5)


def test_entropy_flow_noise_is_within_range_and_differentiable():
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method="flow_noise")
    _, new = rollout_then_forward(policy, make_obs(POINT_CLOUD_SHAPE_META, 3))
    low, high = (0.5 + 0.5 * math.log(2 * math.pi) + math.log(s) for s in (0.08, 0.16))
    assert ((new["entropy"] >= low - 1e-5) & (new["entropy"] <= high + 1e-5)).all()
    new["entropy"].sum().backward()
    assert policy.noise_head.weight.grad.abs().sum() > 0


def test_predict_action_is_deterministic_and_matches_eval_sampling():
    policy = make_policy(SMALL_SEED_SHAPE_META)
    obs = make_obs(SMALL_SEED_SHAPE_META, 3)
    first = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))
    second = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first["action"], second["action"])
    assert first["action"].shape == (3, 4, 10) and first["action_pred"].shape == (3, 8, 10)
    assert torch.equal(first["action"], first["action_pred"][:, 1:5])
    evaluated = policy.sample_actions(obs, mode="eval", generator=torch.Generator().manual_seed(5))
    assert evaluated["denoise_inds"].eq(-1).all()
    assert torch.equal(evaluated["logprobs"], torch.zeros_like(evaluated["logprobs"]))
    assert torch.equal(evaluated["actions"], first["action"])


@pytest.mark.parametrize("critic_mode", ["detached", "separate"])
def test_value_independent_of_chain_and_detached_from_actor_encoder(critic_mode):
    policy = make_policy(POINT_CLOUD_SHAPE_META, critic_mode=critic_mode)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 4)
    out_a = policy.sample_actions(obs, generator=torch.Generator().manual_seed(1))
    out_b = policy.sample_actions(obs, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out_a["chains"], out_b["chains"])
    assert torch.equal(out_a["values"], out_b["values"])
    fwd = [policy.default_forward({"observation": obs, "chains": o["chains"],
                                   "denoise_inds": o["denoise_inds"]}) for o in (out_a, out_b)]
    assert torch.equal(fwd[0]["values"], fwd[1]["values"])
    assert torch.allclose(policy.get_value(obs), out_a["values"])

    fwd[0]["values"].square().sum().backward()
    actor_grads = [p.grad for p in policy.obs_encoder.parameters()]
    assert all(g is None or g.abs().sum() == 0 for g in actor_grads)
    assert sum(p.grad.abs().sum() for p in policy.value_head.parameters()) > 0
    if critic_mode == "separate":
        assert sum(p.grad.abs().sum() for p in policy.critic_encoder.parameters()) > 0


def test_no_value_head_gives_zero_values():
    policy = make_policy(POINT_CLOUD_SHAPE_META, add_value_head=False)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 2)
    assert policy.value_head is None
    assert torch.equal(policy.get_value(obs), torch.zeros(2))


def test_policy_gradient_reaches_actor():
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method="flow_sde")
    _, new = rollout_then_forward(policy, make_obs(POINT_CLOUD_SHAPE_META, 3))
    new["logprobs"].sum().backward()
    assert sum(p.grad.abs().sum() for p in policy.model.parameters() if p.grad is not None) > 0
    assert sum(p.grad.abs().sum() for p in policy.obs_encoder.parameters()
               if p.grad is not None) > 0


def test_compute_loss_with_ema_teacher():
    policy = make_policy(POINT_CLOUD_SHAPE_META)
    teacher = make_policy(POINT_CLOUD_SHAPE_META, seed=1)
    batch = {"obs": make_obs(POINT_CLOUD_SHAPE_META, 8), "action": torch.rand(8, 8, 4)}
    loss, info = policy.compute_loss(batch, teacher=teacher)
    loss.backward()
    assert math.isfinite(loss.item()) and {"flow_loss", "consistency_loss"} <= set(info)
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match=r"batch\['action'\]"):
        policy.compute_loss({"obs": batch["obs"], "action": torch.rand(8, 7, 4)})


def test_noise_anneal_is_linear():
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_anneal=True, noise_params=(0.7, 0.3, 400))
    levels = []
    for updates in (0, 100, 200, 400, 1000):
        policy.set_noise_progress(updates)
        levels.append(policy.current_noise_level())
    assert levels == pytest.approx([0.7, 0.6, 0.5, 0.3, 0.3])
    fixed = make_policy(POINT_CLOUD_SHAPE_META, noise_level=0.45)
    fixed.set_noise_progress(300)
    assert fixed.current_noise_level() == pytest.approx(0.45)


# ----------------------------------------------------------------------------- bad inputs
def test_shape_meta_without_action_is_rejected():
    with pytest.raises(ValueError, match="'action'"):
        ManiFlowPointcloudRLPolicy({"obs": POINT_CLOUD_SHAPE_META["obs"]}, tiny_config())


def test_unknown_noise_method_and_bad_chunk_are_rejected_at_construction():
    with pytest.raises(ValueError, match="noise_method"):
        ManiFlowPointcloudRLPolicy(POINT_CLOUD_SHAPE_META, tiny_config(), noise_method="ddim")
    with pytest.raises(ValueError, match="n_action_steps"):
        ManiFlowPointcloudRLPolicy(POINT_CLOUD_SHAPE_META, tiny_config(), n_action_steps=9)
    with pytest.raises(ValueError, match="bogus"):
        ManiFlowPointcloudRLPolicy(POINT_CLOUD_SHAPE_META, tiny_config(), bogus=1)


def test_bad_observations_are_rejected_with_the_key_and_shapes():
    policy = make_policy(POINT_CLOUD_SHAPE_META)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 2)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['agent_pos'\]"):
        policy.sample_actions({"point_cloud": obs["point_cloud"]})
    with pytest.raises(ValueError, match=r"obs\['agent_pos'\] has shape \[2, 2, 8\], "
                                         r"expected \[B, 2, 9\]"):
        policy.sample_actions({**obs, "agent_pos": torch.zeros(2, 2, 8)})
    with pytest.raises(ValueError, match=r"obs\['point_cloud'\].*expected \[B, 2, 48, 3\]"):
        policy.get_value({**obs, "point_cloud": np.zeros((2, 48, 3))})
    with pytest.raises(ValueError, match="batch size"):
        policy.validate_obs({**obs, "agent_pos": torch.zeros(3, 2, 9)})
    with pytest.raises(ValueError, match="mode"):
        policy.sample_actions(obs, mode="greedy")


def test_default_forward_rejects_eval_chains():
    policy = make_policy(POINT_CLOUD_SHAPE_META)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 2)
    out = policy.sample_actions(obs, mode="eval")
    with pytest.raises(ValueError, match="-1"):
        policy.default_forward({"observation": obs, "chains": out["chains"],
                                "denoise_inds": out["denoise_inds"]})
