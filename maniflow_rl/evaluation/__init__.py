"""Policy evaluation: success rate with Wilson intervals, episode records, videos."""

from maniflow_rl.evaluation.evaluate import (
    evaluate_policy,
    load_policy_from_checkpoint,
    make_env_runner,
)
from maniflow_rl.evaluation.stats import wilson_interval
from maniflow_rl.evaluation.video import PointCloudPanel, save_video

__all__ = [
    "PointCloudPanel",
    "evaluate_policy",
    "load_policy_from_checkpoint",
    "make_env_runner",
    "save_video",
    "wilson_interval",
]
