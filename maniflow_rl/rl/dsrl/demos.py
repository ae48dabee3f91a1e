"""Demonstrations as chunk transitions for the replay buffer (DSRL-NA: a demo chunk is a valid
transition for the action critic Q^A; it has no latent noise).

For an episode of length L with actions ``a_0..a_{L-1}`` (it ends at its first success, after
``a_{L-1}``), every start ``t`` gives one transition: observation frames ``t-To+1 .. t`` (the
first frame repeated before the start), chunk ``a_t .. a_{t+Ca-1}`` (the last action repeated
past the end), reward 1 and ``terminated`` iff the chunk reaches the success (``t + Ca >= L``),
next observation frames ending at ``t + Ca`` (sparse-reward convention of the MetaWorld envs).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def _frames(array: np.ndarray, start: int, stop: int, first: int, last: int) -> np.ndarray:
    """Rows ``start..stop-1`` of ``array`` clipped to the episode rows ``[first, last]``."""
    return array[np.clip(np.arange(start, stop), first, last)]


def demo_chunk_transitions(dataset, n_obs_steps: int, n_action_steps: int
                           ) -> Iterator[dict[str, np.ndarray | float]]:
    """Yield ``{'obs', 'next_obs' ({key: [To, *shape]}), 'action' [Ca, Da], 'reward',
    'terminated'}`` for every start of every training episode of a
    :class:`~maniflow_rl.data.dataset.PointCloudSequenceDataset`."""
    buffer = dataset.replay_buffer
    arrays = {o: dataset._to_obs(o, np.asarray(buffer[z][:])) for z, o in dataset.key_map.items()}
    actions = np.asarray(buffer["action"][:], dtype=np.float32)
    for episode in np.nonzero(dataset.train_mask)[0]:
        rows = buffer.episode_slice(int(episode))
        first, last = rows.start, rows.stop - 1
        length = rows.stop - rows.start
        for t in range(length):
            now = first + t
            success = t + n_action_steps >= length
            yield {
                "obs": {k: _frames(v, now - n_obs_steps + 1, now + 1, first, last)
                        for k, v in arrays.items()},
                "next_obs": {k: _frames(v, now + n_action_steps - n_obs_steps + 1,
                                        now + n_action_steps + 1, first, last)
                             for k, v in arrays.items()},
                "action": _frames(actions, now, now + n_action_steps, first, last),
                "reward": float(success),
                "terminated": float(success),
            }
