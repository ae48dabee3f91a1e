"""Scripted demonstrations -> DP3 / ManiFlow zarr dataset.

``generate_demos`` runs a task's scripted expert (MetaWorld's ``metaworld.policies`` in
``MetaWorldPointCloudEnv``, or ours in ``RobosuitePointCloudEnv``: ``envs/robosuite/experts.py``),
keeps only successful episodes (an episode ends at its first success) and writes, in zarr
format 2 so the original DP3 / ManiFlow code can read it::

    data/point_cloud  float32 [T, N, 3|6]   observation before each action
    data/state        float32 [T, Ds]       agent_pos (9-d by default)
    data/action       float32 [T, 4]        executed action: the expert's, plus noise if any
    data/full_state   float32 [T, 39]       MetaWorld state (goal observable), for debugging
    data/potential    float32 [T, 1]        Phi(s_t) = MetaWorld's dense reward / 10 before action t
    data/next_potential float32 [T, 1]      Phi(s_{t+1}), after it (the ``shaped`` reward's
                                            potential: a DSRL replay pre-filled with the demos
                                            rebuilds their shaped rewards from these two)
    data/img          uint8   [T, H, W, 3]  only with use_image=True in env_kwargs
    meta/episode_ends int64   [E]           cumulative (exclusive) end index of every episode

robosuite tasks store every observation key under its own name instead (``point_cloud``
``[T, N, 6]``, ``robot0_eef_pos`` ..., ``robot0_eye_in_hand_image`` ``[T, H, W, 3]`` HWC like
``img``), with ``action`` in the env's action mode and the same ``full_state`` / potentials.

Attempt ``k`` resets with ``derive_episode_seed(seed, k)``, so a dataset is reproducible.

``action_noise = sigma > 0`` ("noisy demos"): every step executes and records
``clip(a_expert + sigma * eps, -1, 1)``, ``eps ~ N(0, I)`` seeded from the attempt's seed. The
closed-loop expert corrects what the noise did, so the demos show a spread of actions around
the expert's instead of one deterministic action per state; a flow policy imitating them keeps
that spread in its initial noise, which is what latent steering (DSRL) chooses from
(docs/TUNING.md, "steering authority").
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 22  # ~4 MiB chunks, along time only
ZARR_KEYS = {"agent_pos": "state", "image": "img"}   # DP3's names of MetaWorld's keys


def _chunks(num_steps: int, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    step_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * itemsize)
    return (max(1, min(num_steps, CHUNK_BYTES // step_bytes)), *shape)


def _write_zarr(path: Path, data: dict[str, np.ndarray], episode_ends: np.ndarray) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    group = root.require_group("data")
    for key, arr in data.items():
        chunks = _chunks(len(arr), arr.shape[1:], arr.dtype.itemsize)
        group.create_array(key, data=arr, chunks=chunks)
    meta = root.require_group("meta")
    meta.create_array("episode_ends", data=episode_ends.astype(np.int64),
                      chunks=(max(1, len(episode_ends)),))


def run_expert_episode(env, seed: int, action_noise: float = 0.0
                       ) -> tuple[dict[str, np.ndarray], bool]:
    """One scripted-expert episode; returns the per-step arrays and whether it succeeded.
    ``action_noise``: std of the Gaussian added to each expert action (module docstring)."""
    from maniflow_rl.data.dataset import obs_type
    from maniflow_rl.envs.base import PRIVILEGED_KEY

    noise_rng = np.random.default_rng([int(seed), 1]) if action_noise > 0 else None
    obs, _ = env.reset(seed=seed)
    keys = {key: ZARR_KEYS.get(key, key) for key in obs if key != PRIVILEGED_KEY}
    steps: dict[str, list] = {z: [] for z in keys.values()}
    steps.update(action=[], full_state=[], potential=[], next_potential=[])
    success = False
    while True:
        action = env.expert_action()
        if noise_rng is not None:
            noise = action_noise * noise_rng.standard_normal(action.shape)
            action = np.clip(action + noise, -1.0, 1.0).astype(action.dtype)
        for key, zarr_key in keys.items():   # images CHW -> HWC (DP3 layout)
            image = obs_type(key) == "rgb"
            steps[zarr_key].append(obs[key].transpose(1, 2, 0) if image else obs[key])
        steps["action"].append(action)
        steps["full_state"].append(env.raw_obs.astype(np.float32))
        steps["potential"].append(np.float32([env.potential]))
        obs, _, terminated, truncated, info = env.step(action)
        steps["next_potential"].append(np.float32([env.potential]))
        success = success or bool(info["success"])
        if terminated or truncated:
            break
    return {k: np.stack(v) for k, v in steps.items()}, success


def is_demo_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a dataset directory in our zarr layout (``data/action`` and
    ``meta/episode_ends``): the only thing ``generate_demos`` may replace."""
    path = Path(path)
    return (path.is_dir() and (path / "data" / "action").is_dir()
            and (path / "meta" / "episode_ends").is_dir())


def check_demos_output(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse, before any work, an output path that holds anything but an empty folder, unless
    it is a demo dataset and ``overwrite`` is set: nothing the user owns is ever deleted."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if not is_demo_dataset(path):
        raise FileExistsError(f"{path} exists and is not a maniflow-rl demo dataset; refusing to "
                              f"replace it (choose another output path)")
    if not overwrite:
        raise FileExistsError(f"{path} already holds a demo dataset; pass --overwrite "
                              f"(overwrite=True) to replace it")


def generate_demos(task: str, num_episodes: int, out_path: str | os.PathLike, seed: int = 0,
                   max_episode_steps: int | None = 200,
                   env_kwargs: dict[str, Any] | None = None,
                   progress: bool = True, max_attempts: int | None = None,
                   overwrite: bool = False, action_noise: float = 0.0) -> dict[str, Any]:
    """Collect ``num_episodes`` successful scripted-expert episodes and save them as zarr.

    Args:
        task: MetaWorld task name (any spelling accepted by ``resolve_task``) or
            ``robosuite/<task>``.
        num_episodes: successful episodes to keep.
        out_path: output directory (``*.zarr``); an existing demo dataset there is replaced
            only with ``overwrite``, anything else there is never touched (error first).
        seed: base seed of the attempt layouts.
        max_episode_steps: step cap of an attempt (an attempt ends at its first success);
            None: the task's own (robosuite).
        env_kwargs: extra env arguments (``num_points``; MetaWorld: ``point_cloud_source``,
            ``camera``, ``use_image``, ...; robosuite: ``action_mode``, ...).
        progress: show a tqdm bar.
        max_attempts: give up after this many attempts (default ``3 * num_episodes + 10``).
        overwrite: replace an existing demo dataset at ``out_path``.
        action_noise: std of the Gaussian added to every executed expert action (0: none).

    Returns:
        Summary dict: task, episodes, attempts, success_rate, total_steps, mean_episode_length,
        complete (False if max_attempts ran out first), out_path, seconds, shapes.

    Raises:
        RuntimeError: no attempt succeeded (nothing is written).
    """
    from maniflow_rl.envs.metaworld.tasks import registry_name
    from maniflow_rl.envs.vector.runner import derive_episode_seed
    from maniflow_rl.envs.registry import default_max_episode_steps, make_point_cloud_env
    from maniflow_rl.envs.robosuite.tasks import is_robosuite_task

    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if not 0.0 <= float(action_noise) <= 1.0:
        raise ValueError(f"action_noise must be in [0, 1] (actions live in [-1, 1]), "
                         f"got {action_noise}")
    check_demos_output(out_path, overwrite)
    max_attempts = 3 * num_episodes + 10 if max_attempts is None else int(max_attempts)
    kwargs = dict(env_kwargs or {})
    max_episode_steps = max_episode_steps or default_max_episode_steps(task)
    kwargs.update(max_episode_steps=max_episode_steps, terminate_on_success=True,
                  reward_type="sparse")
    env = make_point_cloud_env(task, **kwargs)
    start = time.time()
    episodes: list[dict[str, np.ndarray]] = []
    attempts = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_episodes, desc=f"demos {env.task}", unit="ep")
    try:
        while len(episodes) < num_episodes and attempts < max_attempts:
            steps, success = run_expert_episode(env, derive_episode_seed(seed, attempts),
                                                action_noise)
            attempts += 1
            if success:
                episodes.append(steps)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.set_postfix(attempts=attempts, success_rate=f"{len(episodes) / attempts:.2f}")
    finally:
        if bar is not None:
            bar.close()
        env.close()
    if not episodes:
        raise RuntimeError(f"the scripted expert never succeeded on {env.task} in {attempts} "
                           f"attempts of at most {max_episode_steps} steps")
    if len(episodes) < num_episodes:
        logger.warning("only %d of %d demos succeeded within %d attempts",
                       len(episodes), num_episodes, attempts)

    data = {key: np.concatenate([ep[key] for ep in episodes]) for key in episodes[0]}
    episode_ends = np.cumsum([len(ep["action"]) for ep in episodes]).astype(np.int64)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    check_demos_output(out_path, overwrite)          # again: the path may have changed since
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        _write_zarr(tmp_path, data, episode_ends)
        if is_demo_dataset(out_path):
            shutil.rmtree(out_path)
        elif out_path.exists():
            out_path.rmdir()                              # the empty folder check_ allowed
        tmp_path.rename(out_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)

    lengths = np.diff(np.concatenate([[0], episode_ends]))
    summary = {
        "task": env.task if is_robosuite_task(env.task) else registry_name(env.task),
        "episodes": len(episodes), "requested": num_episodes,
        "attempts": attempts, "success_rate": len(episodes) / attempts,
        "action_noise": float(action_noise),
        "total_steps": int(episode_ends[-1]), "mean_episode_length": float(lengths.mean()),
        "complete": len(episodes) == num_episodes, "out_path": str(out_path),
        "seconds": round(time.time() - start, 2),
        "shapes": {key: list(arr.shape) for key, arr in data.items()},
    }
    logger.info("demos: %s", summary)
    return summary
