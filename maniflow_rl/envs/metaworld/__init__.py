"""MetaWorld v3 environments with point-cloud observations.

* ``MetaWorldPointCloudEnv`` (env.py): one task, gymnasium API, camera or geometry point clouds.
* ``MetaWorldEnvRunner``: the env-runner interface over parallel workers, the simulators'
  shared ``PointCloudEnvRunner`` (``envs/vector/``).
* tasks.py: the 50 task names and DP3 difficulty groups; point_cloud.py: pure cloud functions.

Names are imported lazily, so ``tasks`` works without the simulator installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from maniflow_rl.envs.metaworld.tasks import (
    DP3_DIFFICULTY,
    METAWORLD_V3_TASKS,
    TASKS_BY_DIFFICULTY,
    list_tasks,
    registry_name,
    resolve_task,
    task_difficulty,
)

_LAZY = {
    "MetaWorldPointCloudEnv": "maniflow_rl.envs.metaworld.env",
    "RenderingUnavailableError": "maniflow_rl.envs.metaworld.env",
    "DEFAULT_WORKSPACE_BOUNDS": "maniflow_rl.envs.metaworld.env",
    "SceneSurfaceSampler": "maniflow_rl.envs.metaworld.geometry",
}

__all__ = [
    "DP3_DIFFICULTY", "METAWORLD_V3_TASKS", "TASKS_BY_DIFFICULTY", "list_tasks", "registry_name",
    "resolve_task", "task_difficulty", "MetaWorldEnvRunner", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name == "MetaWorldEnvRunner":
        from maniflow_rl.envs.vector.runner import PointCloudEnvRunner

        return PointCloudEnvRunner
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
