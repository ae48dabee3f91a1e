"""Rotation conversions of the robosuite envs against scipy's (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest

from maniflow_rl.envs.robosuite.rotation import (axis_angle_to_matrix, matrix_to_axis_angle,
                                                 matrix_to_quat, matrix_to_rotation_6d,
                                                 quat_to_matrix, rotation_6d_to_matrix)

Rotation = pytest.importorskip("scipy.spatial.transform").Rotation


@pytest.fixture(scope="module")
def rotations():
    r = Rotation.random(200, random_state=0)
    special = Rotation.from_rotvec([[0, 0, 0], [np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi],
                                    [np.pi / np.sqrt(2), np.pi / np.sqrt(2), 0], [1e-9, 0, 0]])
    return Rotation.concatenate([r, special])


def test_quaternion_matrix_and_axis_angle_agree_with_scipy(rotations):
    matrices = rotations.as_matrix()
    np.testing.assert_allclose(quat_to_matrix(rotations.as_quat()), matrices, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(3.0 * rotations.as_quat()), matrices, atol=1e-12)
    quat = matrix_to_quat(matrices)
    expected = rotations.as_quat()
    expected = np.where(expected[:, 3:] < 0, -expected, expected)   # the same sign convention
    assert np.all(quat[:, 3] >= 0)
    # at w = 0 (angle pi) q and -q are both canonical: compare the rotations they give
    np.testing.assert_allclose(Rotation.from_quat(quat).as_matrix(), matrices, atol=1e-9)
    inside = expected[:, 3] > 1e-6
    np.testing.assert_allclose(quat[inside], expected[inside], atol=1e-9)
    np.testing.assert_allclose(axis_angle_to_matrix(rotations.as_rotvec()), matrices, atol=1e-9)
    rotvec = matrix_to_axis_angle(matrices)
    np.testing.assert_allclose(Rotation.from_rotvec(rotvec).as_matrix(), matrices, atol=1e-9)
    assert np.all(np.linalg.norm(rotvec, axis=-1) <= np.pi + 1e-9)


def test_rotation_6d_round_trip_and_gram_schmidt(rotations):
    matrices = rotations.as_matrix()
    d6 = matrix_to_rotation_6d(matrices)
    np.testing.assert_array_equal(d6[:, :3], matrices[:, 0])     # first two rows (pytorch3d)
    np.testing.assert_array_equal(d6[:, 3:], matrices[:, 1])
    np.testing.assert_allclose(rotation_6d_to_matrix(d6), matrices, atol=1e-12)
    # a perturbed 6-D vector still gives a proper rotation, the nearest in Gram-Schmidt's sense
    noisy = d6 + 0.05 * np.random.default_rng(1).standard_normal(d6.shape)
    out = rotation_6d_to_matrix(noisy)
    np.testing.assert_allclose(out @ np.swapaxes(out, -1, -2), np.broadcast_to(np.eye(3),
                                                                              out.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(out), 1.0, atol=1e-12)
    first = noisy[:, :3] / np.linalg.norm(noisy[:, :3], axis=-1, keepdims=True)
    np.testing.assert_allclose(out[:, 0], first, atol=1e-12)
