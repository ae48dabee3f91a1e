"""Chunk-level replay for off-policy fine-tuning (DSRL): transitions of one executed action
chunk, n-step accumulation, demo / online sampling ratio, atomic save / load.

A transition holds cached observation features (the frozen encoder's, so an update never
re-runs PointNet), the latent noise ``w`` the actor chose, the executed chunk ``a`` (flattened),
the chunk reward ``R``, its discount ``gamma_n``, ``terminated``, the next state's features and
(for noise aliasing) ``M`` pairs ``(w_j, f(s, w_j))`` drawn at collection time::

    fields: features [F], noise [Dw], action [Dca], reward, discount, terminated,
            next_features [F], alias_noise [M, Dw], alias_action [M, Dca], is_demo

n-step (``NStepAccumulator``): ``R = sum_{i<k} gamma_c^i r_i``, ``gamma_n = gamma_c^k`` with
``k = n`` or fewer when the episode ended first (then ``terminated`` is that of the last one);
``gamma_c = gamma ** Ca`` is the per-chunk discount.
"""

from __future__ import annotations

import ast
import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maniflow_rl.utils.checkpoint import write_atomic

TRANSITION_FIELDS = ("features", "noise", "action", "reward", "discount", "terminated",
                     "next_features", "alias_noise", "alias_action", "is_demo")


class ChunkReplayBuffer:
    """Ring buffer of chunk transitions; demos live in their own (never overwritten) part."""

    def __init__(self, capacity: int, feature_dim: int, noise_dim: int, action_dim: int,
                 num_aliases: int, seed: int = 0):
        self.capacity = int(capacity)
        shapes = {"features": (feature_dim,), "noise": (noise_dim,), "action": (action_dim,),
                  "reward": (), "discount": (), "terminated": (), "next_features": (feature_dim,),
                  "alias_noise": (num_aliases, noise_dim),
                  "alias_action": (num_aliases, action_dim), "is_demo": ()}
        self.shapes = shapes
        self.online = {k: np.zeros((self.capacity, *s), np.float32) for k, s in shapes.items()}
        self.demo = {k: np.zeros((0, *s), np.float32) for k, s in shapes.items()}
        self.size = 0
        self.position = 0
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ writing
    def _check(self, batch: dict[str, np.ndarray]) -> int:
        missing = [k for k in TRANSITION_FIELDS if k not in batch]
        if missing:
            raise ValueError(f"transitions are missing fields {missing}")
        n = len(batch["reward"])
        for key, shape in self.shapes.items():
            if tuple(np.shape(batch[key])) != (n, *shape):
                raise ValueError(f"transition field '{key}' has shape {np.shape(batch[key])}, "
                                 f"expected {(n, *shape)}")
        return n

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Append ``n`` online transitions (each field ``[n, ...]``), overwriting the oldest."""
        n = self._check(batch)
        index = (self.position + np.arange(n)) % self.capacity
        for key in self.shapes:
            self.online[key][index] = np.asarray(batch[key], np.float32)
        self.position = int((self.position + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def add_demos(self, batch: dict[str, np.ndarray]) -> None:
        """Append demonstration transitions (kept for the whole run)."""
        self._check(batch)
        for key in self.shapes:
            self.demo[key] = np.concatenate([self.demo[key], np.asarray(batch[key], np.float32)])

    @property
    def num_demos(self) -> int:
        return len(self.demo["reward"])

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, demo_fraction: float = 0.0,
               device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """``round(demo_fraction * batch_size)`` demo transitions (when there are demos) and the
        rest online, uniformly with replacement; tensors on ``device``."""
        num_demo = int(round(demo_fraction * batch_size)) if self.num_demos else 0
        num_online = batch_size - num_demo if self.size else 0
        if num_online == 0 and self.size == 0:
            num_demo = batch_size if self.num_demos else 0
        if num_demo + num_online == 0:
            raise ValueError("the replay buffer is empty")
        online_idx = self.rng.integers(0, self.size, num_online) if num_online else None
        demo_idx = self.rng.integers(0, self.num_demos, num_demo) if num_demo else None
        out = {}
        for key in self.shapes:
            parts = []
            if online_idx is not None:
                parts.append(self.online[key][online_idx])
            if demo_idx is not None:
                parts.append(self.demo[key][demo_idx])
            out[key] = torch.as_tensor(np.concatenate(parts), device=device)
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Atomically write the buffer (online part up to ``size``, demos, RNG) as ``.npz``."""
        arrays = {f"online_{k}": v[:self.size] for k, v in self.online.items()}
        arrays.update({f"demo_{k}": v for k, v in self.demo.items()})
        arrays["meta"] = np.array([self.size, self.position, self.capacity], np.int64)
        state = np.frombuffer(repr(self.rng.bit_generator.state).encode(), np.uint8)
        arrays["rng_state"] = state
        return write_atomic(path, lambda f: np.savez(f, **arrays))

    def load(self, path: str | os.PathLike) -> None:
        """Restore what :meth:`save` wrote (shapes must match this buffer's)."""
        with np.load(path) as data:
            size, position, capacity = (int(x) for x in data["meta"])
            if capacity != self.capacity:
                raise ValueError(f"replay file {path} has capacity {capacity}, this buffer "
                                 f"{self.capacity}")
            for key in self.shapes:
                online = data[f"online_{key}"]
                if online.shape[1:] != self.online[key].shape[1:]:
                    raise ValueError(f"replay file {path}: field '{key}' has shape "
                                     f"{online.shape[1:]}, expected {self.online[key].shape[1:]}")
                self.online[key][:size] = online
                self.demo[key] = data[f"demo_{key}"].copy()
            self.size, self.position = size, position
            self.rng.bit_generator.state = ast.literal_eval(bytes(data["rng_state"]).decode())


class NStepAccumulator:
    """Turns per-env streams of 1-step chunk transitions into n-step ones (module docstring)."""

    def __init__(self, num_envs: int, nstep: int, chunk_discount: float):
        self.nstep, self.chunk_discount = int(nstep), float(chunk_discount)
        self.pending: list[deque] = [deque() for _ in range(num_envs)]

    def push(self, env: int, transition: dict[str, Any], episode_ended: bool
             ) -> list[dict[str, Any]]:
        """Add env ``env``'s next 1-step transition; return the n-step transitions completed.

        ``transition`` has every field of ``TRANSITION_FIELDS`` for one step (``discount`` is
        ignored: it is computed here). ``episode_ended`` (terminated or truncated) flushes."""
        queue = self.pending[env]
        queue.append(transition)
        done: list[dict[str, Any]] = []
        if len(queue) == self.nstep:
            done.append(self._combine(list(queue)))
            queue.popleft()
        if episode_ended:
            while queue:
                done.append(self._combine(list(queue)))
                queue.popleft()
        return done

    def discard(self, env: int) -> None:
        """Drop env ``env``'s pending steps (its stream broke: a transition was dropped)."""
        self.pending[env].clear()

    def _combine(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        first, last = steps[0], steps[-1]
        reward = sum(self.chunk_discount ** i * float(s["reward"]) for i, s in enumerate(steps))
        return {**first, "reward": reward, "discount": self.chunk_discount ** len(steps),
                "terminated": float(last["terminated"]), "next_features": last["next_features"]}
