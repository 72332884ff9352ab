"""Camera conventions in user units and conversions to the official representations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stylenerf_edit.generator.camera import (Camera, CameraPrior, angles_from_world_matrix, camera_position,
                                             fov_from_intrinsics_inverse, intrinsics_inverse, world_matrix)


def test_frontal_camera_matches_the_official_matrix() -> None:
    expected = [[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    np.testing.assert_allclose(Camera().world_matrix().numpy(), expected, atol=1e-7)
    assert CameraPrior().frontal() == Camera(yaw=0.0, pitch=0.0, radius=1.0, fov=12.0)
    assert CameraPrior().from_list_mode([0.5, 0.5, 0.5]) == Camera(yaw=0.0, pitch=pytest.approx(0.0, abs=1e-9))


def test_sign_conventions() -> None:
    """+yaw moves the camera towards +y (the subject's left); +pitch raises it (+z, looking down)."""
    left = Camera(yaw=20).world_matrix()
    assert left[1, 3] > 0 and abs(float(left[2, 3])) < 1e-7
    above = Camera(pitch=15).world_matrix()
    assert above[2, 3] > 0
    assert above[2, 2] > 0  # the camera's backward axis points up: it looks down at the face
    assert Camera(pitch=15).world_matrix()[:3, 1] @ torch.tensor([0.0, 0.0, 1.0]) > 0  # image up stays up


@pytest.mark.parametrize("yaw,pitch,radius", [(0, 0, 1), (25, -8, 1), (-40, 12, 1.3), (170, 60, 2.0)])
def test_matrix_round_trip(yaw: float, pitch: float, radius: float) -> None:
    cam = Camera(yaw=yaw, pitch=pitch, radius=radius, fov=14)
    back = Camera.from_matrices(cam.world_matrix(torch.float64), cam.intrinsics_inverse(torch.float64))
    assert back.yaw == pytest.approx(yaw, abs=1e-6) and back.pitch == pytest.approx(pitch, abs=1e-6)
    assert back.radius == pytest.approx(radius, abs=1e-9) and back.fov == pytest.approx(14, abs=1e-4)
    R = cam.world_matrix(torch.float64)[:3, :3]
    np.testing.assert_allclose((R.T @ R).numpy(), np.eye(3), atol=1e-12)
    assert torch.linalg.det(R) == pytest.approx(1.0)


def test_list_and_tensor_modes_round_trip() -> None:
    prior = CameraPrior()
    cam = Camera(yaw=-9.5, pitch=4.25)
    assert prior.from_list_mode(prior.to_list_mode(cam)).yaw == pytest.approx(cam.yaw)
    assert prior.from_list_mode(prior.to_list_mode(cam)).pitch == pytest.approx(cam.pitch)
    mode = torch.tensor([[1.0, -2.0], [0.0, 0.5]], dtype=torch.float64)
    yaw, polar = prior.from_tensor_mode(mode)
    np.testing.assert_allclose(yaw.numpy(), [0.3, 0.0])
    np.testing.assert_allclose(polar.numpy(), [math.pi / 2 - 0.31, math.pi / 2 + 0.0775])
    np.testing.assert_allclose(prior.to_tensor_mode(yaw, polar).numpy(), mode.numpy())
    assert prior.from_list_mode([0.5, 0.5, 0.5, 2.0]).radius == pytest.approx(2.0)


def test_prior_sampling_is_seeded_and_has_the_training_spread() -> None:
    prior = CameraPrior()
    a = prior.sample(4000, torch.Generator().manual_seed(1))
    b = prior.sample(4000, torch.Generator().manual_seed(1))
    assert a == b
    assert a != prior.sample(4000, torch.Generator().manual_seed(2))
    yaw = np.radians([c.yaw for c in a])
    polar = np.pi / 2 - np.radians([c.pitch for c in a])
    assert abs(yaw.mean()) < 0.02 and yaw.std() == pytest.approx(0.3, rel=0.05)
    assert abs(polar.mean() - np.pi / 2) < 0.01 and polar.std() == pytest.approx(0.155, rel=0.05)
    assert prior.log_prob(torch.tensor([0.0]), torch.tensor([0.0])) > prior.log_prob(torch.tensor([20.0]),
                                                                                    torch.tensor([0.0]))


def test_matrices_are_differentiable_in_the_angles() -> None:
    yaw = torch.tensor([10.0], requires_grad=True)
    pitch = torch.tensor([5.0], requires_grad=True)
    world_matrix(yaw, pitch, torch.ones(1))[:, :3, 3].sum().backward()
    assert yaw.grad.abs() > 0 and pitch.grad.abs() > 0


def test_position_and_angles_are_inverse() -> None:
    yaw, pitch, radius = torch.tensor([33.0, -70.0]), torch.tensor([-20.0, 45.0]), torch.tensor([1.0, 0.5])
    eye = camera_position(yaw, pitch, radius)
    assert torch.allclose(eye.norm(dim=-1), radius)
    y2, p2, r2 = angles_from_world_matrix(world_matrix(yaw, pitch, radius))
    assert torch.allclose(y2, yaw, atol=1e-4) and torch.allclose(p2, pitch, atol=1e-4) and torch.allclose(r2, radius)
    fov = torch.tensor([9.0, 12.0, 15.0])
    assert torch.allclose(fov_from_intrinsics_inverse(intrinsics_inverse(fov)).float(), fov, atol=1e-4)
