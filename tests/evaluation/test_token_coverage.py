"""token_coverage / kept_point_spacing against hand-computed distances."""

import numpy as np
import pytest

from maniflow_rl.evaluation.token_coverage import kept_point_spacing, token_coverage


def test_coverage_distances_and_counts_by_hand():
    # frame 0: kept points at x = 0, 0.02, 0.1; frame 1: at x = 0.05, 0.2, 0.3 (y = z = 0)
    kept = np.zeros((2, 3, 3))
    kept[0, :, 0] = [0.0, 0.02, 0.1]
    kept[1, :, 0] = [0.05, 0.2, 0.3]
    cloud = np.zeros((2, 4, 3))
    cloud[0, :, 0] = [0.0, 0.01, 0.02, 0.1]
    cloud[1, :, 0] = [0.0, 0.05, 0.2, 0.3]
    target = np.zeros((2, 3))          # the origin in both frames
    out = token_coverage(kept, cloud, target, radius=0.03)
    # nearest kept point: 0.0 and 0.05 -> median 0.025; within 3 cm: 2 and 0 -> mean 1
    assert out["nearest_token_m"] == pytest.approx(0.025)
    assert out["tokens_within"] == pytest.approx(1.0)
    # nearest cloud point: 0.0 and 0.0; within 3 cm: 3 and 1 -> mean 2
    assert out["nearest_point_m"] == pytest.approx(0.0)
    assert out["points_within"] == pytest.approx(2.0)


def test_spacing_is_the_median_nearest_neighbour_distance():
    kept = np.zeros((1, 4, 3))
    kept[0, :, 0] = [0.0, 0.1, 0.3, 0.6]   # nearest-neighbour distances 0.1, 0.1, 0.2, 0.3
    assert kept_point_spacing(kept) == pytest.approx(0.15)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="target"):
        token_coverage(np.zeros((2, 3, 3)), np.zeros((2, 4, 3)), np.zeros((3, 3)))
