"""Rollouts, advantages and PPO for chain-recording flow policies; DSRL latent steering."""

from maniflow_rl.rl.advantages import AdvantageConfig, ManiFlowAdvantageCalculator
from maniflow_rl.rl.batch import RolloutBatch
from maniflow_rl.rl.dsrl import DSRLConfig, ManiFlowDSRLTrainer
from maniflow_rl.rl.ppo import ManiFlowPPOTrainer, PPOConfig, create_maniflow_ppo_trainer
from maniflow_rl.rl.rollout_collector import CollectorConfig, ManiFlowRolloutCollector

__all__ = [
    "AdvantageConfig", "CollectorConfig", "DSRLConfig", "ManiFlowDSRLTrainer",
    "ManiFlowAdvantageCalculator", "ManiFlowPPOTrainer", "ManiFlowRolloutCollector", "PPOConfig",
    "RolloutBatch", "create_maniflow_ppo_trainer",
]
