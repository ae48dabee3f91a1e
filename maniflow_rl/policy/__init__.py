"""Policies of maniflow-rl."""

from .maniflow import LimitsNormalizer, ManiFlowPointcloudRLPolicy, ManiFlowPolicyConfig

__all__ = ["ManiFlowPointcloudRLPolicy", "ManiFlowPolicyConfig", "LimitsNormalizer"]
