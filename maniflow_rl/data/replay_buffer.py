"""Episode storage in the DP3 / ManiFlow zarr layout.

On disk a dataset is a zarr group::

    data/<key>          arrays of shape [n_steps, *shape], all episodes concatenated in time
    meta/episode_ends   int64 [n_episodes], exclusive end index of every episode

(the layout of diffusion_policy's and 3D Diffusion Policy's ``ReplayBuffer``). zarr format 2 and
format 3 stores are both readable; :meth:`ReplayBuffer.save_to_path` writes format 2 so that the
original DP3 / ManiFlow code can read our files too.

A :class:`ReplayBuffer` keeps its arrays either in memory (numpy, the default: ``create_empty``,
``copy_from_path``) or lazily in an open zarr group (``open_zarr``); both support
:meth:`add_episode`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr


class ReplayBufferError(ValueError):
    """A dataset is unreadable, lacks the DP3 layout, or has inconsistent array lengths."""


def _open_group(path: str | os.PathLike, mode: str, zarr_format: int | None = None):
    path = str(path)
    kwargs = {"zarr_format": zarr_format} if zarr_format is not None else {}
    if path.endswith(".zip"):
        store = zarr.storage.ZipStore(path, mode="r" if mode == "r" else "w")
        return zarr.open_group(store, mode=mode, **kwargs)
    return zarr.open_group(path, mode=mode, **kwargs)


def _create_array(group, name: str, data: np.ndarray, chunk_bytes: int = 1 << 22):
    """Create ``group[name]`` filled with ``data``, chunked along time only (~4 MiB chunks)."""
    step_bytes = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize)
    chunks = (max(1, min(len(data), chunk_bytes // step_bytes)),) + tuple(data.shape[1:])
    if hasattr(group, "create_array"):  # zarr >= 3
        return group.create_array(name, data=data, chunks=chunks, overwrite=True)
    return group.create_dataset(name, data=data, chunks=chunks, overwrite=True)  # zarr 2


def _check_episode_ends(episode_ends: np.ndarray, where: str) -> np.ndarray:
    ends = np.asarray(episode_ends)
    if ends.ndim != 1 or (ends.size and not np.issubdtype(ends.dtype, np.integer)):
        raise ReplayBufferError(f"{where}: episode_ends must be a 1-D integer array, "
                                f"got shape {ends.shape} dtype {ends.dtype}")
    ends = ends.astype(np.int64)
    if ends.size and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
        raise ReplayBufferError(f"{where}: episode_ends must be strictly increasing positive "
                                f"integers (no empty episodes), got {ends[:10]}...")
    return ends


class ReplayBuffer:
    """Concatenated episodes with ``episode_ends`` (see module docstring)."""

    def __init__(self, data: Mapping[str, Any], episode_ends: np.ndarray, *, group=None,
                 where: str = "replay buffer"):
        self._ends = _check_episode_ends(episode_ends, where)
        self._group = group  # zarr group (lazy backend) or None (numpy backend)
        self._data: dict[str, Any] = dict(data)
        n = self.n_steps
        for key, arr in self._data.items():
            if arr.shape[0] != n:
                raise ReplayBufferError(
                    f"{where}: inconsistent lengths: data/{key} has {arr.shape[0]} steps but "
                    f"meta/episode_ends says {n} ({self.n_episodes} episodes)")
        self._size = n  # rows in use (numpy arrays may have spare capacity)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create_empty(cls) -> ReplayBuffer:
        """An empty in-memory buffer; keys are defined by the first :meth:`add_episode`."""
        return cls({}, np.zeros(0, dtype=np.int64))

    @classmethod
    def copy_from_path(cls, path: str | os.PathLike, keys: list[str] | None = None) -> ReplayBuffer:
        """Read a DP3/ManiFlow zarr dataset (format 2 or 3, directory or .zip) into memory.

        ``keys`` selects the ``data/`` arrays to load (default: all).
        """
        group = cls._open_existing(path, mode="r")
        data_group, ends = cls._layout(group, path)
        available = sorted(data_group.keys())
        keys = available if keys is None else list(keys)
        missing = [k for k in keys if k not in available]
        if missing:
            raise ReplayBufferError(f"{path}: keys {missing} not in data/ (available: {available})")
        data = {k: np.asarray(data_group[k][:]) for k in keys}
        return cls(data, ends, where=str(path))

    @classmethod
    def open_zarr(cls, path: str | os.PathLike, mode: str = "r") -> ReplayBuffer:
        """Open a zarr dataset lazily (arrays are read on indexing); ``mode='a'`` allows appends.

        ``mode='w'`` creates a new empty format-2 dataset at ``path``.
        """
        if mode == "w":
            group = _open_group(path, mode="w", zarr_format=2)
            group.create_group("data")
            _create_array(group.create_group("meta"), "episode_ends", np.zeros(0, np.int64))
            return cls({}, np.zeros(0, np.int64), group=group, where=str(path))
        group = cls._open_existing(path, mode=mode)
        data_group, ends = cls._layout(group, path)
        data = {k: data_group[k] for k in data_group.keys()}
        return cls(data, ends, group=group, where=str(path))

    @staticmethod
    def _open_existing(path, mode: str):
        if not Path(path).exists():
            raise ReplayBufferError(f"dataset not found: {path}")
        try:
            return _open_group(path, mode=mode)
        except Exception as exc:
            raise ReplayBufferError(
                f"cannot read {path} as a zarr group: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _layout(group, path):
        if "meta" not in group or "episode_ends" not in group["meta"]:
            raise ReplayBufferError(
                f"{path}: missing meta/episode_ends; expected the DP3 layout "
                f"(data/<key> arrays + meta/episode_ends)")
        if "data" not in group:
            raise ReplayBufferError(f"{path}: missing the data/ group (DP3 layout)")
        return group["data"], np.asarray(group["meta"]["episode_ends"][:])

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> str:
        return "numpy" if self._group is None else "zarr"

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self._ends, prepend=0)

    def keys(self) -> list[str]:
        return list(self._data.keys())

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __getitem__(self, key: str):
        """All steps of ``data/<key>`` (a numpy view, or the zarr array for the lazy backend)."""
        if key not in self._data:
            raise KeyError(f"{key!r} not in replay buffer (keys: {self.keys()})")
        arr = self._data[key]
        return arr[: self._size] if self._group is None else arr

    def __len__(self) -> int:
        return self.n_steps

    def __repr__(self) -> str:
        shapes = {k: tuple(self[k].shape[1:]) for k in self.keys()}
        return (f"ReplayBuffer({self.n_episodes} episodes, {self.n_steps} steps, "
                f"backend={self.backend}, keys={shapes})")

    def episode_slice(self, i: int) -> slice:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range ({self.n_episodes} episodes)")
        i %= self.n_episodes
        start = int(self._ends[i - 1]) if i > 0 else 0
        return slice(start, int(self._ends[i]))

    def get_episode(self, i: int, copy: bool = False) -> dict[str, np.ndarray]:
        sl = self.episode_slice(i)
        as_array = np.array if copy else np.asarray
        return {k: as_array(self[k][sl]) for k in self.keys()}

    # ------------------------------------------------------------------ writing
    def replace_array(self, key: str, values: np.ndarray) -> None:
        """Replace ``data/<key>`` by ``values [n_steps, ...]`` in memory (per-step shape may
        change, e.g. a point cloud cut to its kept points); the file on disk is unchanged."""
        if self._group is not None:
            raise ReplayBufferError("replace_array needs an in-memory buffer (copy_from_path)")
        if key not in self._data:
            raise KeyError(f"{key!r} not in replay buffer (keys: {self.keys()})")
        values = np.asarray(values)
        if values.shape[0] != self.n_steps:
            raise ReplayBufferError(f"replace_array: {key} needs {self.n_steps} steps, got "
                                    f"{values.shape[0]}")
        self._data[key] = values

    def add_episode(self, episode: Mapping[str, np.ndarray]) -> None:
        """Append one episode: ``{key: array [T, *shape]}`` with the same T for every key."""
        if not episode:
            raise ReplayBufferError("add_episode: empty episode dict")
        episode = {k: np.asarray(v) for k, v in episode.items()}
        lengths = {k: (v.shape[0] if v.ndim else None) for k, v in episode.items()}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise ReplayBufferError(f"add_episode: keys have inconsistent lengths {lengths}")
        T = next(iter(lengths.values()))
        if T == 0:
            raise ReplayBufferError("add_episode: episode has zero steps")
        if self.n_episodes > 0 and set(episode) != set(self._data):
            raise ReplayBufferError(f"add_episode: keys {sorted(episode)} differ from the "
                                    f"buffer's keys {sorted(self._data)}")
        for k, v in episode.items():
            if k in self._data and tuple(v.shape[1:]) != tuple(self._data[k].shape[1:]):
                raise ReplayBufferError(f"add_episode: {k} has per-step shape {v.shape[1:]}, "
                                        f"buffer has {self._data[k].shape[1:]}")
        for k, v in episode.items():
            if self._group is None:
                self._append_numpy(k, v)
            elif k in self._data:
                self._data[k].append(v.astype(self._data[k].dtype, copy=False))
            else:
                self._data[k] = _create_array(self._group["data"], k, v)
        self._size += T
        self._ends = np.append(self._ends, self._size).astype(np.int64)
        if self._group is not None:
            self._group["meta"]["episode_ends"].append(self._ends[-1:])

    def _append_numpy(self, key: str, value: np.ndarray) -> None:
        arr = self._data.get(key)
        need = self._size + len(value)
        if arr is None:
            arr = np.empty((max(need, 16),) + value.shape[1:], dtype=value.dtype)
        elif need > len(arr):  # grow geometrically: amortized O(1) appends
            grown = np.empty((max(need, 2 * len(arr)),) + arr.shape[1:], dtype=arr.dtype)
            grown[: self._size] = arr[: self._size]
            arr = grown
        arr[self._size: need] = value
        self._data[key] = arr

    def save_to_path(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the buffer as a zarr format-2 dataset in the DP3 layout; return the path."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists (pass overwrite=True)")
        group = _open_group(path, mode="w", zarr_format=2)
        data_group = group.create_group("data")
        for k in self.keys():
            _create_array(data_group, k, np.asarray(self[k][:]))
        _create_array(group.create_group("meta"), "episode_ends", self._ends.astype(np.int64))
        if hasattr(group.store, "close"):
            group.store.close()
        return path
