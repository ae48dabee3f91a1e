"""The env-runner interface (docs/ARCHITECTURE.md) and its validation helpers.

An env runner is a vectorized environment with auto-reset inside ``step``::

    reset() -> dict[str, np.ndarray]          each key [num_envs, *shape], one frame
    step(actions [num_envs, Da]) -> dict      obs, rewards, dones (+ truncated, success, final_obs)

Optional: a runner with ``accepts_active_mask = True`` takes ``step(actions, active=mask)``
(bool ``[num_envs]``) and *holds* the envs outside the mask: they are not stepped, their row of
``obs`` is their newest observation again, reward 0, no success, no done. The rollout collector
holds an env for the rest of a chunk once its episode has ended, so the new episode does not
start with the old episode's leftover actions; without the flag those sub-steps run in the new
episode (gymnasium vector envs cannot skip an env).

Optional, with the mask: ``step_chunk(actions [num_envs, Ca, Da], active=mask) -> list`` of
``Ca`` step dicts, an env held from the sub-step after its episode ends (the collector's
rule), in one request to the runner's workers instead of ``Ca``. The collector uses it only
when the class that defines ``step`` also defines ``step_chunk`` (``runs_chunks``): a
subclass or wrapper that overrides ``step`` keeps being stepped sub-step by sub-step.

``normalize_step_output`` validates a step dict and fills the optional keys, so consumers (the
rollout collector) can rely on every key being present.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

REQUIRED_STEP_KEYS = ("obs", "rewards", "dones")
PER_ENV_STEP_KEYS = ("rewards", "dones", "truncated", "success")
# the simulator state an env adds to its observations for asymmetric critics (never a policy
# input); MetaWorld's 39-d state, robosuite's proprio- + object-state
PRIVILEGED_KEY = "full_state"


@runtime_checkable
class EnvRunner(Protocol):
    """What the rollout collector needs from an environment (see module docstring).

    Optional members: ``seed(seeds)``, ``close()``, ``max_episode_steps``,
    ``accepts_active_mask`` with ``step(actions, active=None)``.
    """

    num_envs: int

    def reset(self) -> dict[str, np.ndarray]: ...

    def step(self, actions: np.ndarray) -> dict[str, Any]: ...


def obs_meta_of(shape_meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``shape_meta['obs']`` mapping (key -> {'shape': [...], 'type': ...})."""
    if "obs" not in shape_meta or not isinstance(shape_meta["obs"], Mapping):
        raise ValueError("shape_meta must have an 'obs' mapping: "
                         "{'obs': {key: {'shape': [...], 'type': ...}}, 'action': {'shape': [Da]}}")
    return shape_meta["obs"]


def validate_obs_dict(obs: Mapping[str, Any], shape_meta: Mapping[str, Any],
                      num_envs: int | None = None,
                      leading_dims: Sequence[int | None] | None = None,
                      where: str = "observation") -> None:
    """Check that ``obs`` has every key of ``shape_meta['obs']`` with shape
    ``[*leading_dims, *shape]``; extra keys are allowed.

    ``leading_dims`` defaults to ``(num_envs,)``; a None entry accepts any size. Raises
    ValueError naming the key, the expected and the actual shape.
    """
    if leading_dims is None:
        leading_dims = (num_envs,)
    if not isinstance(obs, Mapping):
        raise ValueError(f"{where} must be a dict of arrays, got {type(obs).__name__}")
    for key, meta in obs_meta_of(shape_meta).items():
        if key not in obs:
            raise ValueError(f"{where} is missing key '{key}' required by shape_meta "
                             f"(got keys {sorted(obs)})")
        expected = (*leading_dims, *meta["shape"])
        actual = tuple(np.shape(obs[key]))
        matches = len(actual) == len(expected) and all(
            e is None or e == a for e, a in zip(expected, actual))
        if not matches:
            shown = tuple("*" if e is None else e for e in expected)
            raise ValueError(f"{where}['{key}'] has shape {actual}, expected {shown} "
                             f"(leading dims {tuple(leading_dims)} + shape_meta shape "
                             f"{tuple(meta['shape'])})")


def validate_step_output(out: Mapping[str, Any], num_envs: int) -> None:
    """Check a ``step`` dict: required keys, ``[num_envs]`` per-env arrays, ``[num_envs, ...]``
    observations, and ``truncated`` only where ``dones``. Raises ValueError."""
    if not isinstance(out, Mapping):
        raise ValueError(f"env step must return a dict, got {type(out).__name__}")
    missing = [k for k in REQUIRED_STEP_KEYS if k not in out]
    if missing:
        raise ValueError(f"env step output is missing keys {missing} (got {sorted(out)})")
    for key in PER_ENV_STEP_KEYS:
        if key in out and tuple(np.shape(out[key])) != (num_envs,):
            raise ValueError(f"env step output '{key}' has shape {tuple(np.shape(out[key]))}, "
                             f"expected ({num_envs},)")
    for obs_name in ("obs", "final_obs"):
        if obs_name not in out:
            continue
        if not isinstance(out[obs_name], Mapping):
            raise ValueError(f"env step output '{obs_name}' must be a dict of arrays")
        for key, value in out[obs_name].items():
            if np.ndim(value) < 1 or np.shape(value)[0] != num_envs:
                raise ValueError(f"env step output {obs_name}['{key}'] has shape "
                                 f"{tuple(np.shape(value))}, expected leading dim {num_envs}")
    if "truncated" in out:
        stray = np.asarray(out["truncated"], bool) & ~np.asarray(out["dones"], bool)
        if stray.any():
            raise ValueError(f"env step output has truncated=True where dones=False "
                             f"(envs {np.flatnonzero(stray).tolist()})")


def accepts_active_mask(env_runner: Any) -> bool:
    """Whether ``env_runner.step`` holds envs: ``accepts_active_mask`` is set and ``step``
    takes an ``active`` argument (a subclass overriding ``step`` without it does not)."""
    if not getattr(env_runner, "accepts_active_mask", False):
        return False
    try:
        params = inspect.signature(env_runner.step).parameters
    except (TypeError, ValueError):
        return False
    return "active" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def runs_chunks(env_runner: Any) -> bool:
    """Whether the collector may hand whole chunks to ``env_runner.step_chunk`` (module
    docstring): it holds envs, and ``step_chunk`` is defined by the same class as ``step``
    (not reached through ``__getattr__``, not beside an overridden ``step``)."""
    def owner(name: str) -> type | None:
        return next((k for k in type(env_runner).__mro__ if name in vars(k)), None)

    chunk_owner = owner("step_chunk")
    return (chunk_owner is not None and chunk_owner is owner("step")
            and accepts_active_mask(env_runner))


def check_active_mask(active: Any, num_envs: int) -> np.ndarray:
    """``active`` of ``step(actions, active=...)`` as a bool ``[num_envs]`` array (None: all
    envs step). Raises ValueError for another shape."""
    if active is None:
        return np.ones(num_envs, dtype=bool)
    mask = np.asarray(active, dtype=bool)
    if mask.shape != (num_envs,):
        raise ValueError(f"active must be a bool mask of shape ({num_envs},), got {mask.shape}")
    return mask


@dataclass
class StepResult:
    """A validated env step with every optional key filled."""

    obs: dict[str, np.ndarray]
    rewards: np.ndarray          # float32 [num_envs]
    dones: np.ndarray            # bool [num_envs]
    truncated: np.ndarray        # bool [num_envs]
    success: np.ndarray          # bool [num_envs]
    final_obs: dict[str, np.ndarray]
    extras: dict[str, Any] = field(default_factory=dict)   # any other keys the env returned


def normalize_step_output(out: Mapping[str, Any], num_envs: int) -> StepResult:
    """Validate ``out`` and fill defaults: truncated=False, success=False, final_obs=obs."""
    validate_step_output(out, num_envs)
    obs = dict(out["obs"])
    known = {"obs", "rewards", "dones", "truncated", "success", "final_obs"}
    return StepResult(
        obs=obs,
        rewards=np.asarray(out["rewards"], dtype=np.float32),
        dones=np.asarray(out["dones"], dtype=bool),
        truncated=np.asarray(out.get("truncated", np.zeros(num_envs, bool)), dtype=bool),
        success=np.asarray(out.get("success", np.zeros(num_envs, bool)), dtype=bool),
        final_obs=dict(out.get("final_obs", obs)),
        extras={k: v for k, v in out.items() if k not in known},
    )
