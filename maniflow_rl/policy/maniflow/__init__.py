"""ManiFlow point-cloud policy (LeRobot style: configuration beside the model)."""

from .configuration import MODEL_PRESETS, NOISE_METHODS, ManiFlowPolicyConfig
from .maniflow_pointcloud_rl_policy import ManiFlowPointcloudRLPolicy
from .normalizer import LimitsNormalizer

__all__ = ["ManiFlowPointcloudRLPolicy", "ManiFlowPolicyConfig", "LimitsNormalizer",
           "MODEL_PRESETS", "NOISE_METHODS"]
