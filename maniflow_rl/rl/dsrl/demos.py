"""Demonstrations as chunk transitions for the replay buffer (DSRL-NA: a demo chunk is a valid
transition for the action critic Q^A; it has no latent noise).

For an episode of length L with actions ``a_0..a_{L-1}`` (it ends at its first success, after
``a_{L-1}``), every start ``t`` gives one transition: observation frames ``t-To+1 .. t`` (the
first frame repeated before the start), chunk ``a_t .. a_{t+Ca-1}`` (the last action repeated
past the end), reward 1 and ``terminated`` iff the chunk reaches the success (``t + Ca >= L``),
next observation frames ending at ``t + Ca`` (sparse-reward convention of the MetaWorld envs).

With the ``shaped`` reward the demo's recorded potentials ``Phi`` (``data/potential``,
``data/next_potential``: the env's potential before and after each action) give the reward the
env would have paid for the chunk of rows ``t .. e``, ``e = min(t + Ca - 1, L - 1)``::

    shaped: 1[t + Ca >= L] + next_potential[e] - potential[t]

The ``dense`` reward is not rebuilt: its scale differs between simulators (MetaWorld's potential
is its dense reward / 10, robosuite's the staged reward itself), so demos in a dense-reward
replay would be paid on the wrong scale; that combination is an error.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

log = logging.getLogger("maniflow_rl")


def _frames(array: np.ndarray, start: int, stop: int, first: int, last: int) -> np.ndarray:
    """Rows ``start..stop-1`` of ``array`` clipped to the episode rows ``[first, last]``."""
    return array[np.clip(np.arange(start, stop), first, last)]


DEMO_REWARD_TYPES = ("sparse", "shaped")


def demo_potentials(dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(potential [T], next_potential [T])`` recorded with the demos (read from the zarr);
    ``ValueError`` for demos written before they were recorded."""
    from maniflow_rl.data.replay_buffer import ReplayBuffer

    buffer = dataset.replay_buffer
    if "potential" not in buffer and getattr(dataset, "zarr_path", None):
        buffer = ReplayBuffer.open_zarr(dataset.zarr_path)
    if "potential" not in buffer or "next_potential" not in buffer:
        raise ValueError("the demos have no data/potential and data/next_potential arrays, so "
                         "their transitions cannot be given the env's shaped reward: "
                         "regenerate them (`maniflow-rl demos ... --overwrite`) or use "
                         "env.reward_type=sparse")
    return (np.asarray(buffer["potential"][:], np.float64).reshape(-1),
            np.asarray(buffer["next_potential"][:], np.float64).reshape(-1))


def chunk_reward(reward_type: str, start: int, end: int, success: bool,
                 potentials: tuple[np.ndarray, np.ndarray] | None) -> float:
    """The env's reward for demo rows ``start .. end`` (module docstring)."""
    if reward_type == "sparse":
        return float(success)
    potential, next_potential = potentials
    return float(success) + float(next_potential[end] - potential[start])


def demo_chunk_transitions(dataset, n_obs_steps: int, n_action_steps: int,
                           reward_type: str = "sparse"
                           ) -> Iterator[dict[str, np.ndarray | float]]:
    """Yield ``{'obs', 'next_obs' ({key: [To, *shape]}), 'action' [Ca, Da], 'reward',
    'terminated'}`` for every start of every training episode of a
    :class:`~maniflow_rl.data.dataset.PointCloudSequenceDataset`; ``reward_type``: the env's
    (``sparse`` or ``shaped``; module docstring)."""
    if reward_type not in DEMO_REWARD_TYPES:
        raise ValueError(f"demo transitions are rewarded as {DEMO_REWARD_TYPES} only, got "
                         f"reward_type={reward_type!r} (a dense-reward DSRL-NA run cannot put "
                         f"the demos in its replay: use env.reward_type=sparse or shaped)")
    potentials = demo_potentials(dataset) if reward_type != "sparse" else None
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
                "reward": chunk_reward(reward_type, now, min(now + n_action_steps - 1, last),
                                       success, potentials),
                "terminated": float(success),
            }


def prefill_demo_transitions(trainer, dataset, batch: int = 64, reward_type: str = "sparse"
                             ) -> int:
    """Add every demo chunk transition of ``dataset`` to ``trainer.replay``'s demo part, with
    the trainer's state features (privileged critic keys included when the dataset has them)
    and fresh alias pairs; a demo has no latent noise (stored as zeros, never read by NA's
    ``Q^A``); ``reward_type``: the env's reward. Returns the number of transitions."""
    import torch

    items = list(demo_chunk_transitions(dataset, trainer.policy.n_obs_steps,
                                        trainer.policy.n_action_steps, reward_type))
    for start in range(0, len(items), batch):
        part = items[start:start + batch]
        obs = {k: torch.as_tensor(np.stack([p["obs"][k] for p in part])) for k in part[0]["obs"]}
        nxt = {k: torch.as_tensor(np.stack([p["next_obs"][k] for p in part]))
               for k in part[0]["obs"]}
        context, features = trainer.state_features(obs)
        next_features = trainer.state_features(nxt)[1]
        alias_noise, alias_action = trainer._aliases(context, features, len(part))
        chunk = torch.as_tensor(np.stack([p["action"] for p in part]), device=trainer.device)
        trainer.replay.add_demos({
            "features": features.cpu().numpy(), "next_features": next_features.cpu().numpy(),
            "noise": np.zeros((len(part), trainer.steered.latent_dim), np.float32),
            "action": trainer.steered.normalized_chunk(chunk).cpu().numpy(),
            "reward": np.array([p["reward"] for p in part], np.float32),
            "discount": np.full(len(part), trainer.chunk_discount, np.float32),
            "terminated": np.array([p["terminated"] for p in part], np.float32),
            "alias_noise": alias_noise.cpu().numpy(), "alias_action": alias_action.cpu().numpy(),
            "is_demo": np.ones(len(part), np.float32)})
    log.info("replay pre-filled with %d demo transitions", len(items))
    return len(items)
