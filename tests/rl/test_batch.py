"""RolloutBatch layout helpers."""

import pytest
import torch

from maniflow_rl.rl.batch import RolloutBatch


def make_batch(T=3, N=2, To=2, K=2, H=4, Ca=2, Da=3, **overrides):
    fields = dict(
        obs={"state": torch.randn(T, N, To, 5), "point_cloud": torch.randn(T, N, To, 8, 3)},
        chains=torch.randn(T, N, K + 1, H, Da), denoise_inds=torch.zeros(T, N, K, dtype=torch.long),
        actions=torch.randn(T, N, Ca, Da), logprobs=torch.randn(T, N, Ca, Da),
        values=torch.randn(T, N), rewards=torch.randn(T, N), dones=torch.zeros(T, N),
        truncated=torch.zeros(T, N), final_values=torch.zeros(T, N), last_values=torch.zeros(N),
        group_ids=torch.tensor([0, 0]))
    fields.update(overrides)
    return RolloutBatch(**fields)


def test_defaults_flatten_and_to():
    batch = make_batch()
    assert batch.num_samples == 6 and batch.advantages is None
    assert torch.equal(batch.mask, torch.ones(3, 2))
    flat = batch.flatten()
    assert flat["obs"]["point_cloud"].shape == (6, 2, 8, 3)
    assert flat["chains"].shape == (6, 3, 4, 3)
    assert flat["logprobs"].shape == (6, 2, 3)
    assert flat["values"].shape == (6,) and flat["group_ids"].shape == (6,)
    assert "advantages" not in flat and "last_values" not in flat
    # row t*N + n of the flat batch is (t, n)
    assert torch.equal(flat["rewards"][1 * 2 + 1], batch.rewards[1, 1])
    moved = batch.to("cpu")
    assert moved is not batch and torch.equal(moved.obs["state"], batch.obs["state"])


def test_validate_reports_bad_shapes():
    with pytest.raises(ValueError, match="values"):
        make_batch(values=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="obs\\['state'\\]"):
        make_batch(obs={"state": torch.zeros(2, 2, 2, 5)})
    with pytest.raises(ValueError, match="last_values"):
        make_batch(last_values=torch.zeros(3))
