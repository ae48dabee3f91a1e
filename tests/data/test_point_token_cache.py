"""The point-token cache: frames cut once to the encoder's points give the same tokens, the same
loss and the same training as the full frames; the policy accepts cut clouds and nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maniflow_rl.data import PointCloudSequenceDataset, ReplayBuffer, ReplayBufferError
from maniflow_rl.data.point_token_cache import cache_dataset_point_tokens, presample_point_cloud
from maniflow_rl.policy.maniflow.obs_encoder import farthest_point_indices

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "policy"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from maniflow_policy_testlib import POINT_CLOUD_SHAPE_META, make_obs, make_policy  # noqa: E402
from pretrain_testlib import tiny_pretrain_config, write_synthetic_dataset  # noqa: E402


def _fitted_policy(sampling: str):
    policy = make_policy(point_sampling=sampling).eval()
    obs = make_obs(POINT_CLOUD_SHAPE_META, batch=64, seed=1)
    data = {k: v.flatten(0, 1).numpy() * 3.0 - 1.0 for k, v in obs.items()}
    data["action"] = np.random.default_rng(0).uniform(-1, 1, (128, 4)).astype(np.float32)
    policy.normalizer.fit(data)
    return policy


def _fps_reference(xyz: np.ndarray, k: int) -> list[int]:
    """Plain-Python farthest point sampling from point 0 (independent of the batched one)."""
    chosen, dist = [0], np.full(len(xyz), np.inf)
    for _ in range(k - 1):
        dist = np.minimum(dist, ((xyz - xyz[chosen[-1]]) ** 2).sum(-1))
        chosen.append(int(dist.argmax()))
    return chosen


def test_batched_fps_matches_a_plain_loop():
    xyz = torch.rand(3, 40, 3, generator=torch.Generator().manual_seed(0))
    got = farthest_point_indices(xyz, 10)
    for row in range(3):
        assert got[row].tolist() == _fps_reference(xyz[row].numpy(), 10)


def test_batched_fps_matches_a_plain_loop_on_ties_and_duplicates():
    """A lattice has many equally far candidates and repeated points: the first one wins."""
    axis = torch.linspace(-1.0, 1.0, 8)
    grid = torch.cartesian_prod(axis, axis, axis)                          # [512, 3]
    clouds = torch.stack([grid, grid.flip(0), torch.cat([grid[:256], grid[:256]])])
    got = farthest_point_indices(clouds, 64)
    for row in range(3):
        assert got[row].tolist() == _fps_reference(clouds[row].numpy(), 64)


@pytest.mark.parametrize("sampling", ["fps", "stride"])
def test_cut_frames_give_the_tokens_of_the_full_frames(sampling):
    policy = _fitted_policy(sampling)
    obs = {k: v * 3.0 - 1.0 for k, v in make_obs(POINT_CLOUD_SHAPE_META, batch=5, seed=2).items()}
    full = obs["point_cloud"]                                           # [5, 2, 48, 3]
    cut = presample_point_cloud(policy, "point_cloud", full.flatten(0, 1).numpy())
    k = policy.config.num_point_tokens
    assert cut.shape == (10, k, 3)
    # the kept points are points of the frame, picked on the normalized xyz
    normalized = policy.normalizer.normalize("point_cloud", full.flatten(0, 1))
    if sampling == "fps":
        expected = [_fps_reference(frame.numpy(), k) for frame in normalized]
        np.testing.assert_array_equal(cut, np.stack([f[i] for f, i in
                                                     zip(full.flatten(0, 1).numpy(), expected)]))
    cut_obs = {**obs, "point_cloud": torch.from_numpy(cut).unflatten(0, (5, 2))}
    with torch.no_grad():
        context_full, pooled_full = policy.encode_obs(obs)
        context_cut, pooled_cut = policy.encode_obs(cut_obs)
    torch.testing.assert_close(context_cut, context_full, rtol=0, atol=0)
    torch.testing.assert_close(pooled_cut, pooled_full, rtol=0, atol=0)


def test_policy_accepts_cut_clouds_but_not_other_point_counts():
    policy = _fitted_policy("fps")
    obs = make_obs(POINT_CLOUD_SHAPE_META, batch=2)
    k = policy.config.num_point_tokens
    policy.validate_obs({**obs, "point_cloud": obs["point_cloud"][:, :, :k]})
    with pytest.raises(ValueError, match=r"obs\['point_cloud'\] has shape \[2, 2, 20, 3\]"):
        policy.validate_obs({**obs, "point_cloud": obs["point_cloud"][:, :, :20]})


def test_cached_dataset_trains_exactly_like_the_full_one(tmp_path):
    from maniflow_rl.train.pretrain import run_pretraining

    data = write_synthetic_dataset(tmp_path / "d.zarr", num_points=32)
    policy_config = dict(point_sampling="fps", num_point_tokens=8)
    summaries = []
    for cache in (False, True):
        cfg = tiny_pretrain_config(data, tmp_path / f"out_{cache}", num_epochs=3,
                                   cache_point_tokens=cache)
        cfg.policy_config.update(policy_config)
        summaries.append(run_pretraining(cfg, progress=False))
    losses = [[h["train_loss"] for h in s["history"]] for s in summaries]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    weights = [torch.load(s["checkpoint"], weights_only=False)["ema_state_dict"]
               for s in summaries]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=1e-4, atol=1e-6)


def test_dataset_cache_replaces_frames_in_memory_only(tmp_path):
    data = write_synthetic_dataset(tmp_path / "d.zarr", num_points=32)
    dataset = PointCloudSequenceDataset(data, horizon=8, n_obs_steps=2, n_action_steps=4,
                                        val_ratio=0.25)
    policy = make_policy(POINT_CLOUD_SHAPE_META | {"obs": {
        "point_cloud": {"shape": [32, 3], "type": "point_cloud"},
        "agent_pos": {"shape": [9], "type": "low_dim"}}}, num_point_tokens=8)
    policy.normalizer.fit(dataset.get_normalizer_data())
    item_before = dataset[3]["obs"]["point_cloud"]                      # [2, 32, 3]
    cache_dataset_point_tokens(dataset, policy)
    item_after = dataset[3]["obs"]["point_cloud"]
    assert item_after.shape == (2, 8, 3)
    np.testing.assert_array_equal(
        item_after.numpy(), presample_point_cloud(policy, "point_cloud", item_before.numpy()))
    assert dataset.get_validation_dataset()[0]["obs"]["point_cloud"].shape[1] == 8
    reread = ReplayBuffer.copy_from_path(data)
    assert reread["point_cloud"].shape[1:] == (32, 3)                   # the file is unchanged


def test_replace_array_checks_length_and_backend(tmp_path):
    data = write_synthetic_dataset(tmp_path / "d.zarr")
    buffer = ReplayBuffer.copy_from_path(data)
    with pytest.raises(ReplayBufferError, match="needs 96 steps"):
        buffer.replace_array("point_cloud", np.zeros((5, 8, 3)))
    with pytest.raises(KeyError):
        buffer.replace_array("nope", np.zeros((96, 8, 3)))
    with pytest.raises(ReplayBufferError, match="in-memory"):
        ReplayBuffer.open_zarr(data).replace_array("point_cloud", np.zeros((96, 8, 3)))


@pytest.mark.parametrize("num_points", [16, 12])
def test_clouds_no_larger_than_the_tokens_are_sampled_as_before(num_points):
    """N <= num_point_tokens: the cache leaves the frames alone and the encoder still runs FPS
    (which reorders the points and, with duplicates, repeats point picks) as it always did."""
    meta = {"obs": {"point_cloud": {"shape": [num_points, 3], "type": "point_cloud"},
                    "agent_pos": {"shape": [9], "type": "low_dim"}}, "action": {"shape": [4]}}
    policy = make_policy(meta, num_point_tokens=16).eval()
    obs = make_obs(meta, batch=3, seed=4)
    obs["point_cloud"][:, :, 1] = obs["point_cloud"][:, :, 0]          # duplicate points
    frames = obs["point_cloud"].flatten(0, 1).numpy()
    np.testing.assert_array_equal(presample_point_cloud(policy, "point_cloud", frames), frames)
    tokenizer = policy.obs_encoder.tokenizers["point_cloud"]
    normalized = policy.normalizer.normalize("point_cloud", obs["point_cloud"].flatten(0, 1))
    idx = farthest_point_indices(normalized, num_points)
    picked = torch.gather(normalized, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    with torch.no_grad():
        torch.testing.assert_close(tokenizer(normalized), tokenizer.point_mlp(picked))
