"""Deterministic policy evaluation on a vectorized env runner, with an optional video.

Counting rule: with ``N = env_runner.num_envs`` and ``num_episodes = E``, env ``i`` contributes
its first ``E // N (+1 for i < E % N)`` episodes and nothing after, so fast (e.g. quickly
succeeding or failing) envs cannot crowd out slow ones, and fixed seeds give identical results.

Action chunks: every decision runs ``policy.predict_action`` on the last ``n_obs_steps`` frames
(the first frame of an episode repeated) and executes ``n_action_steps`` actions. When an env
whose next episode still counts ends inside a chunk, the rest of the chunk is dropped for all
envs and every env re-plans from its current observation history: the new episode never
executes actions planned in the previous one (with one env this is exactly single-env
evaluation).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from maniflow_rl.envs.base import normalize_step_output, validate_obs_dict
from maniflow_rl.evaluation.stats import wilson_interval
from maniflow_rl.evaluation.video import PointCloudPanel, save_video, side_by_side
from maniflow_rl.utils.checkpoint import CheckpointError, load_checkpoint_file, load_policy_weights

log = logging.getLogger("maniflow_rl")
DEFAULT_MAX_STEPS = 1000
# evaluation env seeds = run seed + EVAL_SEED_OFFSET + env index: never a training layout
EVAL_SEED_OFFSET = 100_000


def _policy_device(policy: torch.nn.Module) -> torch.device:
    param = next(iter(policy.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


class _FrameRecorder:
    """Collects frames of env 0: ``env_runner.render_rgb()``, else its ``image`` obs, plus (or,
    without any RGB source, only) a point-cloud panel."""

    def __init__(self, env_runner, point_cloud_panel: bool):
        self.env_runner = env_runner
        self.panel = PointCloudPanel() if point_cloud_panel else None
        self.frames: list[np.ndarray] = []
        self.enabled = True

    def capture(self, obs: dict[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        parts = []
        if hasattr(self.env_runner, "render_rgb"):
            rgb = np.asarray(self.env_runner.render_rgb())
            parts.append(rgb[0] if rgb.ndim == 4 else rgb)
        elif "image" in obs:
            parts.append(obs["image"][0])
        if "point_cloud" in obs and (self.panel is not None or not parts):
            self.panel = self.panel or PointCloudPanel()  # the cloud alone if there is no RGB
            parts.append(self.panel(obs["point_cloud"][0]))
        if not parts:
            log.warning("video requested but the env runner has no render_rgb() and no "
                        "image/point_cloud observation; no video is written")
            self.enabled = False
            return
        self.frames.append(side_by_side(*parts))


def evaluate_policy(policy, env_runner, num_episodes: int, seed: int | None = 0,
                    seeds: list[int] | None = None, max_steps: int | None = None,
                    device: str | torch.device | None = None,
                    video_path: str | os.PathLike | None = None, num_video_episodes: int = 1,
                    video_point_cloud: bool = False, video_fps: int = 20,
                    progress: bool = True) -> dict[str, Any]:
    """Run ``num_episodes`` deterministic episodes; return success rate and per-episode records.

    ``seeds`` (one per env) or ``seed`` (env i gets ``seed + i``) are passed to
    ``env_runner.seed`` when the runner has it; ``seed`` also seeds the policy's initial noise
    (inside ``torch.random.fork_rng``: the caller's RNG streams are left untouched).
    ``max_steps`` caps an episode's length (default: the runner's ``max_episode_steps``, else
    1000); an episode cut by the cap ends there (``truncated``; a success only if it already
    succeeded) and the env's remaining steps of it are ignored. An episode succeeds if any of
    its steps reports ``success``. Returns ``success_rate, ci_low, ci_high`` (95 % Wilson), ``num_successes,
    mean_return, mean_length, num_episodes, num_env_steps, wall_time_s, video_path, episodes``.
    """
    num_envs = int(env_runner.num_envs)
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if seeds is None and seed is not None:
        seeds = [seed + i for i in range(num_envs)]
    if seeds is not None:
        if len(seeds) != num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {num_envs} envs")
        if hasattr(env_runner, "seed"):
            env_runner.seed([int(s) for s in seeds])
    max_steps = int(max_steps or getattr(env_runner, "max_episode_steps", None)
                    or DEFAULT_MAX_STEPS)
    device = torch.device(device) if device is not None else _policy_device(policy)
    was_training = policy.training
    policy.eval()
    recorder = _FrameRecorder(env_runner, video_point_cloud) if video_path else None
    start = time.time()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(0 if seed is None else seed)
            records, num_steps = _run_episodes(policy, env_runner, num_episodes, max_steps,
                                               device, recorder, num_video_episodes, progress)
    finally:
        policy.train(was_training)

    successes = sum(r["success"] for r in records)
    low, high = wilson_interval(successes, len(records))
    written = None
    if recorder is not None and recorder.frames:
        written = str(save_video(recorder.frames, video_path, fps=video_fps))
    return {
        "success_rate": successes / len(records), "ci_low": low, "ci_high": high,
        "num_successes": int(successes),
        "mean_return": float(np.mean([r["return"] for r in records])),
        "mean_length": float(np.mean([r["length"] for r in records])),
        "num_episodes": len(records), "num_env_steps": num_steps,
        "wall_time_s": time.time() - start, "video_path": written, "episodes": records,
    }


def _run_episodes(policy, env_runner, num_episodes, max_steps, device, recorder,
                  num_video_episodes, progress) -> tuple[list[dict], int]:
    num_envs = int(env_runner.num_envs)
    quotas = np.array([num_episodes // num_envs + (i < num_episodes % num_envs)
                       for i in range(num_envs)])
    obs_meta = getattr(policy, "shape_meta", None)
    n_obs = int(policy.n_obs_steps)
    obs = env_runner.reset()
    if obs_meta is not None:
        validate_obs_dict(obs, obs_meta, num_envs=num_envs, where="env_runner.reset() obs")
    keys = list(obs_meta["obs"]) if obs_meta is not None else list(obs)
    history = {k: np.repeat(np.asarray(obs[k])[:, None], n_obs, axis=1) for k in keys}

    ep_return = np.zeros(num_envs)
    ep_length = np.zeros(num_envs, dtype=np.int64)
    ep_success = np.zeros(num_envs, dtype=bool)
    counted = np.zeros(num_envs, dtype=np.int64)
    skipping = np.zeros(num_envs, dtype=bool)  # rest of an episode cut by max_steps
    video_limit = min(num_video_episodes, int(quotas[0]))
    records: list[dict] = []
    num_steps, step_cap = 0, max_steps * (int(quotas.max()) + 1) * 3
    if recorder is not None and video_limit > 0:
        recorder.capture(obs)
    bar = tqdm(total=num_episodes, desc="eval", disable=not progress, leave=False)

    while (counted < quotas).any():
        obs_t = {k: torch.as_tensor(v, device=device, dtype=None if v.dtype == np.uint8
                                    else torch.float32)   # uint8 images stay 0..255
                 for k, v in history.items()}
        with torch.no_grad():
            actions = policy.predict_action(obs_t)["action"].detach().cpu().numpy()
        for j in range(actions.shape[1]):
            out = normalize_step_output(env_runner.step(actions[:, j]), num_envs)
            num_steps += 1
            ep_return += out.rewards
            ep_length += 1
            ep_success |= out.success
            cut = ~out.dones & ~skipping & (ep_length >= max_steps)
            for i in np.flatnonzero(out.dones | cut):
                if not skipping[i] and counted[i] < quotas[i]:
                    records.append({"env": int(i), "episode": int(counted[i]),
                                    "success": bool(ep_success[i]),
                                    "return": float(ep_return[i]),
                                    "length": int(ep_length[i]),
                                    "truncated": bool(out.truncated[i] or cut[i])})
                    counted[i] += 1
                    bar.update(1)
                    bar.set_postfix(success=f"{np.mean([r['success'] for r in records]):.2f}")
                ep_return[i], ep_length[i], ep_success[i] = 0.0, 0, False
            skipping = (skipping | cut) & ~out.dones
            for k in keys:
                new = np.asarray(out.obs[k])
                history[k] = np.concatenate([history[k][:, 1:], new[:, None]], axis=1)
                history[k][out.dones] = new[out.dones][:, None]
            if recorder is not None and counted[0] < video_limit and not skipping[0]:
                recorder.capture(out.obs)
            if num_steps > step_cap:
                raise RuntimeError(
                    f"evaluation did not finish within {step_cap} env steps: the env runner "
                    f"does not end episodes (no time limit?) ; got {len(records)} of "
                    f"{num_episodes} episodes")
            if (out.dones & (counted < quotas)).any() or (counted >= quotas).all():
                break  # re-plan: the new episode must not run the old episode's chunk
    bar.close()
    records.sort(key=lambda r: (r["env"], r["episode"]))
    return records, num_steps


def load_policy_from_checkpoint(path: str | os.PathLike, use_ema: bool = True,
                                device: str | torch.device = "cpu"):
    """Build the policy stored in a pretraining, PPO or DSRL checkpoint (DSRL: the frozen policy
    steered by its latent actor); return ``(policy, payload)``.

    ``use_ema`` loads ``ema_state_dict`` when the checkpoint has one. Raises
    :class:`CheckpointError` for missing / corrupt / foreign files and incomplete payloads.
    """
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy

    payload = load_checkpoint_file(path, map_location="cpu",
                                   expected_kind=("pretrain", "ppo", "dsrl"))
    if payload["kind"] == "dsrl":   # the frozen policy steered by its latent actor
        from maniflow_rl.rl.dsrl.steered_policy import steered_policy_from_checkpoint

        return steered_policy_from_checkpoint(payload).to(device).eval(), payload
    missing = [k for k in ("shape_meta", "policy_config", "policy_state_dict") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; cannot rebuild the policy")
    policy = ManiFlowPointcloudRLPolicy.from_config(payload["shape_meta"], payload["policy_config"])
    load_policy_weights(policy, payload, use_ema=use_ema)
    return policy.to(device).eval(), payload


def make_env_runner(task: str, num_envs: int = 1, seed: int = 0,
                    shape_meta: dict | None = None, **env_kwargs):
    """Env runner for a task name: ``metaworld/<task>``, ``robosuite/<task>`` or ``dummy``
    (needs ``shape_meta``)."""
    benchmark, _, name = task.partition("/")
    if benchmark in ("metaworld", "robosuite") and name:
        from maniflow_rl.envs.vector.runner import PointCloudEnvRunner
        from maniflow_rl.envs.metaworld.env import privileged_state_for

        if privileged_state_for(shape_meta):   # a policy that observes full_state
            env_kwargs = {**env_kwargs, "privileged_state": True}
        return PointCloudEnvRunner(task, num_envs=num_envs, seed=seed, **env_kwargs)
    if task == "dummy":
        from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner

        if shape_meta is None:
            raise ValueError("task 'dummy' needs shape_meta")
        return ManiFlowDummyEnvRunner(shape_meta, num_envs=num_envs, seed=seed, **env_kwargs)
    raise ValueError(f"unknown task {task!r}; expected 'metaworld/<task-name>' (e.g. "
                     f"metaworld/button-press), 'robosuite/<task-name>' (lift, can, square) or "
                     f"'dummy'")

