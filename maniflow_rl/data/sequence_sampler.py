"""Fixed-length windows over concatenated episodes (diffusion_policy's ``SequenceSampler``).

Each window has ``sequence_length`` frames. Windows may start up to ``pad_before`` frames before
an episode's first frame and end up to ``pad_after`` frames after its last frame; the missing
frames are filled by repeating the episode's first / last frame. With ``n_obs_steps = To`` and
``n_action_steps = Ca`` the usual choice is ``pad_before = To - 1`` and ``pad_after = Ca - 1``, so
that every frame of every episode can be the "now" frame of a window while no window needs more
padding than the policy would see at an episode's edge.

Each index row is ``(buffer_start, buffer_end, sample_start, sample_end)``: frames
``buffer[buffer_start:buffer_end]`` go to ``window[sample_start:sample_end]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from maniflow_rl.data.replay_buffer import ReplayBuffer


def create_indices(episode_ends: np.ndarray, sequence_length: int, pad_before: int = 0,
                   pad_after: int = 0, episode_mask: np.ndarray | None = None) -> np.ndarray:
    """Index rows ``[n_windows, 4]`` (int64) of all windows of the masked episodes, in order.

    Same windows, in the same order, as diffusion_policy's numba ``create_indices``; built with
    numpy instead of a per-window Python loop.
    """
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
    episode_ends = np.asarray(episode_ends, dtype=np.int64)
    if episode_mask is None:
        episode_mask = np.ones(len(episode_ends), dtype=bool)
    episode_mask = np.asarray(episode_mask, dtype=bool)
    if episode_mask.shape != episode_ends.shape:
        raise ValueError(f"episode_mask shape {episode_mask.shape} != episode_ends shape "
                         f"{episode_ends.shape}")
    pad_before = min(max(pad_before, 0), sequence_length - 1)
    pad_after = min(max(pad_after, 0), sequence_length - 1)

    starts_of_episodes = np.concatenate([[0], episode_ends[:-1]]).astype(np.int64)
    lengths = episode_ends - starts_of_episodes
    # window start offsets idx (relative to the episode start) run over [min_start, max_start]
    n_windows = np.maximum(lengths - sequence_length + pad_after + pad_before + 1, 0)
    n_windows = np.where(episode_mask, n_windows, 0)
    total = int(n_windows.sum())
    if total == 0:
        return np.zeros((0, 4), dtype=np.int64)
    episode_of_window = np.repeat(np.arange(len(episode_ends)), n_windows)
    first_window = np.cumsum(n_windows) - n_windows
    idx = np.arange(total) - first_window[episode_of_window] - pad_before
    ep_start = starts_of_episodes[episode_of_window]
    ep_len = lengths[episode_of_window]

    buffer_start = np.maximum(idx, 0) + ep_start
    buffer_end = np.minimum(idx + sequence_length, ep_len) + ep_start
    sample_start = buffer_start - (idx + ep_start)
    sample_end = sequence_length - ((idx + sequence_length + ep_start) - buffer_end)
    return np.stack([buffer_start, buffer_end, sample_start, sample_end], axis=1).astype(np.int64)


def get_val_mask(n_episodes: int, val_ratio: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of validation episodes (diffusion_policy): at least one validation and one
    training episode when ``val_ratio > 0``."""
    val_mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio <= 0 or n_episodes == 0:
        return val_mask
    if n_episodes < 2:
        raise ValueError(f"val_ratio={val_ratio} needs at least 2 episodes, dataset has "
                         f"{n_episodes}")
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    rng = np.random.default_rng(seed=seed)
    val_mask[rng.choice(n_episodes, size=n_val, replace=False)] = True
    return val_mask


def downsample_mask(mask: np.ndarray, max_n: int | None, seed: int = 0) -> np.ndarray:
    """Keep at most ``max_n`` of the True entries of ``mask`` (random, seeded)."""
    mask = np.asarray(mask, dtype=bool)
    if max_n is None or mask.sum() <= max_n:
        return mask
    rng = np.random.default_rng(seed=seed)
    keep = rng.choice(np.nonzero(mask)[0], size=int(max_n), replace=False)
    out = np.zeros_like(mask)
    out[keep] = True
    return out


class SequenceSampler:
    """Windows of ``sequence_length`` frames over a :class:`ReplayBuffer`.

    ``key_first_k`` maps a key to the number of leading window frames that are actually read
    (e.g. observations: only ``n_obs_steps`` are used); the other frames of such keys are NaN
    (float) or zero and must not be used.
    """

    def __init__(self, replay_buffer: ReplayBuffer, sequence_length: int, pad_before: int = 0,
                 pad_after: int = 0, keys: list[str] | None = None,
                 key_first_k: Mapping[str, int] | None = None,
                 episode_mask: np.ndarray | None = None):
        self.replay_buffer = replay_buffer
        self.sequence_length = int(sequence_length)
        self.keys = list(replay_buffer.keys() if keys is None else keys)
        self.key_first_k = dict(key_first_k or {})
        self.indices = create_indices(replay_buffer.episode_ends, sequence_length,
                                      pad_before=pad_before, pad_after=pad_after,
                                      episode_mask=episode_mask)

    def __len__(self) -> int:
        return len(self.indices)

    def sample_sequence(self, idx: int) -> dict[str, np.ndarray]:
        buffer_start, buffer_end, sample_start, sample_end = (int(v) for v in self.indices[idx])
        result = {}
        for key in self.keys:
            arr = self.replay_buffer[key]
            n_data = buffer_end - buffer_start
            if key in self.key_first_k:  # read only the frames that will be used
                k = min(self.key_first_k[key], n_data)
                fill = np.nan if np.issubdtype(arr.dtype, np.floating) else 0
                sample = np.full((n_data,) + tuple(arr.shape[1:]), fill, dtype=arr.dtype)
                sample[:k] = arr[buffer_start: buffer_start + k]
            else:
                sample = np.asarray(arr[buffer_start:buffer_end])
            if sample_start > 0 or sample_end < self.sequence_length:
                data = np.empty((self.sequence_length,) + tuple(arr.shape[1:]), dtype=arr.dtype)
                data[:sample_start] = sample[0]
                data[sample_end:] = sample[-1]
                data[sample_start:sample_end] = sample
                sample = data
            result[key] = sample
        return result
