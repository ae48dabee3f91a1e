"""Helpers of the policy tests: tiny configs, shape_metas, observation and policy factories.

A uniquely named module (not conftest) so it never collides with other test folders."""

from __future__ import annotations

import torch

from maniflow_rl.policy import ManiFlowPointcloudRLPolicy, ManiFlowPolicyConfig

from maniflow_rl.envs.dummy import SEED_SHAPE_META  # noqa: E402  (re-exported for the tests)
# the seed's keys with a smaller image / cloud, to keep the tests fast
SMALL_SEED_SHAPE_META = {
    "obs": {**SEED_SHAPE_META["obs"],
            "robot0_eye_in_hand_image": {"shape": [3, 16, 16], "type": "rgb"},
            "point_cloud": {"shape": [64, 6], "type": "point_cloud"}},
    "action": {"shape": [10]},
}
POINT_CLOUD_SHAPE_META = {
    "obs": {"point_cloud": {"shape": [48, 3], "type": "point_cloud"},
            "agent_pos": {"shape": [9], "type": "low_dim"}},
    "action": {"shape": [4]},
}
TINY = dict(horizon=8, n_action_steps=4, n_obs_steps=2, num_inference_steps=4, n_emb=32,
            n_layer=1, n_head=2, mlp_ratio=2.0, pointnet_hidden_dims=(16,),
            cnn_channels=(8, 16), value_hidden_dims=(32,), num_point_tokens=16)



def tiny_config(**overrides) -> ManiFlowPolicyConfig:
    return ManiFlowPolicyConfig(**{**TINY, **overrides})


def make_obs(shape_meta, batch: int, n_obs_steps: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(batch, n_obs_steps, *spec["shape"], generator=g)
            for k, spec in shape_meta["obs"].items()}


def randomize_(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Perturb all weights (zero-init gates / heads would make the velocity trivially 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def make_policy(shape_meta=POINT_CLOUD_SHAPE_META, seed: int = 0, randomize: bool = True,
                **overrides) -> ManiFlowPointcloudRLPolicy:
    torch.manual_seed(seed)
    policy = ManiFlowPointcloudRLPolicy(shape_meta, tiny_config(**overrides))
    if randomize:
        randomize_(policy, seed=seed)
    return policy
