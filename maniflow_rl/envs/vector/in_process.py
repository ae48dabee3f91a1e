"""In-process backend of ``PointCloudEnvRunner`` (``num_workers=0``): every env in the calling
process, stepped one after the other, with the same ``call`` / ``call_all`` interface as the
worker backends, so tests and debuggers see exactly the code the workers run
(``env_group.EnvGroup``)."""

from __future__ import annotations

from typing import Any, Sequence

from maniflow_rl.envs.vector.env_group import EnvGroup


class InProcessEnvWorkers:
    """One block holding every env, in this process."""

    def __init__(self, task: str, env_kwargs: dict[str, Any], block_sizes: Sequence[int]) -> None:
        if len(block_sizes) != 1:
            raise ValueError("the in-process backend hosts exactly one block of envs")
        self.group = EnvGroup(task, dict(env_kwargs), int(block_sizes[0]))

    def call(self, k: int, command: str, args: tuple) -> Any:
        return getattr(self.group, command)(*args)

    def call_all(self, command: str, args: Sequence[tuple]) -> list[Any]:
        return [self.call(0, command, args[0])]

    def close(self) -> None:
        self.group.close()
