"""Demo chunk transitions for DSRL's replay: windows, termination and the reward the env would
have paid (sparse, shaped), checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from maniflow_rl.data.dataset import PointCloudSequenceDataset
from maniflow_rl.data.replay_buffer import ReplayBuffer
from maniflow_rl.rl.dsrl.demos import demo_chunk_transitions

# two episodes of lengths 5 and 3; Phi before / after each action (next = the following row's
# potential inside an episode, the final state's at the end)
POTENTIAL = [[0.1, 0.2, 0.4, 0.5, 0.7], [0.3, 0.3, 0.6]]
FINAL = [1.0, 0.9]


def _dataset(tmp_path, with_potentials=True) -> PointCloudSequenceDataset:
    buffer = ReplayBuffer.create_empty()
    for phi, final in zip(POTENTIAL, FINAL):
        n = len(phi)
        episode = {"point_cloud": np.zeros((n, 4, 3), np.float32),
                   "state": np.arange(n, dtype=np.float32)[:, None].repeat(2, 1),
                   "action": np.arange(n, dtype=np.float32)[:, None].repeat(4, 1)}
        if with_potentials:
            episode["potential"] = np.float32(phi)[:, None]
            episode["next_potential"] = np.float32(phi[1:] + [final])[:, None]
        buffer.add_episode(episode)
    path = buffer.save_to_path(tmp_path / "demos.zarr")
    return PointCloudSequenceDataset(str(path), horizon=4, n_obs_steps=2, n_action_steps=2,
                                     obs_keys=["point_cloud", "agent_pos"])


def test_demo_rewards_match_what_the_env_pays_by_hand(tmp_path):
    dataset = _dataset(tmp_path)
    items = {kind: list(demo_chunk_transitions(dataset, 2, 2, kind))
             for kind in ("sparse", "shaped")}
    assert all(len(v) == 8 for v in items.values())      # one transition per start
    # episode 0 (L = 5, Ca = 2): starts 0..4, chunk rows t..min(t+1, 4); success iff t + 2 >= 5
    terminated = [float(t + 2 >= 5) for t in range(5)] + [float(t + 2 >= 3) for t in range(3)]
    assert [x["terminated"] for x in items["sparse"]] == terminated
    assert [x["reward"] for x in items["sparse"]] == terminated
    shaped = [0.4 - 0.1, 0.5 - 0.2, 0.7 - 0.4, 1 + 1.0 - 0.5, 1 + 1.0 - 0.7,
              0.6 - 0.3, 1 + 0.9 - 0.3, 1 + 0.9 - 0.6]
    np.testing.assert_allclose([x["reward"] for x in items["shaped"]], shaped, atol=1e-6)
    # the chunk and the observation windows are the same for every reward type
    first = items["shaped"][3]
    np.testing.assert_array_equal(first["action"][:, 0], [3, 4])
    np.testing.assert_array_equal(first["obs"]["agent_pos"][:, 0], [2, 3])
    np.testing.assert_array_equal(first["next_obs"]["agent_pos"][:, 0], [4, 4])   # clipped


def test_demos_without_potentials_only_give_sparse_rewards(tmp_path):
    dataset = _dataset(tmp_path, with_potentials=False)
    assert len(list(demo_chunk_transitions(dataset, 2, 2, "sparse"))) == 8
    with pytest.raises(ValueError, match="regenerate"):
        next(demo_chunk_transitions(dataset, 2, 2, "shaped"))
    for kind in ("success", "dense"):   # dense: no simulator-independent scale to rebuild
        with pytest.raises(ValueError, match="reward_type"):
            next(demo_chunk_transitions(dataset, 2, 2, kind))
