"""Data-parallel helpers (torch.distributed, SPMD as CleanRL's ``ppo_atari_multigpu.py``).

Launched by ``torchrun --nproc_per_node=N ...`` every rank runs the same program: it owns
``num_envs / world_size`` envs (rank-distinct seeds), computes its advantages locally, and the
gradients are all-reduced before every optimizer step, so every rank holds the same weights.
Rank 0 alone evaluates, logs, writes checkpoints and reports.

Pure functions (``dist_info_from_env``, ``select_backend``, ``local_num_envs``, ``rank_seed``,
``rank_device``, ``minibatch_chunks``, ``reduce_metric_dicts``, ``pack_gradients`` /
``unpack_gradients``) carry the logic; the thin collective wrappers below them do nothing in a
single process (world size 1), so the one-process path is unchanged.

Environment: torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``; ``MANIFLOW_DIST_BACKEND`` (``gloo`` | ``nccl``, default: ``nccl`` for a CUDA
device, else ``gloo``); ``MANIFLOW_DIST_TIMEOUT_S`` (collective timeout, default 1800 s);
``MANIFLOW_DIST_WAIT_S`` (how long ranks wait for rank 0's single-rank stages: imitation
pretraining, evaluation; default 7 days).
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT_S = 1800
DEFAULT_WAIT_S = 7 * 24 * 3600
_WAIT_GROUP: Any = None   # gloo group with a long timeout (waits on rank 0's solo stages)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1   # ranks on this node (they split its cores: utils/threads.py)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ------------------------------------------------------------------------------ pure functions
def dist_info_from_env(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Rank, world size, local rank and local world size from torchrun's variables (defaults:
    one process)."""
    env = os.environ if environ is None else environ
    try:
        info = DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                        int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", 1)))
    except ValueError as exc:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE must be integers "
                         f"({exc})") from None
    if info.world_size < 1 or not 0 <= info.rank < info.world_size:
        raise ValueError(f"invalid RANK={info.rank} for WORLD_SIZE={info.world_size}")
    if info.local_world_size < 1:
        raise ValueError(f"invalid LOCAL_WORLD_SIZE={info.local_world_size}")
    return info


def select_backend(device_type: str, requested: str | None = None,
                   cuda_available: bool | None = None) -> str:
    """``requested`` (or ``nccl`` for a CUDA device, else ``gloo``); ``ValueError`` for an
    unknown backend or ``nccl`` without CUDA (nccl only reduces GPU tensors)."""
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    backend = (requested or ("nccl" if device_type == "cuda" else "gloo")).lower()
    if backend not in BACKENDS:
        raise ValueError(f"MANIFLOW_DIST_BACKEND must be one of {BACKENDS}, got {backend!r}")
    if backend == "nccl" and not (cuda_available and device_type == "cuda"):
        raise ValueError("the nccl backend needs CUDA: no GPU is visible or ppo.device is not "
                         "cuda; use MANIFLOW_DIST_BACKEND=gloo (CPU) or ppo.device=cuda on a "
                         "GPU machine")
    return backend


def local_num_envs(num_envs: int, world_size: int, group_size: int = 1,
                   name: str = "ppo.num_envs") -> int:
    """Envs per rank: ``num_envs / world_size``; a ``ValueError`` if it does not divide, or if
    a rank's share is not a whole number of GRPO groups (groups never straddle ranks)."""
    if num_envs % world_size:
        raise ValueError(f"{name}={num_envs} is not divisible by the world size {world_size} "
                         f"(torchrun --nnodes x --nproc_per_node): each rank owns "
                         f"{name} / world size envs")
    local = num_envs // world_size
    if local % group_size:
        raise ValueError(f"{name}={num_envs} over {world_size} ranks gives {local} envs per "
                         f"rank, not a multiple of advantage.group_size={group_size}: a GRPO "
                         f"group must live on one rank")
    return local


def rank_env_slice(num_envs: int, rank: int, world_size: int) -> slice:
    """The global env indices rank ``rank`` owns (contiguous blocks)."""
    local = num_envs // world_size
    return slice(rank * local, (rank + 1) * local)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s envs and sampling noise: ``seed`` itself on rank 0 (a one-rank
    run is the single-process run), ``SeedSequence([seed, rank])`` elsewhere."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def rank_device(device: str | torch.device, info: DistInfo) -> torch.device:
    """A CUDA device without an index becomes ``cuda:<LOCAL_RANK>`` under torchrun."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def minibatch_chunks(order: torch.Tensor, batch_size: int, total_samples: int | None = None
                     ) -> list[torch.Tensor]:
    """Minibatches of one epoch. One process (``total_samples`` None): consecutive slices of
    ``batch_size``. Data-parallel: ``ceil(total_samples / batch_size)`` near-equal slices of
    this rank's samples, the same count on every rank (``total_samples``: all ranks' samples),
    so a global minibatch holds about ``batch_size`` samples and every rank steps together."""
    if total_samples is None:
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return list(torch.tensor_split(order, max(1, math.ceil(total_samples / batch_size))))


SUM_METRICS = ("env_steps", "rollout/num_episodes", "rollout/nonfinite_dropped",
               "rollout/active_env_steps", "rollout/executed_env_steps", "train/active_samples")
EPISODE_METRICS = ("rollout/return_mean", "rollout/success_rate", "rollout/episode_length")
MAX_METRICS = ("perf/rollout_seconds", "perf/update_seconds")


def reduce_metric_dicts(per_rank: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One metrics dict from every rank's: counts (``SUM_METRICS``) summed, episode statistics
    weighted by each rank's ``rollout/num_episodes``, times (``MAX_METRICS``) the slowest
    rank's, everything else the mean over the ranks that report it."""
    keys = list(dict.fromkeys(k for d in per_rank for k in d))
    out: dict[str, float] = {}
    for key in keys:
        values = [(float(d[key]), d) for d in per_rank if key in d]
        if key in SUM_METRICS:
            out[key] = sum(v for v, _ in values)
        elif key in MAX_METRICS:
            out[key] = max(v for v, _ in values)
        elif key in EPISODE_METRICS:
            weights = [float(d.get("rollout/num_episodes", 1.0)) for _, d in values]
            out[key] = sum(v * w for (v, _), w in zip(values, weights)) / max(sum(weights), 1e-12)
        else:
            out[key] = sum(v for v, _ in values) / len(values)
    return out


def pack_gradients(params: Sequence[torch.nn.Parameter], nonfinite: bool) -> torch.Tensor:
    """One flat tensor: every gradient (zeros where None), a has-gradient flag per parameter,
    and the ``nonfinite`` flag (this rank's loss was NaN / inf) last."""
    device = params[0].device
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    flags = torch.tensor([p.grad is not None for p in params] + [bool(nonfinite)],
                         dtype=params[0].dtype, device=device)
    return torch.cat([*grads, flags])


def unpack_gradients(params: Sequence[torch.nn.Parameter], flat: torch.Tensor) -> bool:
    """Write the summed gradients of ``flat`` (from :func:`pack_gradients`) back: a parameter
    no rank had a gradient for keeps ``grad = None`` (the optimizer skips it, as in one
    process). Returns whether any rank's loss was not finite."""
    offset = 0
    flags = flat[-(len(params) + 1):]
    for i, p in enumerate(params):
        n = p.numel()
        if flags[i] > 0:
            p.grad = flat[offset:offset + n].view_as(p).clone()
        else:
            p.grad = None
        offset += n
    return bool(flags[-1] > 0)


# ------------------------------------------------------------------------------ collectives
def current_info() -> DistInfo:
    """This process's place (from the initialised process group, else one process)."""
    if dist.is_available() and dist.is_initialized():
        local = dist_info_from_env()
        return DistInfo(dist.get_rank(), dist.get_world_size(), local.local_rank,
                        local.local_world_size)
    return DistInfo()


def init_distributed(device: str | torch.device = "cpu") -> DistInfo:
    """Join the torchrun job once (idempotent; nothing to do without torchrun's variables).
    Chooses the backend with :func:`select_backend` and pins the CUDA device of the rank."""
    global _WAIT_GROUP
    info = dist_info_from_env()
    if not info.enabled or dist.is_initialized():
        return current_info() if dist.is_initialized() else info
    device = rank_device(device, info)
    backend = select_backend(device.type, os.environ.get("MANIFLOW_DIST_BACKEND"))
    if backend == "nccl":
        torch.cuda.set_device(device)
    timeout = float(os.environ.get("MANIFLOW_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    wait = float(os.environ.get("MANIFLOW_DIST_WAIT_S", DEFAULT_WAIT_S))
    _WAIT_GROUP = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=wait))
    return current_info()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it (unchanged in one process)."""
    if current_info().enabled:
        dist.all_reduce(tensor)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (rank order); ``[obj]`` in one process."""
    if not current_info().enabled:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_WAIT_GROUP)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank; waits as long as ``MANIFLOW_DIST_WAIT_S`` (rank 0
    may be evaluating)."""
    if not current_info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_WAIT_GROUP)
    return box[0]


def wait_for_main() -> None:
    """Barrier that waits up to ``MANIFLOW_DIST_WAIT_S`` (rank 0's single-rank stages)."""
    if current_info().enabled:
        dist.barrier(group=_WAIT_GROUP)


def shutdown_distributed() -> None:
    """Leave the job cleanly after a successful command: wait for every rank, then destroy
    the process group (exiting with it alive can abort a rank whose peer left first)."""
    global _WAIT_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=_WAIT_GROUP)
        dist.destroy_process_group()
        _WAIT_GROUP = None


def broadcast_module_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (start from equal weights)."""
    if not current_info().enabled:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if torch.is_tensor(tensor):
                dist.broadcast(tensor, src=src)


class GradientSync:
    """The collectives of one data-parallel minibatch step (see ``rl/ppo/update.py``)."""

    def __init__(self, device: torch.device):
        self.device = device

    def total(self, count: int) -> int:
        """Sum of an integer over the ranks."""
        return int(all_reduce_sum(torch.tensor([float(count)], device=self.device))[0])

    def weighted_mean(self, count: int, value: float) -> tuple[int, float]:
        """``(sum of counts, count-weighted mean of value)`` over the ranks."""
        t = all_reduce_sum(torch.tensor([float(count), float(count) * float(value)],
                                        dtype=torch.float64, device=self.device))
        return int(t[0]), float(t[1] / max(float(t[0]), 1.0))

    def gradients(self, params: Iterable[torch.nn.Parameter], nonfinite: bool) -> bool:
        """Sum every rank's (already sample-weighted) gradients; True if any rank's loss was
        not finite (then every rank skips the step)."""
        params = list(params)
        flat = all_reduce_sum(pack_gradients(params, nonfinite))
        return unpack_gradients(params, flat)


def data_parallel_sync(device: torch.device) -> GradientSync | None:
    """A :class:`GradientSync` when more than one rank trains, else None."""
    return GradientSync(device) if current_info().enabled else None
