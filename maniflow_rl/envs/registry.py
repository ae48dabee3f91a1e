"""Which simulator a task name belongs to: ``metaworld/<task>`` (MetaWorld v3) or
``robosuite/<task>`` (robosuite 1.5). The vector env runner, the demos and the pipeline build
their envs through here, so both simulators share the same runner, seeding and auto-reset."""

from __future__ import annotations

from typing import Any

from maniflow_rl.envs.robosuite.tasks import is_robosuite_task, resolve_robosuite_task


def resolve_env_task(name: str) -> str:
    """Canonical task name: MetaWorld's env name (``pick-place-v3``) or ``robosuite/<task>``;
    a ``ValueError`` with close matches for an unknown one."""
    if is_robosuite_task(name):
        return resolve_robosuite_task(name).name
    from maniflow_rl.envs.metaworld.tasks import resolve_task

    return resolve_task(name)


def default_max_episode_steps(task: str) -> int:
    return resolve_robosuite_task(task).max_episode_steps if is_robosuite_task(task) else 200


def make_point_cloud_env(task: str, **env_kwargs: Any):
    """``RobosuitePointCloudEnv`` or ``MetaWorldPointCloudEnv`` for ``task``."""
    if is_robosuite_task(task):
        from maniflow_rl.envs.robosuite.env import RobosuitePointCloudEnv

        return RobosuitePointCloudEnv(task, **env_kwargs)
    from maniflow_rl.envs.metaworld.env import MetaWorldPointCloudEnv

    return MetaWorldPointCloudEnv(task, **env_kwargs)
