"""maniflow-rl: online RL fine-tuning of ManiFlow point-cloud flow policies (PPO, and DSRL:
off-policy steering of the frozen policy through its initial noise).

Public API (names from the original specification)::

    from maniflow_rl import (create_maniflow_ppo_trainer, ManiFlowPPOTrainer, PPOConfig,
                             AdvantageConfig, ManiFlowAdvantageCalculator,
                             ManiFlowRolloutCollector, ManiFlowPointcloudRLPolicy,
                             ManiFlowDummyEnvRunner, DSRLConfig, ManiFlowDSRLTrainer)

Names are imported lazily, so ``import maniflow_rl.data`` does not pull in torch models.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "ManiFlowDummyEnvRunner": "maniflow_rl.envs.dummy",
    "ManiFlowPointcloudRLPolicy": "maniflow_rl.policy",
    "ManiFlowPolicyConfig": "maniflow_rl.policy",
    "AdvantageConfig": "maniflow_rl.rl.advantages",
    "ManiFlowAdvantageCalculator": "maniflow_rl.rl.advantages",
    "CollectorConfig": "maniflow_rl.rl.rollout_collector",
    "ManiFlowRolloutCollector": "maniflow_rl.rl.rollout_collector",
    "RolloutBatch": "maniflow_rl.rl.batch",
    "PPOConfig": "maniflow_rl.rl.ppo.config",
    "ManiFlowPPOTrainer": "maniflow_rl.rl.ppo.trainer",
    "create_maniflow_ppo_trainer": "maniflow_rl.rl.ppo.factory",
    "DSRLConfig": "maniflow_rl.rl.dsrl",
    "ManiFlowDSRLTrainer": "maniflow_rl.rl.dsrl",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'maniflow_rl' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
