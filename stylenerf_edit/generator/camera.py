"""Cameras of the StyleNeRF FFHQ generator, in user units and in the official representations.

World frame (official): right-handed, +z up, the head at the origin facing +x. The frontal camera sits
on +x at distance ``radius`` and looks at the origin.

User units used throughout this toolkit:

* ``yaw`` (degrees): rotation of the camera about +z. Positive yaw moves the camera towards +y, the
  subject's left, so the face turns towards the image's left edge and its left cheek shows.
* ``pitch`` (degrees): elevation of the camera. Positive pitch raises the camera above the face, which
  is then seen from above. The official code's polar angle is ``v = pi/2 - radians(pitch)``.
* ``radius``: distance of the camera from the origin (1 for FFHQ).
* ``fov``: vertical = horizontal field of view in degrees (12 for FFHQ).

Official representations:

* list mode ``[a, b, c]``: uniform coordinates in ``range_u``, ``range_v``, ``range_radius``;
* tensor mode ``[B, 2]`` (Gaussian convention): ``yaw = mean_u + sigma_u * a``, ``v = mean_v + sigma_v * b``;
* ``world_mat`` [B, 4, 4] camera-to-world (OpenGL style: the camera looks along its -z axis) and
  ``camera_mat`` [B, 4, 4] = diag(1/f, 1/f, 1, 1) with ``f = 1 / tan(fov / 2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch

__all__ = [
    "Camera",
    "CameraPrior",
    "camera_position",
    "look_at_origin",
    "world_matrix",
    "intrinsics_inverse",
    "angles_from_world_matrix",
    "fov_from_intrinsics_inverse",
    "pixel_grid",
    "ray_bundle",
]


@dataclass(frozen=True)
class CameraPrior:
    """The generator's pose distribution and the official camera ranges (radians, radius units).

    ``range_u``/``range_v`` are mean -/+ one standard deviation of the Gaussian training prior when
    ``gaussian`` is true (the FFHQ setting): yaw ~ N(0, 0.3^2), polar ~ N(pi/2, 0.155^2).
    """

    range_u: tuple[float, float] = (-0.3, 0.3)
    range_v: tuple[float, float] = (math.pi / 2 - 0.155, math.pi / 2 + 0.155)
    range_radius: tuple[float, float] = (1.0, 1.0)
    fov: float = 12.0
    gaussian: bool = True

    @property
    def mean_u(self) -> float:
        return 0.5 * (self.range_u[0] + self.range_u[1])

    @property
    def mean_v(self) -> float:
        return 0.5 * (self.range_v[0] + self.range_v[1])

    @property
    def std_u(self) -> float:
        return self.mean_u - self.range_u[0]

    @property
    def std_v(self) -> float:
        return self.mean_v - self.range_v[0]

    @property
    def mean_radius(self) -> float:
        return 0.5 * (self.range_radius[0] + self.range_radius[1])

    def frontal(self) -> "Camera":
        return Camera(yaw=math.degrees(self.mean_u), pitch=90.0 - math.degrees(self.mean_v),
                      radius=self.mean_radius, fov=self.fov)

    def from_list_mode(self, mode: Sequence[float]) -> "Camera":
        """Official list mode ``[a, b, c]`` (or ``[a, b, c, radius_scale]``), uniform in the ranges."""
        if len(mode) not in (3, 4):
            raise ValueError(f"list-mode camera needs 3 or 4 values, got {len(mode)}")
        a, b, c = (float(x) for x in mode[:3])
        scale = float(mode[3]) if len(mode) == 4 else 1.0
        r0, r1 = self.range_radius[0] * scale, self.range_radius[1] * scale
        u = self.range_u[0] + a * (self.range_u[1] - self.range_u[0])
        v = self.range_v[0] + b * (self.range_v[1] - self.range_v[0])
        return Camera.from_polar(u, v, radius=r0 + c * (r1 - r0), fov=self.fov)

    def to_list_mode(self, camera: "Camera") -> list[float]:
        """Inverse of :meth:`from_list_mode` (radius coordinate 0.5 when the radius range is a point)."""
        u, v = math.radians(camera.yaw), math.pi / 2 - math.radians(camera.pitch)
        r0, r1 = self.range_radius
        c = 0.5 if r1 == r0 else (camera.radius - r0) / (r1 - r0)
        return [(u - self.range_u[0]) / (self.range_u[1] - self.range_u[0]),
                (v - self.range_v[0]) / (self.range_v[1] - self.range_v[0]), c]

    def from_tensor_mode(self, mode: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Official tensor mode [B, 2] -> (yaw, polar) in radians, each [B]; radius is the range midpoint."""
        assert mode.ndim == 2 and mode.shape[1] == 2, f"expected [B, 2], got {tuple(mode.shape)}"
        if self.gaussian:
            return self.mean_u + self.std_u * mode[:, 0], self.mean_v + self.std_v * mode[:, 1]
        return (self.range_u[0] + mode[:, 0] * (self.range_u[1] - self.range_u[0]),
                self.range_v[0] + mode[:, 1] * (self.range_v[1] - self.range_v[0]))

    def to_tensor_mode(self, yaw: torch.Tensor, polar: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`from_tensor_mode`: radians [B] -> [B, 2]."""
        if self.gaussian:
            return torch.stack([(yaw - self.mean_u) / self.std_u, (polar - self.mean_v) / self.std_v], 1)
        return torch.stack([(yaw - self.range_u[0]) / (self.range_u[1] - self.range_u[0]),
                            (polar - self.range_v[0]) / (self.range_v[1] - self.range_v[0])], 1)

    def sample(self, n: int, generator: torch.Generator) -> list["Camera"]:
        """Draw ``n`` cameras from the training prior (Gaussian or uniform) with an explicit RNG."""
        if self.gaussian:
            draws = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        else:
            draws = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        yaw, polar = self.from_tensor_mode(draws)
        radius = self.range_radius[0] + torch.rand(n, generator=generator, dtype=torch.float64) * (
            self.range_radius[1] - self.range_radius[0])
        return [Camera.from_polar(float(u), float(v), radius=float(r), fov=self.fov)
                for u, v, r in zip(yaw, polar, radius)]

    def log_prob(self, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """Gaussian log-density (up to a constant) of user-unit angles in degrees; used as a pose prior."""
        u = torch.deg2rad(yaw) - self.mean_u
        v = (math.pi / 2 - torch.deg2rad(pitch)) - self.mean_v
        return -0.5 * ((u / self.std_u) ** 2 + (v / self.std_v) ** 2)


@dataclass(frozen=True)
class Camera:
    """One camera in user units: degrees for ``yaw``, ``pitch`` and ``fov``; see the module docstring."""

    yaw: float = 0.0
    pitch: float = 0.0
    radius: float = 1.0
    fov: float = 12.0

    @classmethod
    def from_polar(cls, yaw_rad: float, polar_rad: float, radius: float = 1.0, fov: float = 12.0) -> "Camera":
        """From the official angles: azimuth ``u`` and polar angle ``v`` measured from +z."""
        return cls(yaw=math.degrees(yaw_rad), pitch=90.0 - math.degrees(polar_rad), radius=radius, fov=fov)

    @classmethod
    def from_matrices(cls, world_mat: torch.Tensor, camera_mat: torch.Tensor | None = None) -> "Camera":
        """From one official camera-to-world matrix [4, 4] (and optional inverse intrinsics [4, 4])."""
        yaw, pitch, radius = angles_from_world_matrix(world_mat.reshape(1, 4, 4).double())
        fov = 12.0 if camera_mat is None else float(fov_from_intrinsics_inverse(camera_mat.reshape(1, 4, 4))[0])
        return cls(yaw=float(yaw[0]), pitch=float(pitch[0]), radius=float(radius[0]), fov=fov)

    def with_(self, **changes: float) -> "Camera":
        return replace(self, **changes)

    def world_matrix(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """Camera-to-world matrix [4, 4]."""
        t = torch.tensor([[self.yaw, self.pitch, self.radius]], dtype=torch.float64)
        return world_matrix(t[:, 0], t[:, 1], t[:, 2])[0].to(dtype=dtype, device=device)

    def intrinsics_inverse(self, dtype: torch.dtype = torch.float32,
                           device: torch.device | str = "cpu") -> torch.Tensor:
        """Official ``camera_mat`` [4, 4] = diag(1/f, 1/f, 1, 1)."""
        return intrinsics_inverse(torch.tensor([self.fov]))[0].to(dtype=dtype, device=device)


def stack_cameras(cameras: Sequence[Camera], dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras -> (world_mat [B, 4, 4], camera_mat [B, 4, 4])."""
    t = torch.tensor([[c.yaw, c.pitch, c.radius, c.fov] for c in cameras], dtype=torch.float64)
    world = world_matrix(t[:, 0], t[:, 1], t[:, 2])
    intr = intrinsics_inverse(t[:, 3])
    return world.to(dtype=dtype, device=device), intr.to(dtype=dtype, device=device)


def camera_position(yaw: torch.Tensor, pitch: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """User-unit angles (degrees) [B] and radius [B] -> camera centre [B, 3] in world coordinates."""
    u = torch.deg2rad(yaw)
    v = math.pi / 2 - torch.deg2rad(pitch)
    return radius[:, None] * torch.stack([v.sin() * u.cos(), v.sin() * u.sin(), v.cos()], dim=-1)


def look_at_origin(eye: torch.Tensor) -> torch.Tensor:
    """Camera centres [B, 3] -> rotation [B, 3, 3] with columns (right, up, backward), world up = +z.

    Degenerate when the camera sits on the z axis (never within the FFHQ pose range).
    """
    up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    z_axis = torch.nn.functional.normalize(eye, dim=-1, eps=1e-8)
    x_axis = torch.nn.functional.normalize(torch.linalg.cross(up, z_axis, dim=-1), dim=-1, eps=1e-8)
    y_axis = torch.nn.functional.normalize(torch.linalg.cross(z_axis, x_axis, dim=-1), dim=-1, eps=1e-8)
    return torch.stack([x_axis, y_axis, z_axis], dim=-1)


def world_matrix(yaw: torch.Tensor, pitch: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """User-unit angles (degrees) [B], radius [B] -> camera-to-world matrices [B, 4, 4] (differentiable)."""
    eye = camera_position(yaw, pitch, radius)
    top = torch.cat([look_at_origin(eye), eye[:, :, None]], dim=2)
    bottom = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]], dtype=eye.dtype, device=eye.device).expand(len(eye), 1, 4)
    return torch.cat([top, bottom], dim=1)


def intrinsics_inverse(fov: torch.Tensor) -> torch.Tensor:
    """Field of view in degrees [B] -> official ``camera_mat`` [B, 4, 4] = diag(1/f, 1/f, 1, 1).

    ``1/f`` is rounded through float32 as the official code inverts a float32 matrix.
    """
    inv_f = torch.tan(torch.deg2rad(fov.double()) / 2).float().double()
    eye = torch.eye(4, dtype=torch.float64).repeat(len(fov), 1, 1)
    eye[:, 0, 0] = inv_f
    eye[:, 1, 1] = inv_f
    return eye.to(fov.dtype if fov.is_floating_point() else torch.float32)


def angles_from_world_matrix(world_mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera-to-world [B, 4, 4] -> (yaw deg [B], pitch deg [B], radius [B]) of the camera centre.

    Only the position is used: cameras of this generator always look at the origin with +z up.
    """
    eye = world_mat[:, :3, 3]
    radius = eye.norm(dim=-1)
    yaw = torch.rad2deg(torch.atan2(eye[:, 1], eye[:, 0]))
    pitch = torch.rad2deg(torch.asin((eye[:, 2] / radius).clamp(-1, 1)))
    return yaw, pitch, radius


def fov_from_intrinsics_inverse(camera_mat: torch.Tensor) -> torch.Tensor:
    """Official ``camera_mat`` [B, 4, 4] -> fov in degrees [B]."""
    return torch.rad2deg(2 * torch.atan(camera_mat[:, 0, 0].double()))


def pixel_grid(resolution: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """NDC pixel centres [R*R, 2] (x right, y up), row-major from the top-left pixel."""
    c = (2 * torch.arange(resolution, dtype=torch.float64) + 1) / resolution - 1
    y, x = torch.meshgrid(-c, c, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2).to(dtype=dtype, device=device)


def ray_bundle(world_mat: torch.Tensor, camera_mat: torch.Tensor, resolution: int,
               roll: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres of an R x R grid.

    Args:
        world_mat: camera-to-world [B, 4, 4].
        camera_mat: inverse intrinsics [B, 4, 4].
        resolution: R.
        roll: optional rotation of the pixel grid in radians [B] (the official ``theta``).
    Returns:
        origins [B, 3] and directions [B, R*R, 3], not normalised: the direction's camera-space z
        component is -1, so ``origin + t * direction`` lies at camera depth t.
    """
    assert world_mat.shape[1:] == (4, 4) and camera_mat.shape[1:] == (4, 4)
    pix = pixel_grid(resolution, world_mat.dtype, world_mat.device).expand(len(world_mat), -1, -1)
    if roll is not None:
        cos, sin = roll.cos()[:, None], roll.sin()[:, None]
        pix = torch.stack([pix[..., 0] * cos - pix[..., 1] * sin, pix[..., 0] * sin + pix[..., 1] * cos], -1)
    # Image-plane points at camera depth -1, mapped to the world with the official product order
    # ((world @ intrinsics) @ points), which keeps the rays bit-identical to the reference.
    homogeneous = torch.cat([pix, -torch.ones_like(pix[..., :1]), torch.ones_like(pix[..., :1])], dim=-1)
    to_world = world_mat @ camera_mat
    points = (to_world @ homogeneous.transpose(1, 2).contiguous())[:, :3].transpose(1, 2)
    origins = to_world[:, :3, 3]
    return origins, points - origins[:, None, :]
