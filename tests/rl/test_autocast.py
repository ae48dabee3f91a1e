"""``PPOConfig.autocast="bf16"``: the policy networks run in bfloat16, the transition and the
Gaussian log-probs stay float32, and a PPO iteration runs (CPU autocast here; CUDA in
benchmarks/gpu_check.sh)."""

import pytest
import torch

from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
from maniflow_rl.rl.ppo.config import PPOConfig
from maniflow_rl.rl.ppo.helpers import policy_autocast

SHAPE_META = {"obs": {"point_cloud": {"shape": [32, 3], "type": "point_cloud"},
                      "agent_pos": {"shape": [4]}}, "action": {"shape": [4]}}
TINY = dict(horizon=4, n_action_steps=2, n_obs_steps=1, num_inference_steps=2, n_emb=32,
            n_layer=1, n_head=2, pointnet_hidden_dims=[16], value_hidden_dims=[16],
            num_point_tokens=8, point_sampling="stride")


@pytest.mark.parametrize("noise_method", ["flow_sde", "flow_noise"])
def test_bf16_autocast_keeps_log_probs_float32(noise_method):
    policy = ManiFlowPointcloudRLPolicy(SHAPE_META, noise_method=noise_method, **TINY).eval()
    with torch.no_grad():   # off the zero-initialised (adaLN-Zero) output layers
        for param in policy.parameters():
            param.add_(0.05 * torch.randn_like(param))
    runner = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=4, seed=0)
    obs = {k: torch.as_tensor(v)[:, None] for k, v in runner.reset().items()}
    with policy_autocast("bf16", torch.device("cpu")):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = policy.sample_actions(obs, generator=torch.Generator().manual_seed(0))
        again = policy.default_forward({"observation": obs, "chains": out["chains"],
                                        "denoise_inds": out["denoise_inds"]})
    with torch.no_grad():
        full = policy.default_forward({"observation": obs, "chains": out["chains"],
                                       "denoise_inds": out["denoise_inds"]})
    for result in (out, again):
        assert result["logprobs"].dtype == torch.float32 and result["values"].dtype == torch.float32
    assert torch.isfinite(again["logprobs"]).all()
    # bf16 networks change the log-probs a little, not wholesale
    gap = (again["logprobs"] - full["logprobs"]).abs() / full["logprobs"].abs().clamp_min(1.0)
    assert 0 < float(gap.detach().max()) < 0.2


def test_autocast_setting_is_checked_and_trains():
    from maniflow_rl.rl.ppo.factory import create_maniflow_ppo_trainer

    with pytest.raises(ValueError, match="PPOConfig.autocast must be one of"):
        PPOConfig(autocast="fp8").validate()
    trainer = create_maniflow_ppo_trainer(
        SHAPE_META, policy_config=TINY,
        ppo_config={"num_envs": 2, "num_steps_per_rollout": 2, "batch_size": 4,
                    "autocast": "bf16", "save_path": "/tmp/unused-autocast", "eval_episodes": 0,
                    "save_interval": 10**6})
    metrics = trainer.train_iteration()
    trainer.close()
    assert metrics["train/num_minibatches"] > 0 and metrics["train/policy_loss"] == \
        metrics["train/policy_loss"]
