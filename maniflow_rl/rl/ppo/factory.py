"""``create_maniflow_ppo_trainer``: the seed's one-call constructor."""

from __future__ import annotations

from typing import Any

from maniflow_rl.rl.advantages import AdvantageConfig
from maniflow_rl.rl.ppo.config import PPOConfig
from maniflow_rl.utils.config_dicts import config_from_dict
from maniflow_rl.rl.ppo.trainer import ManiFlowPPOTrainer
from maniflow_rl.rl.rollout_collector import CollectorConfig
from maniflow_rl.utils import distributed as dp
from maniflow_rl.utils.device import resolve_device
from maniflow_rl.utils.seeding import seed_everything


def _to_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    return dict(value.__dict__)


def create_maniflow_ppo_trainer(shape_meta: dict, device: str = "cpu",
                                ppo_config: dict | PPOConfig | None = None,
                                advantage_config: dict | AdvantageConfig | None = None,
                                policy_config: dict | None = None, env_runner=None,
                                collector_config: dict | CollectorConfig | None = None,
                                eval_env_runner=None, checkpoint: str | None = None
                                ) -> ManiFlowPPOTrainer:
    """Build policy, env runner (``ManiFlowDummyEnvRunner`` when none is given), collector,
    advantage calculator and trainer from plain dicts, validating everything before any work.
    Every RNG is seeded with ``ppo_config.seed`` before the policy is built: same seed, same run.

    ``checkpoint`` optionally initialises the policy from a pretraining checkpoint, or resumes
    a PPO checkpoint. Under ``torchrun`` each rank's dummy runner gets ``num_envs /
    world_size`` envs (``utils/distributed.py``).
    """
    from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy

    torch_device = resolve_device(device)
    ppo = config_from_dict(PPOConfig, {**_to_dict(ppo_config), "device": str(torch_device)})
    ppo.validate()
    adv = config_from_dict(AdvantageConfig, _to_dict(advantage_config))
    adv.validate()
    seed_everything(ppo.seed)   # before the policy's initial weights are drawn
    policy = ManiFlowPointcloudRLPolicy(shape_meta, **_to_dict(policy_config))
    if env_runner is None:   # under torchrun: this rank's share, rank-distinct seed
        rank = dp.dist_info_from_env()
        env_runner = ManiFlowDummyEnvRunner(
            shape_meta, num_envs=dp.local_num_envs(ppo.num_envs, rank.world_size),
            seed=dp.rank_seed(ppo.seed, rank.rank))
    if collector_config is not None:
        collector_config = config_from_dict(CollectorConfig, {
            "action_chunk_size": policy.n_action_steps, "obs_chunk_size": policy.n_obs_steps,
            **_to_dict(collector_config)})
    trainer = ManiFlowPPOTrainer(policy, env_runner, ppo, adv, collector_config=collector_config,
                                 eval_env_runner=eval_env_runner, device=torch_device)
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
    return trainer
