"""Guard against non-finite or absurd values coming out of an env runner.

One NaN / inf reward or observation, or an observation of 1e30, from one env at one step is
enough to turn every weight into NaN after the next update. The rollout collector therefore
inspects every reward and every observation the policy reads, at the step they arrive:

- a value is *bad* when it is NaN, +-inf, or ``|x| > max_abs`` (``max_abs_env_value``,
  default 1e6; None checks finiteness only);
- ``policy="error"`` (default): raise :class:`NonFiniteEnvInputError` naming the env index, the
  observation key (or ``'reward'``) and the step;
- ``policy="drop"``: the bad transition is dropped and counted. Its reward counts as 0, a bad
  observation row is replaced by that env's previous frame (so the policy, the batch and the
  replay buffer only ever see finite values), and the collector marks the decision point
  (``mask = 0`` in a PPO batch, ``ChunkOutcome.dropped`` for off-policy consumers).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

NONFINITE_POLICIES = ("error", "drop")
DEFAULT_MAX_ABS_ENV_VALUE = 1e6


class NonFiniteEnvInputError(ValueError):
    """An env runner returned a NaN / inf / absurdly large reward or observation."""


def validate_guard_settings(policy: str, max_abs: float | None) -> None:
    """Raise ValueError for an unknown ``policy`` or a non-positive ``max_abs``."""
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite_policy must be one of {NONFINITE_POLICIES}, got {policy!r}")
    if max_abs is not None and not (float(max_abs) > 0):
        raise ValueError(f"max_abs_env_value must be > 0 (or None), got {max_abs!r}")


def bad_rows(value: np.ndarray, max_abs: float | None) -> np.ndarray:
    """Bool ``[N]``: rows (leading axis) of ``value`` holding a NaN, an inf, or an element with
    ``|x| > max_abs``. Bool arrays have no bad rows; integer arrays only too-large ones."""
    value = np.asarray(value)
    flat = value.reshape(value.shape[0], -1)
    if flat.dtype == bool or (max_abs is None and not np.issubdtype(flat.dtype, np.inexact)):
        return np.zeros(flat.shape[0], dtype=bool)
    if max_abs is None:
        return ~np.isfinite(flat).all(axis=1)
    # NaN compares False, so ``|x| <= max_abs`` is False for NaN, inf and too-large values
    return ~(np.abs(flat) <= max_abs).all(axis=1)


def describe_bad_value(row: np.ndarray, max_abs: float | None) -> str:
    """What is wrong with one row: ``'NaN'``, ``'inf'`` or ``'|x| = 1e+30 > 1e+06'``."""
    row = np.asarray(row, dtype=np.float64).ravel()
    if np.isnan(row).any():
        return "NaN"
    if np.isinf(row).any():
        return "inf"
    return f"|x| = {np.abs(row).max():.3g} > max_abs_env_value={max_abs:.3g}"


class EnvInputGuard:
    """Checks rewards and observation frames of one env runner (module docstring)."""

    def __init__(self, policy: str = "error", max_abs: float | None = DEFAULT_MAX_ABS_ENV_VALUE):
        validate_guard_settings(policy, max_abs)
        self.policy = policy
        self.max_abs = None if max_abs is None else float(max_abs)

    def inspect(self, values: Mapping[str, np.ndarray], where: str,
                only: np.ndarray | None = None) -> np.ndarray:
        """Bool ``[N]``: envs with a bad entry in any of ``values`` (``name -> [N, ...]``;
        the name ``'reward'`` stands for the rewards, any other for an observation key).

        ``only`` (bool ``[N]``) restricts the check to those rows (``final_obs`` rows of envs
        that did not end are arbitrary). In ``"error"`` mode the first bad entry raises
        :class:`NonFiniteEnvInputError` (``where`` says where it came from, e.g. ``'from
        step() at env step 17'``); in ``"drop"`` mode the bad envs are returned."""
        bad_any = np.zeros(0, dtype=bool)
        for name, value in values.items():
            bad = bad_rows(value, self.max_abs)
            if only is not None:
                bad &= only
            if bad.any() and self.policy == "error":
                env = int(np.flatnonzero(bad)[0])
                raise NonFiniteEnvInputError(self._message(name, env, value[env], where))
            bad_any = bad if bad_any.size == 0 else bad_any | bad
        return bad_any

    def _message(self, name: str, env: int, row: np.ndarray, where: str) -> str:
        what = "reward" if name == "reward" else f"observation '{name}'"
        return (f"env {env} returned a bad {what} {where}: "
                f"{describe_bad_value(row, self.max_abs)}. Non-finite or absurd env values stop "
                f"the run so that they cannot corrupt the weights; set nonfinite_policy='drop' "
                f"to drop such transitions instead (or change max_abs_env_value)")
