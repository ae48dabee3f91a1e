"""The chain log-probability (issue 8, defect 3) and flow_sde's step window (``sde_steps``),
checked against an independent step-by-step computation with ``torch.distributions``."""

import math

import pytest
import torch
from torch.distributions import Normal

from maniflow_policy_testlib import POINT_CLOUD_SHAPE_META, make_obs, make_policy
from maniflow_rl.policy.maniflow.stochastic_sampling import flow_noise_std, flow_sde_sigma


def independent_chain_logprob(policy, obs, chains, executed):
    """log p(x_1..x_K | x_0) over the executed slice, every step stochastic (flow_noise):
    ``sum_k log N(x_{k+1}; x_k + dt v_k, std_k^2)``, recomputed step by step."""
    k_steps = policy.num_inference_steps
    dt = 1.0 / k_steps
    context, _ = policy.encode_obs(obs)
    total = torch.zeros(chains.shape[0])
    for k in range(k_steps):
        x = chains[:, k]
        v, features = policy.model(x, torch.full((x.shape[0],), k / k_steps), dt, context)
        std = flow_noise_std(policy.noise_head(features), 0.08, 0.16)
        dist = Normal(x + dt * v, std.expand_as(x))
        total += dist.log_prob(chains[:, k + 1])[:, executed].flatten(1).sum(1)
    return total


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_flow_noise_chain_logprob_is_the_chain_likelihood(reduction):
    torch.manual_seed(0)
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method="flow_noise",
                         chain_logprob=reduction)
    with torch.no_grad():   # a non-constant learned std
        policy.noise_head.weight.normal_(0, 0.5)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 5)
    out = policy.sample_actions(obs, generator=torch.Generator().manual_seed(1))
    new = policy.default_forward({"observation": obs, "chains": out["chains"],
                                  "denoise_inds": out["denoise_inds"]})
    with torch.no_grad():
        expected = independent_chain_logprob(policy, obs, out["chains"], policy.executed_slice)
    if reduction == "mean":
        expected = expected / policy.num_inference_steps
    for logprobs in (out["logprobs"], new["logprobs"]):
        assert torch.allclose(logprobs.flatten(1).sum(1), expected, rtol=1e-4, atol=1e-3)


def test_chain_logprob_sum_makes_the_ratio_the_chain_likelihood_ratio():
    """With K = 4 stochastic steps, log-ratio(sum) = K * log-ratio(mean) for the same change."""
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method="flow_noise")
    obs = make_obs(POINT_CLOUD_SHAPE_META, 3)
    out = policy.sample_actions(obs, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    data = {"observation": obs, "chains": out["chains"], "denoise_inds": out["denoise_inds"]}
    log_ratio_sum = (policy.default_forward(data)["logprobs"] - out["logprobs"]).sum()
    policy.config = policy.config.replace(chain_logprob="mean")
    old_mean = out["logprobs"] / policy.num_inference_steps
    log_ratio_mean = (policy.default_forward(data)["logprobs"] - old_mean).sum()
    assert abs(log_ratio_sum.item()) > 1e-3
    assert math.isclose(log_ratio_sum.item(), 4 * log_ratio_mean.item(), rel_tol=1e-3)


def test_sde_steps_draws_the_stochastic_step_from_the_last_m_steps():
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method="flow_sde", sde_steps=2)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 200)
    out = policy.sample_actions(obs, generator=torch.Generator().manual_seed(0))
    steps = out["denoise_inds"][:, 0]
    assert set(steps.tolist()) == {2, 3}          # K = 4: the last two steps only
    new = policy.default_forward({"observation": obs, "chains": out["chains"],
                                  "denoise_inds": out["denoise_inds"]})
    assert torch.allclose(new["logprobs"], out["logprobs"], atol=1e-5)


def test_noise_level_per_step_sets_each_steps_sigma():
    levels = (0.9, 0.7, 0.5, 0.3)
    policy = make_policy(POINT_CLOUD_SHAPE_META, noise_method="flow_sde",
                         noise_level_per_step=levels)
    obs = make_obs(POINT_CLOUD_SHAPE_META, 64)
    out = policy.sample_actions(obs, generator=torch.Generator().manual_seed(3))
    new = policy.default_forward({"observation": obs, "chains": out["chains"],
                                  "denoise_inds": out["denoise_inds"]})
    steps = out["denoise_inds"][:, 0]
    a = torch.tensor(levels)[steps]
    std = flow_sde_sigma(steps.float() / 4, 0.25, a) * math.sqrt(0.25)
    expected_entropy = 0.5 + 0.5 * math.log(2 * math.pi) + torch.log(std)
    assert torch.allclose(new["entropy"].squeeze(1), expected_entropy, atol=1e-5)
    assert torch.allclose(new["logprobs"], out["logprobs"], atol=1e-5)


@pytest.mark.parametrize("bad", [dict(sde_steps=0), dict(sde_steps=5),
                                 dict(noise_level_per_step=(0.5, 0.5)),
                                 dict(chain_logprob="max")])
def test_bad_sampling_options_are_rejected(bad):
    with pytest.raises(ValueError):
        make_policy(POINT_CLOUD_SHAPE_META, **bad)
