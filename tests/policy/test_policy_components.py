"""Configuration, normalizer, observation encoder and DiT-X."""

import numpy as np
import pytest
import torch

from maniflow_policy_testlib import POINT_CLOUD_SHAPE_META, SMALL_SEED_SHAPE_META, make_obs
from maniflow_rl.policy import LimitsNormalizer, ManiFlowPolicyConfig
from maniflow_rl.policy.maniflow.dit_x import DiTX
from maniflow_rl.policy.maniflow.obs_encoder import (ObservationEncoder, farthest_point_indices,
                                                     validate_shape_meta)


# ----------------------------------------------------------------------------- configuration
def test_config_presets_and_round_trip():
    cfg = ManiFlowPolicyConfig().resolved()
    assert (cfg.n_emb, cfg.n_layer, cfg.n_head) == (128, 2, 4)
    paper = ManiFlowPolicyConfig(model_size="paper").resolved()
    assert (paper.n_emb, paper.n_layer, paper.n_head) == (768, 12, 8)
    explicit = ManiFlowPolicyConfig(model_size="paper", n_layer=3).resolved()
    assert explicit.n_layer == 3 and explicit.n_emb == 768
    again = ManiFlowPolicyConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.noise_params, tuple)


@pytest.mark.parametrize("overrides, message", [
    (dict(noise_method="ddpm"), "noise_method"),
    (dict(n_action_steps=16), "n_action_steps"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(horizon=-1), "horizon"),
    (dict(critic_mode="shared"), "critic_mode"),
    (dict(model_size="huge"), "model_size"),
    (dict(n_emb=30, n_head=4), "divisible"),
    (dict(sigma_min=0.2, sigma_max=0.1), "sigma_min"),
    (dict(noise_params=(0.7, 0.3)), "noise_params"),
])
def test_config_validation_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        ManiFlowPolicyConfig(**overrides)


def test_config_unknown_field():
    with pytest.raises(ValueError, match="unknown"):
        ManiFlowPolicyConfig.from_dict({"horizon": 16, "bogus": 1})
    with pytest.raises(ValueError, match="bogus"):
        ManiFlowPolicyConfig().replace(bogus=1)


def test_largest_valid_action_chunk():
    ManiFlowPolicyConfig(horizon=16, n_obs_steps=2, n_action_steps=15).validate()


# ----------------------------------------------------------------------------- normalizer
def test_normalizer_identity_before_fit_and_limits_after():
    norm = LimitsNormalizer({"a": 3, "pc": 6})
    x = torch.randn(5, 3)
    assert not norm.is_fitted and torch.equal(norm.normalize("a", x), x)
    data = np.stack([np.linspace(-2, 4, 11), np.linspace(0, 1, 11), np.full(11, 7.0)], 1)
    norm.fit({"a": data})
    y = norm.normalize("a", torch.as_tensor(data, dtype=torch.float32))
    assert torch.allclose(y[0, :2], torch.tensor([-1.0, -1.0]))
    assert torch.allclose(y[-1, :2], torch.tensor([1.0, 1.0]))
    assert torch.allclose(y[:, 2], torch.zeros(11))                 # constant dim -> 0
    assert torch.allclose(norm.unnormalize("a", y), torch.as_tensor(data, dtype=torch.float32),
                          atol=1e-5)
    assert not norm.is_fitted                                        # 'pc' not fitted yet


def test_normalizer_point_cloud_per_channel_and_state_dict():
    norm = LimitsNormalizer({"pc": 6})
    cloud = torch.rand(4, 2, 100, 6) * torch.tensor([1.0, 2, 3, 255, 255, 255])
    norm.fit({"pc": cloud})
    y = norm.normalize("pc", cloud)
    assert torch.allclose(y.amin((0, 1, 2)), -torch.ones(6), atol=1e-5)
    assert torch.allclose(y.amax((0, 1, 2)), torch.ones(6), atol=1e-5)
    fresh = LimitsNormalizer({"pc": 6})
    fresh.load_state_dict(norm.state_dict())
    assert fresh.is_fitted and torch.equal(fresh.normalize("pc", cloud), y)


def test_normalizer_errors_and_passthrough():
    norm = LimitsNormalizer({"a": 2}, passthrough_keys=("img",))
    with pytest.raises(ValueError, match="unknown"):
        norm.fit({"b": np.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        norm.fit({"a": np.zeros((3, 5))})
    norm.fit({"img": np.ones((2, 3, 4, 4)), "a": np.zeros((2, 2))})
    img = torch.rand(2, 3, 4, 4)
    assert torch.equal(norm.normalize("img", img), img)


# ----------------------------------------------------------------------------- encoder
def test_shape_meta_validation_errors():
    with pytest.raises(ValueError, match="'action'"):
        validate_shape_meta({"obs": {"x": {"shape": [3]}}})
    with pytest.raises(ValueError, match="'obs'"):
        validate_shape_meta({"action": {"shape": [3]}})
    with pytest.raises(ValueError, match="unknown type"):
        validate_shape_meta({"obs": {"x": {"shape": [3], "type": "depth"}},
                             "action": {"shape": [2]}})
    with pytest.raises(ValueError, match=r"\[N, 3\] or \[N, 6\]"):
        validate_shape_meta({"obs": {"pc": {"shape": [100, 4], "type": "point_cloud"}},
                             "action": {"shape": [2]}})
    with pytest.raises(ValueError, match="invalid shape"):
        validate_shape_meta({"obs": {"x": {"shape": [0]}}, "action": {"shape": [2]}})


def test_farthest_point_sampling():
    line = torch.arange(10.0)[:, None] * torch.tensor([[1.0, 0, 0]])
    idx = farthest_point_indices(line.unsqueeze(0).repeat(2, 1, 1), 3)
    assert idx[0].tolist() == [0, 9, 4] and torch.equal(idx[0], idx[1])
    cloud = torch.rand(3, 200, 3)
    idx = farthest_point_indices(cloud, 32)
    assert all(len(set(row.tolist())) == 32 for row in idx)


def test_encoder_token_layout_and_pooled():
    enc = ObservationEncoder(SMALL_SEED_SHAPE_META["obs"], 2, 32, (16,), 16, "fps", (8, 16), 2)
    context, pooled = enc(make_obs(SMALL_SEED_SHAPE_META, 3))
    assert context.shape == (3, 2 * (16 + 4 + 1), 32) and pooled.shape == (3, 64)
    stride = ObservationEncoder(POINT_CLOUD_SHAPE_META["obs"], 2, 32, (16,), 8, "stride", (8,), 2)
    context, _ = stride(make_obs(POINT_CLOUD_SHAPE_META, 2))
    assert context.shape == (2, 2 * (8 + 1), 32)


# ----------------------------------------------------------------------------- DiT-X
def make_dit(seed=0):
    torch.manual_seed(seed)
    return DiTX(action_dim=3, horizon=6, n_emb=32, n_layer=2, n_head=4, mlp_ratio=2.0)


def test_dit_x_zero_init_output_and_shapes():
    dit = make_dit()
    v, features = dit(torch.randn(4, 6, 3), torch.rand(4), torch.rand(4), torch.randn(4, 5, 32))
    assert v.shape == (4, 6, 3) and features.shape == (4, 6, 32)
    assert torch.equal(v, torch.zeros_like(v))                       # zero-init output layer


def test_dit_x_repeated_context_equals_per_step_calls():
    dit = make_dit()
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    batch, steps = 3, 4
    context = torch.randn(batch, 5, 32)
    x = torch.randn(batch * steps, 6, 3)
    t = torch.rand(batch * steps)
    v, _ = dit(x, t, 0.25, context)                                  # row = b * steps + s
    v_rep, _ = dit(x, t, 0.25, context.repeat_interleave(steps, 0))
    assert torch.allclose(v, v_rep, atol=1e-6)
    for b in range(batch):
        rows = slice(b * steps, (b + 1) * steps)
        v_b, _ = dit(x[rows], t[rows], 0.25, context[b:b + 1].expand(steps, -1, -1))
        assert torch.allclose(v[rows], v_b, atol=1e-5)
    assert v.abs().mean() > 0
    # conditioning on dt matters, observation context matters
    assert not torch.allclose(dit(x, t, 0.0, context)[0], v)
    assert not torch.allclose(dit(x, t, 0.25, context + 1)[0], v)


def test_dit_x_precomputed_context_equals_fresh_and_is_reused():
    """K denoising steps on one precomputed context give the numbers of recomputing its
    keys/values at every step, and the context's key/value projection runs once, not K times."""
    dit = make_dit()
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    dit.context_proj = torch.nn.Linear(32, 32)         # a projection the cache must include
    context, x = torch.randn(3, 5, 32), torch.randn(3, 6, 3)
    calls = []
    hooks = [block.cross_attn.kv.register_forward_hook(lambda *_: calls.append(1))
             for block in dit.blocks]
    with torch.no_grad():
        cached = dit.precompute_context(context)
        assert len(calls) == 2 and len(cached.kv) == 2
        for k in range(4):
            t = torch.full((3,), k / 4)
            v_cached, f_cached = dit(x, t, 0.25, cached)
            v_fresh, f_fresh = dit(x, t, 0.25, context)
            assert torch.equal(v_cached, v_fresh) and torch.equal(f_cached, f_fresh)
            x = x + 0.25 * v_fresh
    assert len(calls) == 2 + 4 * 2                     # fresh calls project; cached ones do not
    for hook in hooks:
        hook.remove()
