"""ManiFlowRolloutCollector: runs the policy in an env runner and records a RolloutBatch.

One decision point = the policy sees the last ``To`` observation frames of every env and returns a
chunk of ``Ca`` actions, executed sub-step by sub-step (docs/ARCHITECTURE.md).

Chunk semantics (execute-and-hold): when an env's episode ends at sub-step ``j`` of a chunk, the
decision point's reward is the sum of the sub-step rewards up to and including ``j``, and
``dones = 1`` (``truncated = 1`` for a time limit). The env (auto-reset by the runner) is then
*held* for the chunk's remaining sub-steps (``step(actions, active=mask)``, envs/base.py; a
runner with ``step_chunk`` applies this rule itself and runs the chunk in one request): it is
not stepped, so the new episode starts at the next decision point from its reset frame,
repeated ``To`` times in the observation history, and never runs the old episode's leftover
actions (hammer-v3, imitation policy: 31 % of training episodes succeeded with the leftovers,
75 % without; evaluation: 76 %). A runner
without ``accepts_active_mask`` (e.g. a gymnasium vector env) cannot skip an env: it steps
the leftover actions in the new episode, their rewards are masked (counted in no decision
point) and their frames continue the history. Episode statistics (returns, lengths, success)
count every real env sub-step; an episode is a success if any of its sub-steps reported
``success``.

Fresh-episode rollouts (``collect(..., fresh_episodes=True)``, used for GRPO): the runner is
reset first (the caller seeds it, so that the envs of one group attempt the same layout), and
each env attempts exactly one episode. Once its episode has ended, the env is idle until the
rollout ends: held when the runner can (otherwise still stepped and auto-reset), its decision
points get ``mask = 0``, reward 0 and no done, and its later episodes are not counted.

Time limits: on truncation the value of the final observation history (history shifted by the
``final_obs`` frame) is recorded in ``final_values`` for bootstrapping. ``max_steps_per_episode``
is also enforced here: an episode that reaches it without the env ending is truncated for
bookkeeping (``dones = truncated = 1``, bootstrap from the current observation, history restarts
from the current frame). The env runner has no per-env reset, so that env simply continues.

Bad env values (NaN, inf, ``|x| > max_abs_env_value``) in rewards, observations and the used
``final_obs`` rows are caught at the step (``rl/env_input_guard.py``): an error naming the env,
the key and the step (``nonfinite_policy="error"``, default), or with ``"drop"`` the reward
counts 0, the bad frame is replaced by the env's previous frame, the decision point is marked
(``ChunkOutcome.dropped``; ``mask = 0`` in the batch) and counted (``nonfinite_dropped``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from maniflow_rl.envs.base import (accepts_active_mask, normalize_step_output, runs_chunks,
                                   validate_obs_dict)
from maniflow_rl.rl.batch import RolloutBatch
from maniflow_rl.rl.env_input_guard import DEFAULT_MAX_ABS_ENV_VALUE, EnvInputGuard


@dataclass
class CollectorConfig:
    max_steps_per_episode: int = 1000   # env sub-steps
    action_chunk_size: int = 8          # must equal policy.n_action_steps (Ca)
    obs_chunk_size: int = 2             # must equal policy.n_obs_steps (To)


@dataclass
class ChunkOutcome:
    """What executing one action chunk produced, per env ([num_envs] arrays)."""

    rewards: np.ndarray
    dones: np.ndarray
    truncated: np.ndarray
    counted_steps: int = 0      # sub-steps whose reward counts (summed over envs)
    executed_steps: int = 0     # sub-steps the envs ran (held envs excluded), summed over envs
    dropped: np.ndarray | None = None   # bool [num_envs]: transition dropped (bad env value)
    nonfinite_dropped: int = 0  # env sub-steps with a bad value in this chunk (drop mode)
    final_history_envs: list[int] = field(default_factory=list)
    final_histories: list[dict[str, np.ndarray]] = field(default_factory=list)  # [To, *shape]


class ManiFlowRolloutCollector:
    """Collect RolloutBatches from an env runner with a ManiFlow RL policy (chunked execution)."""

    def __init__(self, policy: Any, env_runner: Any, config: CollectorConfig | None = None,
                 device: str | torch.device = "cpu", group_size: int = 1,
                 nonfinite_policy: str = "error",
                 max_abs_env_value: float | None = DEFAULT_MAX_ABS_ENV_VALUE,
                 extra_obs_keys: tuple[str, ...] = ()):
        """``nonfinite_policy`` (``"error"`` | ``"drop"``) and ``max_abs_env_value`` (None:
        finiteness only): what a bad env value does, see the module docstring.
        ``extra_obs_keys``: env observation keys kept in the history besides the policy's
        (e.g. ``full_state`` for an asymmetric critic); the policy never reads them."""
        if config is None:
            config = CollectorConfig(action_chunk_size=policy.n_action_steps,
                                     obs_chunk_size=policy.n_obs_steps)
        if config.action_chunk_size != policy.n_action_steps:
            raise ValueError(f"CollectorConfig.action_chunk_size={config.action_chunk_size} but "
                             f"policy.n_action_steps={policy.n_action_steps}; they must be equal")
        if config.obs_chunk_size != policy.n_obs_steps:
            raise ValueError(f"CollectorConfig.obs_chunk_size={config.obs_chunk_size} but "
                             f"policy.n_obs_steps={policy.n_obs_steps}; they must be equal")
        if config.max_steps_per_episode < 1 or group_size < 1:
            raise ValueError("max_steps_per_episode and group_size must be >= 1")
        self.policy = policy
        self.env_runner = env_runner
        self.config = config
        self.device = torch.device(device)
        self.group_size = int(group_size)
        self.num_envs = int(env_runner.num_envs)
        self.obs_keys = list(policy.shape_meta["obs"])
        self.obs_keys += [k for k in extra_obs_keys if k not in self.obs_keys]
        self.episode_stats: dict[str, Any] = {}
        self.guard = EnvInputGuard(nonfinite_policy, max_abs_env_value)
        self.vector_steps = 0           # env.step calls made by this collector (error messages)
        self.nonfinite_dropped = 0      # env sub-steps with a bad value dropped, in total
        self._history: dict[str, np.ndarray] | None = None   # key -> [N, To, *shape]
        self._runner_holds = accepts_active_mask(env_runner)
        self._runner_runs_chunks = runs_chunks(env_runner)
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._episode_success = np.zeros(self.num_envs, dtype=bool)

    # ------------------------------------------------------------------ observation history
    def _frame(self, obs: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
        """Validate one env frame against policy.shape_meta; keep its keys, float64 -> float32."""
        validate_obs_dict(obs, self.policy.shape_meta, self.num_envs, where=where)
        missing = [key for key in self.obs_keys if key not in obs]
        if missing:
            raise ValueError(f"{where} lacks the extra observation key(s) {missing} the "
                             f"collector keeps (got keys {sorted(obs)})")
        frame = {}
        for key in self.obs_keys:
            value = np.asarray(obs[key])
            frame[key] = value.astype(np.float32) if value.dtype == np.float64 else value
        return frame

    def _restart_history(self, history: dict[str, np.ndarray], frame: dict[str, np.ndarray],
                         envs: np.ndarray) -> None:
        """In place: rows ``envs`` (bool mask) become ``frame`` repeated To times."""
        for key in self.obs_keys:
            history[key][envs] = frame[key][envs][:, None]

    def _push_frame(self, history: dict[str, np.ndarray],
                    frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """New history with the oldest frame dropped and ``frame`` appended (no aliasing)."""
        return {key: np.concatenate([history[key][:, 1:], frame[key][:, None]], axis=1)
                for key in self.obs_keys}

    def _drop_bad_rows(self, frame: dict[str, np.ndarray], bad: np.ndarray,
                       fallback: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``frame`` with rows ``bad`` (bool mask) replaced by ``fallback``'s (copies)."""
        if not bad.any():
            return frame
        out = {}
        for key in self.obs_keys:
            out[key] = np.array(frame[key], copy=True)
            out[key][bad] = fallback[key][bad]
        return out

    def _last_frame(self) -> dict[str, np.ndarray]:
        return {key: value[:, -1] for key, value in self._history.items()}

    def _to_policy(self, history: dict[str, np.ndarray]) -> dict[str, Tensor]:
        return {key: torch.tensor(value, device=self.device) for key, value in history.items()}

    def reset(self) -> None:
        """Reset the env runner, the observation histories and the running episode stats."""
        frame = self._frame(self.env_runner.reset(), "env reset observation")
        bad = self.guard.inspect(frame, "from reset()")
        fallback = (self._last_frame() if self._history is not None else
                    {key: np.zeros_like(value) for key, value in frame.items()})
        frame = self._drop_bad_rows(frame, bad, fallback)
        self.nonfinite_dropped += int(bad.sum())
        steps = self.config.obs_chunk_size
        self._history = {key: np.repeat(value[:, None], steps, axis=1)
                         for key, value in frame.items()}
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._episode_success[:] = False

    # ------------------------------------------------------------------ one chunk
    def _execute_chunk(self, actions: np.ndarray, finished: list[dict[str, Any]],
                       active: np.ndarray) -> ChunkOutcome:
        """Execute ``actions [N, Ca, Da]`` sub-step by sub-step (see module docstring); envs
        outside the bool mask ``active`` are idle: nothing they do is counted."""
        num_envs = self.num_envs
        outcome = ChunkOutcome(rewards=np.zeros(num_envs, np.float32),
                               dones=np.zeros(num_envs, bool), truncated=np.zeros(num_envs, bool),
                               dropped=np.zeros(num_envs, bool))
        dropped_before = self.nonfinite_dropped
        counted = active.copy()   # False for idle envs and after this chunk's first done
        holds = self._runner_holds
        stepping = active.copy() if holds else np.ones(num_envs, dtype=bool)
        # a runner with step_chunk runs the chunk in one request, holding by the rule below
        chunk_outputs = (self.env_runner.step_chunk(actions, active=stepping.copy())
                         if self._runner_runs_chunks else None)
        for sub_step in range(actions.shape[1]):
            raw = (chunk_outputs[sub_step] if chunk_outputs is not None else
                   self.env_runner.step(actions[:, sub_step], active=stepping.copy()) if holds
                   else self.env_runner.step(actions[:, sub_step]))
            step = normalize_step_output(raw, num_envs)
            self.vector_steps += 1
            outcome.executed_steps += int(stepping.sum())
            frame = self._frame(step.obs, "env step observation")
            at_step = f"at env step {self.vector_steps}"
            bad = self.guard.inspect({"reward": step.rewards, **frame}, f"from step() {at_step}")
            if bad.any():   # drop mode: reward 0, previous frame, transition marked
                step.rewards = np.where(bad, 0.0, step.rewards).astype(np.float32)
                frame = self._drop_bad_rows(frame, bad, self._last_frame())
                outcome.dropped |= bad & counted
            bad_this_step = bad
            self._episode_return += step.rewards
            self._episode_length += stepping
            self._episode_success |= step.success

            over_limit = ~step.dones & (self._episode_length >= self.config.max_steps_per_episode)
            ended = step.dones | over_limit
            truncated = step.truncated | over_limit
            outcome.rewards += np.where(counted, step.rewards, 0.0).astype(np.float32)
            outcome.counted_steps += int(counted.sum())
            outcome.dones |= counted & ended
            outcome.truncated |= counted & truncated

            bootstrap_envs = np.flatnonzero(counted & truncated)
            if bootstrap_envs.size:
                final_frame = {k: v.copy() for k, v in
                               self._frame(step.final_obs, "env step final_obs").items()}
                for key in self.obs_keys:
                    final_frame[key][over_limit] = frame[key][over_limit]
                bad = self.guard.inspect(final_frame, f"in final_obs of step() {at_step}",
                                         only=counted & truncated)
                if bad.any():
                    final_frame = self._drop_bad_rows(final_frame, bad, self._last_frame())
                    outcome.dropped |= bad
                    bad_this_step = bad_this_step | bad
                final_history = self._push_frame(self._history, final_frame)
                for env in bootstrap_envs:
                    outcome.final_history_envs.append(int(env))
                    outcome.final_histories.append({k: v[env] for k, v in final_history.items()})

            for env in np.flatnonzero(ended & active & (self._episode_length > 0)):
                finished.append({"env": int(env), "return": float(self._episode_return[env]),
                                 "length": int(self._episode_length[env]),
                                 "success": bool(self._episode_success[env])})
            self._episode_return[ended] = 0.0
            self._episode_length[ended] = 0
            self._episode_success[ended] = False

            self._history = self._push_frame(self._history, frame)
            self._restart_history(self._history, frame, ended)
            counted &= ~ended
            if holds:   # the new episode waits for the next decision point
                stepping &= ~step.dones
            self.nonfinite_dropped += int(bad_this_step.sum())
        outcome.nonfinite_dropped = self.nonfinite_dropped - dropped_before
        return outcome

    def _sample(self, mode: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        obs = self._to_policy(self._history)
        with torch.no_grad():
            out = self.policy.sample_actions(obs, mode=mode)
        expected = (self.num_envs, self.config.action_chunk_size, self.policy.action_dim)
        if tuple(out["actions"].shape) != expected:
            raise ValueError(f"policy.sample_actions returned actions of shape "
                             f"{tuple(out['actions'].shape)}, expected {expected}")
        if not bool(torch.isfinite(out["actions"]).all()):
            raise FloatingPointError("policy.sample_actions returned non-finite actions (are "
                                     "the policy's weights finite?); they are not sent to the envs")
        return obs, out

    def _values(self, histories: dict[str, np.ndarray]) -> Tensor:
        with torch.no_grad():
            return self.policy.get_value(self._to_policy(histories)).reshape(-1).float()

    # ------------------------------------------------------------------ public API
    def observation(self) -> dict[str, Tensor]:
        """The policy input of the current decision point: ``{key: [N, To, *shape]}``."""
        if self._history is None:
            self.reset()
        return self._to_policy(self._history)

    def execute(self, actions: np.ndarray) -> tuple[ChunkOutcome, list[dict[str, Any]]]:
        """Execute one chunk ``actions [N, Ca, Da]`` in every env (module docstring); return
        the outcome and the episodes that finished in it. For off-policy collection."""
        expected = (self.num_envs, self.config.action_chunk_size, self.policy.action_dim)
        if tuple(np.shape(actions)) != expected:
            raise ValueError(f"actions have shape {tuple(np.shape(actions))}, expected {expected}")
        if self._history is None:
            self.reset()
        finished: list[dict[str, Any]] = []
        outcome = self._execute_chunk(np.asarray(actions), finished,
                                      np.ones(self.num_envs, dtype=bool))
        return outcome, finished

    def collect(self, num_decision_steps: int, mode: str = "train",
                fresh_episodes: bool = False) -> tuple[RolloutBatch, dict[str, Any]]:
        """Run ``num_decision_steps`` decision points in every env.

        ``fresh_episodes``: reset the runner first and let each env attempt one episode, idle
        after it ends (module docstring). Returns ``(batch, stats)``; ``stats`` has
        ``episode_returns`` / ``episode_lengths`` / ``episode_successes`` (lists over episodes
        finished during this call), ``num_episodes``, ``env_steps`` (sub-steps summed over envs),
        ``active_env_steps`` (those of non-idle envs), ``executed_env_steps`` (those the envs
        ran, held envs excluded: the env interaction really spent), ``nonfinite_dropped`` (env
        sub-steps with a bad value, drop mode), ``rollout_time`` and ``sps``.
        """
        if self._history is None or fresh_episodes:
            self.reset()
        active = np.ones(self.num_envs, dtype=bool)
        active_steps = executed_steps = 0
        masks = []
        start = time.perf_counter()
        finished: list[dict[str, Any]] = []
        records: dict[str, list] = {name: [] for name in (
            "obs", "chains", "denoise_inds", "actions", "logprobs", "values", "rewards",
            "dones", "truncated")}
        bootstrap_steps, bootstrap_envs, bootstrap_histories = [], [], []
        dropped_before = self.nonfinite_dropped
        for t in range(num_decision_steps):
            obs, out = self._sample(mode)
            step_mask = active.copy()
            outcome = self._execute_chunk(out["actions"].detach().cpu().numpy(), finished, active)
            masks.append(torch.tensor(step_mask & ~outcome.dropped, dtype=torch.float32,
                                      device=self.device))
            active_steps += outcome.counted_steps
            executed_steps += outcome.executed_steps
            if fresh_episodes:
                active &= ~outcome.dones
            records["obs"].append(obs)
            for name in ("chains", "denoise_inds", "actions", "logprobs"):
                records[name].append(out[name].detach().to(self.device))
            values = out.get("values")
            records["values"].append(torch.zeros(self.num_envs, device=self.device)
                                     if values is None else values.detach().to(self.device).float())
            for name in ("rewards", "dones", "truncated"):
                records[name].append(torch.tensor(getattr(outcome, name), dtype=torch.float32,
                                                  device=self.device))
            bootstrap_steps += [t] * len(outcome.final_history_envs)
            bootstrap_envs += outcome.final_history_envs
            bootstrap_histories += outcome.final_histories

        final_values = torch.zeros(num_decision_steps, self.num_envs, device=self.device)
        if bootstrap_histories:
            stacked = {k: np.stack([h[k] for h in bootstrap_histories]) for k in self.obs_keys}
            final_values[bootstrap_steps, bootstrap_envs] = self._values(stacked).to(self.device)
        batch = RolloutBatch(
            obs={k: torch.stack([o[k] for o in records["obs"]]) for k in self.obs_keys},
            **{name: torch.stack(records[name]) for name in records if name != "obs"},
            final_values=final_values,
            last_values=self._values(self._history).to(self.device),
            group_ids=torch.arange(self.num_envs, device=self.device) // self.group_size,
            mask=torch.stack(masks),
        )
        elapsed = time.perf_counter() - start
        env_steps = num_decision_steps * self.config.action_chunk_size * self.num_envs
        stats = {
            "episode_returns": [e["return"] for e in finished],
            "episode_lengths": [e["length"] for e in finished],
            "episode_successes": [e["success"] for e in finished],
            "num_episodes": len(finished),
            "env_steps": env_steps,
            "active_env_steps": int(active_steps),
            "executed_env_steps": int(executed_steps),
            "nonfinite_dropped": self.nonfinite_dropped - dropped_before,
            "rollout_time": elapsed,
            "sps": env_steps / max(elapsed, 1e-9),
        }
        self.episode_stats = stats
        return batch, stats


def group_layout_seeds(base_seed: int, rollout: int, num_envs: int, group_size: int) -> list[int]:
    """Reset seeds of one fresh-episode rollout: equal within a group of ``group_size`` envs,
    new for every ``rollout`` index: ``SeedSequence([base_seed, rollout, group])``."""
    if group_size < 1 or num_envs % group_size:
        raise ValueError(f"num_envs={num_envs} must be a multiple of group_size={group_size}")
    groups = [np.random.SeedSequence([int(base_seed), int(rollout), g]).generate_state(1)[0]
              for g in range(num_envs // group_size)]
    return [int(groups[i // group_size]) for i in range(num_envs)]
