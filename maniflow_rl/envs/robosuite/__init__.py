"""robosuite 1.5 environments (Panda) with the specification's observation keys.

* ``RobosuitePointCloudEnv`` (env.py): one task, gymnasium API, fused camera point clouds,
  absolute 6-D or delta OSC actions, scripted experts (experts.py).
* ``RobosuiteEnvRunner``: the env-runner interface over parallel workers, the simulators'
  shared ``PointCloudEnvRunner`` (``envs/vector/``) with a ``robosuite/<task>`` name.
* tasks.py: task names and per-task settings; rotation.py: quaternion / 6-D / axis-angle.

Names are imported lazily, so ``tasks`` works without robosuite installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from maniflow_rl.envs.robosuite.tasks import TASKS, is_robosuite_task, resolve_robosuite_task

_LAZY = {"RobosuitePointCloudEnv": "maniflow_rl.envs.robosuite.env"}

__all__ = ["TASKS", "is_robosuite_task", "resolve_robosuite_task", "RobosuiteEnvRunner", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "RobosuiteEnvRunner":
        from maniflow_rl.envs.vector.runner import PointCloudEnvRunner

        return PointCloudEnvRunner
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
