"""Rollouts, advantages and PPO for chain-recording flow policies (lazy exports)."""

from importlib import import_module

_EXPORTS = {
    "AdvantageConfig": "maniflow_rl.rl.advantages",
    "ManiFlowAdvantageCalculator": "maniflow_rl.rl.advantages",
    "RolloutBatch": "maniflow_rl.rl.batch",
    "create_maniflow_ppo_trainer": "maniflow_rl.rl.factory",
    "PPOConfig": "maniflow_rl.rl.ppo_config",
    "ManiFlowPPOTrainer": "maniflow_rl.rl.ppo_trainer",
    "CollectorConfig": "maniflow_rl.rl.rollout_collector",
    "ManiFlowRolloutCollector": "maniflow_rl.rl.rollout_collector",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'maniflow_rl.rl' has no attribute {name!r}")
