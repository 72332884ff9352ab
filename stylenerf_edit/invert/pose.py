"""Head pose in the generator's camera convention: from 68 landmarks (solvePnP), or by search.

Two initial estimators, then joint refinement inside the optimisation (``invert.optimize``):

* :func:`pose_from_landmarks` fits a 3-D mean face to the aligned crop's landmarks with OpenCV's solvePnP
  under the generator's own intrinsics (its fov), converts the head rotation analytically into the camera
  yaw/pitch that would see the head that way (head at the origin facing +x, +z up), and applies a per-generator
  linear :class:`PoseCalibration` that absorbs what the mean face and the landmark detector get wrong. The
  calibration is fitted by :func:`calibrate_pose`: render generator samples at known prior cameras, detect
  their landmarks, least-squares ``true = scale * estimate + offset`` per angle; its residual is the honest
  error bar of the estimator for that generator.
* :func:`search_pose` needs no landmarks (stylised or tiny faces, pre-aligned crops where detection fails):
  it renders the average face over a grid of prior cameras and keeps the one closest to the photo.

The mean face is an anthropometric average (millimetres, OpenCV axes: x right, y down, z away from the
viewer of a frontal face), written for this project.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.generator.network import Generator

# 68-point (iBUG) index -> 3-D position. Points that stay reliable under yaw: eye corners, nose, mouth, chin.
# Proportions follow where dlib puts these points on frontal faces (eye line to mouth corners = 60 mm; outer
# eye corners 1.5x and mouth 1.05x that apart; nose tip at 0.59, lips at 1.0 and 1.3, chin at 1.85 of it);
# depths are anthropometric averages relative to the outer eye corners.
MEAN_FACE: dict[int, tuple[float, float, float]] = {
    8: (0.0, 111.0, -10.0),      # chin (menton)
    27: (0.0, 0.0, -15.0),       # nasion, between the eyes
    30: (0.0, 35.0, -35.0),      # nose tip
    33: (0.0, 47.0, -22.0),      # subnasale
    36: (-45.0, 0.0, 0.0),       # right eye, outer corner (image left)
    39: (-20.0, 0.0, -8.0),      # right eye, inner corner
    42: (20.0, 0.0, -8.0),       # left eye, inner corner
    45: (45.0, 0.0, 0.0),        # left eye, outer corner (image right)
    48: (-31.0, 60.0, -8.0),     # right mouth corner
    51: (0.0, 60.0, -22.0),      # upper lip centre
    54: (31.0, 60.0, -8.0),      # left mouth corner
    57: (0.0, 78.0, -18.0),      # lower lip centre
}
_INDICES = sorted(MEAN_FACE)


class PoseError(StyleNerfEditError):
    """The pose could not be estimated or a calibration file is unusable."""


@dataclass(frozen=True)
class PoseCalibration:
    """``generator angle = scale * raw estimate + offset`` per angle (degrees), and how well that fits."""

    yaw_scale: float = 1.0
    yaw_offset: float = 0.0
    pitch_scale: float = 1.0
    pitch_offset: float = 0.0
    residual_yaw: float | None = None      # RMS error (deg) of the calibrated estimate on the fitting samples
    residual_pitch: float | None = None
    samples: int = 0
    source: str = "uncalibrated"

    def apply(self, yaw: float, pitch: float) -> tuple[float, float]:
        return self.yaw_scale * yaw + self.yaw_offset, self.pitch_scale * pitch + self.pitch_offset

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PoseCalibration":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise PoseError(f"{path}: not a pose calibration file ({type(e).__name__}); re-create it with "
                            "`stylenerf-edit calibrate-pose`") from None


def intrinsics(size: int, fov: float) -> np.ndarray:
    """OpenCV camera matrix [3, 3] of a ``size``-pixel square image seen with the generator's ``fov`` (deg).

    Pixel ``i``'s centre is at coordinate ``i`` (dlib's and OpenCV's convention)."""
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    c = 0.5 * size - 0.5
    return np.array([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=np.float64)


def camera_angles_from_rotation(rotation: np.ndarray, translation: np.ndarray) -> tuple[float, float]:
    """solvePnP's head-to-camera transform -> (yaw, pitch) in degrees of the generator camera seeing the head.

    The camera centre in head coordinates is ``-R^T t``; head axes map to the generator's world as
    x (viewer's right of a frontal face, the head's left) -> +y, y (down) -> -z, z (into the head) -> -x.
    """
    c = -rotation.T @ translation.reshape(3)
    world = np.array([-c[2], c[0], -c[1]])
    yaw = math.degrees(math.atan2(world[1], world[0]))
    pitch = math.degrees(math.asin(np.clip(world[2] / np.linalg.norm(world), -1, 1)))
    return yaw, pitch


def raw_pose_from_landmarks(landmarks: np.ndarray, size: int, fov: float) -> tuple[float, float]:
    """Uncalibrated (yaw, pitch) in degrees from 68 landmarks [68, 2] of a ``size``-pixel aligned crop."""
    import cv2

    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2) or not np.isfinite(landmarks).all():
        raise PoseError(f"pose needs 68 finite (x, y) landmarks, got an array of shape {landmarks.shape}")
    obj = np.array([MEAN_FACE[i] for i in _INDICES], dtype=np.float64)
    img = landmarks[_INDICES]
    K = intrinsics(size, fov)
    # Start from a frontal face at the distance that matches its apparent size, then refine iteratively.
    depth = K[0, 0] * 90.0 / max(np.linalg.norm(landmarks[45] - landmarks[36]), 1e-6)
    rvec0 = np.zeros((3, 1))
    tvec0 = np.array([[0.0], [0.0], [depth]])
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec0, tvec0, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise PoseError("solvePnP found no head pose for these landmarks; pass --camera YAW,PITCH")
    rotation, _ = cv2.Rodrigues(rvec)
    return camera_angles_from_rotation(rotation, tvec)


def pose_from_landmarks(landmarks: np.ndarray, size: int, fov: float,
                        calibration: PoseCalibration | None = None) -> Camera:
    """Calibrated camera estimate from 68 landmarks of an aligned ``size``-pixel crop."""
    calibration = calibration or PoseCalibration()
    yaw, pitch = calibration.apply(*raw_pose_from_landmarks(landmarks, size, fov))
    return Camera(yaw=yaw, pitch=pitch, fov=fov)


def project_mean_face(camera: Camera, size: int) -> np.ndarray:
    """The mean face placed at the origin (facing +x) seen through ``camera``: landmarks [68, 2], NaN where the
    mean face has no point. The exact inverse of :func:`raw_pose_from_landmarks` for a perfect detector."""
    obj = np.array([MEAN_FACE[i] for i in _INDICES], dtype=np.float64) / 1000.0 * 0.9   # ~ head size in world units
    world = np.stack([-obj[:, 2], obj[:, 0], -obj[:, 1]], axis=1)
    mat = camera.world_matrix(dtype=torch.float64).numpy()
    rot, eye = mat[:3, :3], mat[:3, 3]
    cam = (world - eye) @ rot                     # columns: right, up, backward
    f = 1 / math.tan(math.radians(camera.fov) / 2)
    ndc = f * cam[:, :2] / (-cam[:, 2:3])
    out = np.full((68, 2), np.nan)
    out[_INDICES, 0] = (ndc[:, 0] + 1) * size / 2 - 0.5
    out[_INDICES, 1] = (1 - ndc[:, 1]) * size / 2 - 0.5
    return out


def fit_calibration(raw: np.ndarray, true: np.ndarray, source: str) -> PoseCalibration:
    """Least-squares ``true = scale * raw + offset`` per angle from pairs raw, true [N, 2] (yaw, pitch)."""
    raw, true = np.asarray(raw, dtype=np.float64), np.asarray(true, dtype=np.float64)
    assert raw.shape == true.shape and raw.ndim == 2 and raw.shape[1] == 2
    if len(raw) < 3:
        raise PoseError(f"a pose calibration needs at least 3 samples with landmarks, got {len(raw)}")
    coef, residual = [], []
    for k in range(2):
        A = np.stack([raw[:, k], np.ones(len(raw))], axis=1)
        sol = np.linalg.lstsq(A, true[:, k], rcond=None)[0]
        coef.append(sol)
        residual.append(float(np.sqrt(np.mean((A @ sol - true[:, k]) ** 2))))
    return PoseCalibration(yaw_scale=float(coef[0][0]), yaw_offset=float(coef[0][1]), pitch_scale=float(coef[1][0]),
                           pitch_offset=float(coef[1][1]), residual_yaw=residual[0], residual_pitch=residual[1],
                           samples=len(raw), source=source)


LandmarkFn = Callable[[np.ndarray], "np.ndarray | None"]


@torch.no_grad()
def calibrate_pose(G: Generator, landmarks_fn: LandmarkFn, n: int = 200, seed: int = 0, batch: int = 8,
                   truncation_psi: float = 0.7, cameras: Sequence[Camera] | None = None,
                   source: str = "") -> PoseCalibration:
    """Fit a :class:`PoseCalibration` for ``G``: render ``n`` samples at known cameras (``cameras``, or draws
    from the pose prior), run ``landmarks_fn`` on each uint8 image [R, R, 3] (None when it finds no face) and
    fit the map from raw estimates to the truth."""
    from stylenerf_edit.images import to_uint8

    gen = torch.Generator().manual_seed(seed)
    cameras = list(cameras) if cameras is not None else G.camera_prior.sample(n, gen)
    n = len(cameras)
    res, fov = G.img_resolution, G.camera_prior.fov
    raw, true = [], []
    for start in range(0, n, batch):
        cams = cameras[start:start + batch]
        ws = G.mapping(G.sample_z(len(cams), gen), truncation_psi=truncation_psi)
        images = to_uint8(G.synthesize(ws, cams, G.sample_bg_code(len(cams), gen)).img)
        for image, cam in zip(images, cams):
            lm = landmarks_fn(image)
            if lm is None:
                continue
            raw.append(raw_pose_from_landmarks(lm, res, fov))
            true.append((cam.yaw, cam.pitch))
    return fit_calibration(np.array(raw).reshape(-1, 2), np.array(true).reshape(-1, 2),
                           source=source or f"{len(raw)}/{n} samples, seed {seed}, psi {truncation_psi}")


def pose_grid(G: Generator, yaw_step: float = 5.0, pitch_step: float = 5.0, extent: float = 2.5) -> list[Camera]:
    """Cameras covering the prior's mean +- ``extent`` standard deviations in each angle."""
    prior = G.camera_prior
    centre = prior.frontal()
    half_yaw, half_pitch = extent * math.degrees(prior.std_u), extent * math.degrees(prior.std_v)
    yaws = np.arange(-math.floor(half_yaw / yaw_step), math.floor(half_yaw / yaw_step) + 1) * yaw_step
    pitches = np.arange(-math.floor(half_pitch / pitch_step), math.floor(half_pitch / pitch_step) + 1) * pitch_step
    return [centre.with_(yaw=centre.yaw + float(y), pitch=centre.pitch + float(p)) for p in pitches for y in yaws]


@torch.no_grad()
def search_pose(G: Generator, target: torch.Tensor, ws: torch.Tensor, bg_code: torch.Tensor,
                distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                cameras: Sequence[Camera] | None = None, batch: int = 32) -> list[Camera]:
    """Analysis by synthesis: for each target, the candidate camera whose rendering of ``ws`` is closest.

    Args:
        target: photos [B, 3, R, R] in [-1, 1] at the generator's resolution.
        ws: [B, num_ws, w_dim] (usually ``w_avg`` repeated); bg_code: [B, bg_code_dim].
        distance: per-image distance of two [N, 3, R, R] batches -> [N].
        cameras: candidates (default :func:`pose_grid`).
    """
    assert target.ndim == 4 and target.shape[0] == ws.shape[0] == bg_code.shape[0]
    cameras = list(cameras or pose_grid(G))
    best = []
    for i in range(target.shape[0]):
        scores = []
        for start in range(0, len(cameras), batch):
            chunk = cameras[start:start + batch]
            world, intr = stack_cameras(chunk, device=G.device)
            n = len(chunk)
            img = G.synthesis(ws[i:i + 1].expand(n, -1, -1), world, intr, bg_code[i:i + 1].expand(n, -1)).img
            scores.append(distance(img, target[i:i + 1].expand(n, -1, -1, -1)))
        best.append(cameras[int(torch.cat(scores).argmin())])
    return best
