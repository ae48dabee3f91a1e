"""Can latent steering help a given policy? Two measurements, as small pure functions.

1. **Steering authority** of the frozen flow policy ``a = f(s, w)``: how far the executed chunk
   moves when only the initial noise changes, against how far it moves between states. For
   observations ``s_b`` and ``M`` noises each, normalized chunks ``a[b, j]``::

       within  = mean_b mean_d  std_j a[b, j, d]       (the noise's reach at one state)
       between = mean_d std_b  mean_j a[b, j, d]       (the state's reach)

   A policy that imitated deterministic scripted demos closely maps all of ``N(0, I)`` to nearly
   one chunk (within << between): the actor then has little to choose from.

2. **Does the action critic rank actions?** On a finished run's replay (transition ``i`` of env
   ``i mod E``, vector step ``i div E``), the Monte-Carlo return of each transition::

       G_i = R_i + gamma_i * G_{i+E}     if the episode continues at i + E
       G_i = R_i                         otherwise (terminated, truncated, or buffer end)

   ``V(s_i) = mean_j Q^A(s_i, f(s_i, w_j))`` over the stored alias pairs. The critic tracks
   values when ``corr(Q^A(s_i, a_i), G_i)`` is high; it ranks actions only if its advantage
   ``Q^A(s_i, a_i) - V(s_i)`` correlates with the realized ``G_i - V(s_i)``.
"""

from __future__ import annotations

import numpy as np


def chunk_spread(chunks: np.ndarray) -> dict[str, float]:
    """``within`` / ``between`` spread (module docstring) of chunks ``[B, M, D]``."""
    chunks = np.asarray(chunks, dtype=np.float64)
    if chunks.ndim != 3 or chunks.shape[0] < 2 or chunks.shape[1] < 2:
        raise ValueError(f"chunks must be [B >= 2, M >= 2, D], got {list(chunks.shape)}")
    within = float(chunks.std(axis=1).mean())
    between = float(chunks.mean(axis=1).std(axis=0).mean())
    return {"within": within, "between": between, "ratio": within / max(between, 1e-12)}


def episode_continues(features: np.ndarray, next_features: np.ndarray, terminated: np.ndarray,
                      num_envs: int, atol: float = 1e-5) -> np.ndarray:
    """``[N]`` bool: transition ``i``'s episode goes on at ``i + num_envs`` (not terminated, and
    that transition starts where ``i`` ended: a reset or the end of the buffer breaks it)."""
    n = len(terminated)
    out = np.zeros(n, dtype=bool)
    if n > num_envs:
        same = np.isclose(next_features[:-num_envs], features[num_envs:], atol=atol).all(axis=1)
        out[:-num_envs] = same & (np.asarray(terminated[:-num_envs]) == 0)
    return out


def monte_carlo_returns(rewards: np.ndarray, discounts: np.ndarray, continues: np.ndarray,
                        num_envs: int) -> np.ndarray:
    """``G_i = R_i + gamma_i G_{i+E}`` where ``continues[i]``, else ``R_i`` (``[N]`` float)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    returns = rewards.copy()
    for i in range(len(rewards) - num_envs - 1, -1, -1):
        if continues[i]:
            returns[i] += discounts[i] * returns[i + num_envs]
    return returns


def critic_ranking(q_executed: np.ndarray, q_aliases: np.ndarray,
                   returns: np.ndarray) -> dict[str, float]:
    """How the critic's values and advantages match realized returns (module docstring).

    ``q_executed [N]``: Q^A of the executed chunks; ``q_aliases [N, M]``: of the alias chunks;
    ``returns [N]``: Monte-Carlo returns of the same transitions."""
    q_executed, returns = np.asarray(q_executed, float), np.asarray(returns, float)
    values = np.asarray(q_aliases, float).mean(axis=1)
    advantage, residual = q_executed - values, returns - values

    def corr(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")

    return {"corr_q_return": corr(q_executed, returns),
            "corr_advantage_residual": corr(advantage, residual),
            "q_std_between_states": float(values.std()),
            "q_std_within_state": float(np.asarray(q_aliases, float).std(axis=1).mean()),
            "residual_std": float(residual.std()),
            "mean_return": float(returns.mean()), "mean_q": float(q_executed.mean())}
