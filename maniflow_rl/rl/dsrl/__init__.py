"""Off-policy steering of a frozen flow policy through its initial noise (DSRL)."""

from maniflow_rl.rl.dsrl.config import DSRLConfig
from maniflow_rl.rl.dsrl.networks import CriticEnsemble, LatentActor
from maniflow_rl.rl.dsrl.steered_policy import LatentSteeredPolicy
from maniflow_rl.rl.dsrl.trainer import ManiFlowDSRLTrainer

__all__ = ["DSRLConfig", "ManiFlowDSRLTrainer", "LatentActor", "CriticEnsemble",
           "LatentSteeredPolicy"]
