"""Environment runners (see docs/ARCHITECTURE.md for the env-runner interface).

MetaWorld runners live in ``maniflow_rl.envs.metaworld`` and are not imported here (optional
dependency).
"""

from maniflow_rl.envs.base import (
    EnvRunner,
    StepResult,
    normalize_step_output,
    validate_obs_dict,
    validate_step_output,
)
from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
from maniflow_rl.envs.gym_adapter import GymVectorEnvRunner

__all__ = [
    "EnvRunner",
    "GymVectorEnvRunner",
    "ManiFlowDummyEnvRunner",
    "StepResult",
    "normalize_step_output",
    "validate_obs_dict",
    "validate_step_output",
]
