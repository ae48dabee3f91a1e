"""The simulators' shared parallel env runner and its execution backends, side by side.

* ``runner.py``: ``PointCloudEnvRunner``, the env-runner interface (``envs/base.py``) over any
  point-cloud simulator of ``envs/registry.py`` (MetaWorld, robosuite): seeding, auto-reset,
  ``final_obs``, held envs, chunk execution. Exported as ``MetaWorldEnvRunner`` and
  ``RobosuiteEnvRunner`` by the simulator packages.
* ``env_group.py``: a block of envs stepped one after the other; the body every backend runs.
* Backends, one per module, each with ``call(k, command, args)`` / ``call_all`` / ``close``:
  ``in_process.py`` (``num_workers=0``), ``processes.py`` (worker processes over pipes, the
  default) and ``ray_workers.py`` (Ray actors, local or on a cluster; dead workers restarted).

Names are imported lazily, so importing this package does not start or import a simulator.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PointCloudEnvRunner": "maniflow_rl.envs.vector.runner",
    "derive_episode_seed": "maniflow_rl.envs.vector.runner",
    "RUNNER_BACKENDS": "maniflow_rl.envs.vector.runner",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
