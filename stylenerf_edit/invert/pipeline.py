"""Photos to latents: load, align, estimate the camera, optimise, and write each photo's results.

Per photo, ``OUT/<name>/`` (see :func:`output_dirs`) receives ``aligned.png`` (the generator-resolution target),
``reconstruction.png``, ``latent.npz`` (see ``invert.latent``), ``metrics.json`` and, on request,
``optimisation.mp4`` (target | reconstruction over the steps), ``pasted.png`` (the reconstruction warped
back into the original photo) and, with pivotal tuning (``pti``), ``tuning.safetensors`` (see ``invert.pti``)
and ``reconstruction_pti.png``. A photo that cannot be processed (unreadable, no face) is reported and skipped;
the others still run.

Initial camera (``pose``):
  * ``landmarks``: solvePnP on the 68 landmarks of the detected face, through the generator's pose calibration
    (``pose_calibration.json`` beside the model, written by ``stylenerf-edit calibrate-pose``; uncalibrated
    otherwise, which is exact for a perfect mean face and detector only);
  * ``predictor``: the pose regressor shipped with a model (``predictor.json`` beside it: the bundled model's
    attribute predictor, trained on its procedural world, where dlib finds no faces);
  * ``search``: render the average face over a grid of prior cameras and keep the closest (any model);
  * ``auto``: landmarks when a face was detected, else the model's predictor when it has one, else landmarks
    found on the aligned crop itself (the calibration was fitted on the generator's own aligned renders), else
    search.

The search compares at most 64-px versions of the renders and the photo: a coarse pose needs no detail, and
LPIPS at full size would make it cost minutes per photo on the official models.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylenerf_edit.images import save_png, to_uint8, write_mp4
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import write_text
from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.generator.checkpoint import (GeneratorInfo, load_with_info, model_directory, resolve_device,
                                                 resolve_network)
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.metrics import psnr
from stylenerf_edit.names import photo_output_names
from stylenerf_edit.progress import Progress

from .align import AlignedFace, align_photo, aligned_input, paste_back
from .latent import GeneratorRef, Latent, save_latent
from .lpips import LPIPS
from .optimize import InversionConfig, InversionResult, invert, lpips_input
from .photo import load_photo
from .pose import PoseCalibration, PoseError, pose_from_landmarks, search_pose
from .pti import TUNING_NAME, TuningConfig, apply_tuning, save_tuning, tune
from .settings import POSE_METHODS

CALIBRATION_NAME = "pose_calibration.json"
PREDICTOR_CONFIG = "predictor.json"


@dataclass
class PreparedPhoto:
    """A photo made ready for the generator."""

    path: Path
    face: AlignedFace            # aligned at the generator's resolution
    target: torch.Tensor         # [3, R, R] in [-1, 1]


def prepare_photo(path: str | Path, resolution: int, *, aligned: bool = False, face_index: int = 0,
                  landmarks: str = "dlib") -> PreparedPhoto:
    """Load ``path`` and align its face (or take it as an aligned crop) at ``resolution`` pixels."""
    path = Path(path)
    face = aligned_input(path, resolution) if aligned else align_photo(path, resolution, face_index=face_index,
                                                                         backend=landmarks)
    target = torch.from_numpy(np.array(face.image)).permute(2, 0, 1).float() / 127.5 - 1
    return PreparedPhoto(path, face, target)


def calibration_path(network: str | Path) -> Path:
    path = resolve_network(network)
    return path / CALIBRATION_NAME if path.is_dir() else path.with_name(f"{path.stem}.{CALIBRATION_NAME}")


def load_pose_calibration(network: str | Path) -> PoseCalibration:
    """The model's pose calibration, or the uncalibrated identity when it has none."""
    path = calibration_path(network)
    return PoseCalibration.load(path) if path.is_file() else PoseCalibration()


def has_pose_predictor(network: str | Path) -> bool:
    return (model_directory(network) / PREDICTOR_CONFIG).is_file()


SEARCH_RESOLUTION = 64


def _search_distance(lpips: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def small(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=SEARCH_RESOLUTION, mode="area") if x.shape[-1] > SEARCH_RESOLUTION else x

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = small(a), small(b)
        return lpips(a, b).reshape(-1) + (a - b).square().mean(dim=(1, 2, 3))

    return distance


def _crop_landmarks(photo: PreparedPhoto) -> np.ndarray | None:
    """68 landmarks of the face in an aligned crop (taken as given, without detection), None when none is found."""
    from .landmarks import detect_faces

    faces = detect_faces(np.asarray(photo.face.image))
    return faces[0].landmarks if faces else None


def estimate_cameras(G: Generator, network: str | Path, photos: Sequence[PreparedPhoto], method: str,
                     lpips: torch.nn.Module) -> list[tuple[Camera, str]]:
    """Initial camera of each photo and the method that produced it (see the module docstring)."""
    if method not in POSE_METHODS:
        raise StyleNerfEditError(f"unknown pose method {method!r}; choose one of {', '.join(POSE_METHODS)}")
    fov, res = G.camera_prior.fov, G.img_resolution
    chosen, found = [], []
    for p in photos:
        m, landmarks = method, p.face.landmarks
        if m == "auto" and landmarks is None:
            m = "predictor" if has_pose_predictor(network) else "landmarks"
        if m == "landmarks" and landmarks is None:
            landmarks = _crop_landmarks(p)
            if landmarks is None and method == "auto":
                m = "search"
            elif landmarks is None:
                raise StyleNerfEditError(f"{p.path}: --pose landmarks found no face in the aligned crop; use "
                                         "--pose search or --pose auto")
        elif m == "auto":
            m = "landmarks"
        if m == "predictor" and not has_pose_predictor(network):
            raise StyleNerfEditError(f"{network}: this model ships no pose predictor ({PREDICTOR_CONFIG}); use "
                                     "--pose landmarks or --pose search")
        chosen.append(m)
        found.append(landmarks)
    cameras: list[Camera | None] = [None] * len(photos)
    calibration = load_pose_calibration(network) if "landmarks" in chosen else None
    for i, m in enumerate(chosen):
        if m == "landmarks":
            cameras[i] = pose_from_landmarks(found[i], res, fov, calibration)
    predicted = [i for i, m in enumerate(chosen) if m == "predictor"]
    if predicted:
        from stylenerf_edit.synthetic.predictor import AttributePredictor

        model = AttributePredictor.from_pretrained(model_directory(network))
        scores = model.predict(torch.stack([photos[i].target for i in predicted]))
        for j, i in enumerate(predicted):
            cameras[i] = G.camera_prior.frontal().with_(yaw=float(scores["yaw"][j]), pitch=float(scores["pitch"][j]))
    searched = [i for i, m in enumerate(chosen) if m == "search"]
    if searched:
        targets = torch.stack([photos[i].target for i in searched]).to(G.device)
        ws = G.mapping.w_avg.expand(len(searched), G.num_ws, -1)
        bg = torch.zeros(len(searched), G.cfg.bg_code_dim, device=G.device)
        for i, cam in zip(searched, search_pose(G, targets, ws, bg, _search_distance(lpips))):
            cameras[i] = cam
    return [(cam, m) for cam, m in zip(cameras, chosen)]


@dataclass
class InvertOptions:
    """What ``stylenerf-edit invert`` exposes, with the same defaults."""

    config: InversionConfig = field(default_factory=InversionConfig)
    aligned: bool = False            # inputs are aligned square crops: no detection
    face_index: int = 0              # which detected face, largest first
    landmarks: str = "dlib"          # landmark backend: dlib or face-alignment
    pose: str = "auto"               # see POSE_METHODS
    camera: tuple[float, float] | None = None    # yaw, pitch override of the initial camera
    batch_size: int = 4
    save_video: bool = False
    video_frames: int = 60           # frames of the optimisation video
    paste_back: bool = False
    paste_region: str = "face"       # what --paste-back blends in: the face region (landmarks) or the square
    lpips_net: str = "vgg"
    pti: TuningConfig | None = None  # also tune the generator around each latent (tuning.safetensors)


@dataclass
class PhotoOutcome:
    """What happened to one photo."""

    photo: Path
    out_dir: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    camera: Camera | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: where the photo's results went and how well it fits, or ``error: ...``."""
        if self.error:
            return f"error: {self.error}"
        m, c = self.metrics, self.camera
        tuned = f"  tuned: PSNR {m['pti_psnr']:.2f} dB  LPIPS {m['pti_lpips']:.3f}" if "pti_psnr" in m else ""
        return (f"{self.photo} -> {self.out_dir}  yaw {c.yaw:+.1f} pitch {c.pitch:+.1f}  "
                f"PSNR {m['psnr']:.2f} dB  LPIPS {m['lpips']:.3f}{tuned}")


# A fit this far from the photo (LPIPS, VGG) is not a usable inversion: on the bundled model's procedural
# benchmark (bench/inversion.py) the worst of the held-out photos reaches 0.10 at the default 300 steps.
POOR_LPIPS = 0.25


def fit_warnings(metrics: dict[str, float], info: GeneratorInfo, prepared: PreparedPhoto,
                 options: InvertOptions) -> list[str]:
    """One-line warnings about an inversion: a real face given to a model of procedural heads, a poor fit."""
    found = []
    from stylenerf_edit.synthetic.distill import DOMAIN

    if info.extra.get("source", {}).get("domain") == DOMAIN and prepared.face.face is not None:
        found.append(f"{prepared.path}: {info.name} draws procedural heads, not real faces, so its fit of this photo "
                     "is a cartoon; invert real photos with an official checkpoint (`stylenerf-edit download "
                     "ffhq_256`, then --network ffhq_256)")
    lpips = metrics.get("pti_lpips", metrics["lpips"])
    if lpips > POOR_LPIPS:
        more = [f"more --steps (now {options.config.steps})"] + (["--pti"] if options.pti is None else [])
        found.append(f"{prepared.path}: poor fit (LPIPS {lpips:.3f} > {POOR_LPIPS}); try {' or '.join(more)}, or a "
                     "model closer to the photo")
    return found


def _inverted_photo(folder: Path) -> str | None:
    """The photo (absolute path) whose results ``folder`` holds, from its ``metrics.json``; None otherwise."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        photo = json.loads((folder / "metrics.json").read_text()).get("photo")
    except (OSError, ValueError, AttributeError):
        return None
    return os.path.abspath(photo) if isinstance(photo, str) else None


def output_dirs(photos: Sequence[Path], out_dir: Path) -> list[Path]:
    """``out_dir/<name>`` per photo, named from the photo's absolute path by ``names.photo_output_names``: safe,
    unique within the call, the same on a rerun. An entry of ``out_dir`` that does not hold the results of one
    of these photos (a user's file or folder, a link) keeps its name to itself and is never written into."""
    keys = [os.path.abspath(p) for p in photos]
    ours = set(keys)
    taken = [e.name for e in out_dir.iterdir() if _inverted_photo(e) not in ours] if out_dir.is_dir() else []
    return [out_dir / name for name in photo_output_names(keys, taken)]


class VideoRecorder:
    """Target | current reconstruction frames at evenly spaced steps, scaled up to at least 256 px."""

    def __init__(self, targets: torch.Tensor, steps: int, frames: int):
        self.every = max(1, steps // max(1, frames))
        scale = max(1, -(-256 // targets.shape[-1]))
        self.scale = scale
        self.targets = to_uint8(self._up(targets))
        self.frames: list[list[np.ndarray]] = [[] for _ in range(len(targets))]

    def _up(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images.float(), scale_factor=self.scale, mode="nearest") if self.scale > 1 else images

    def __call__(self, step: int, images: torch.Tensor) -> None:
        if step % self.every == 0:
            for i, img in enumerate(to_uint8(self._up(images.cpu()))):
                self.frames[i].append(np.concatenate([self.targets[i], img], axis=1))


def write_photo_outputs(result: InversionResult, prepared: PreparedPhoto, out: Path, info: GeneratorInfo,
                 initial: tuple[Camera, str], options: InvertOptions, seconds: float,
                 frames: list[np.ndarray] | None) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    save_png(prepared.face.image, out / "aligned.png")
    recon = to_uint8(result.image[None].cpu())[0]
    save_png(recon, out / "reconstruction.png")
    cam0, method = initial
    latent = Latent(ws=result.ws.cpu().numpy(), camera=result.camera, bg_code=result.bg_code.cpu().numpy(),
                    generator=GeneratorRef.from_info(info), alignment=prepared.face.alignment.to_dict(),
                    metrics=result.metrics, loss_history=result.history, source=str(prepared.path),
                    extra={"pose_method": method, "initial_camera": asdict(cam0)})
    save_latent(latent, out / "latent.npz")
    if frames:
        write_mp4(frames, out / "optimisation.mp4", fps=15)
    if options.paste_back:
        original = load_photo(prepared.path)
        landmarks = prepared.face.landmarks if options.paste_region == "face" else None
        save_png(paste_back(original, recon, prepared.face.alignment, landmarks=landmarks), out / "pasted.png")
    report = {"photo": os.path.abspath(prepared.path), "network": info.name, "weights_sha256": info.weights_sha256,
              "camera": asdict(result.camera), "initial_camera": asdict(cam0), "pose_method": method,
              **result.metrics, "steps": options.config.steps, "seconds": round(seconds, 2),
              "config": asdict(options.config)}
    write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    return result.metrics


def tune_photo(G: Generator, info: GeneratorInfo, result: InversionResult, prepared: PreparedPhoto, out: Path,
               lpips: LPIPS, config: TuningConfig,
               callback: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """Pivotal tuning around one inverted latent: writes ``tuning.safetensors`` and ``reconstruction_pti.png``,
    adds the tuned fit (``pti_psnr``, ``pti_lpips``, ``pti_seconds``) to ``metrics.json`` and returns it.
    ``callback(step, terms)`` follows the tuning's steps."""
    t0 = time.time()
    tuning = tune(G, result.ws, result.camera, result.bg_code, prepared.target, lpips, info.weights_sha256, config,
                  callback=callback)
    tuned = apply_tuning(G, tuning, info.weights_sha256)
    world, intr = stack_cameras([result.camera], device=G.device)
    target = prepared.target[None].to(G.device)
    with torch.no_grad():
        image = tuned.synthesis(result.ws[None].to(G.device), world, intr, result.bg_code[None].to(G.device)).img
        scores = {"pti_psnr": float(psnr(image, target)[0]),
                  "pti_lpips": float(lpips(lpips_input(image), lpips_input(target))[0]),
                  "pti_seconds": round(time.time() - t0, 2)}
    tuning.metrics = scores
    save_tuning(tuning, out / TUNING_NAME, pivot=result.ws)
    save_png(to_uint8(image.cpu())[0], out / "reconstruction_pti.png")
    report = json.loads((out / "metrics.json").read_text())
    write_text(out / "metrics.json", json.dumps({**report, **scores, "pti_config": tuning.config}, indent=2) + "\n")
    return scores


@dataclass
class StepReport:
    """One finished step of :func:`invert_photos`, for a caller that follows the work (the web editor)."""

    photo: Path
    stage: str                      # "invert" (W+ optimisation) or "tune" (pivotal tuning)
    step: int                       # 1-based
    steps: int
    lpips: float | None = None      # the photo's LPIPS at this step (inversion steps)
    image: torch.Tensor | None = None   # [3, R, R] the current reconstruction in [-1, 1] (inversion steps)


def invert_photos(photos: Sequence[str | Path], out_dir: str | Path, network: str | Path = "bundled:heads",
                  options: InvertOptions | None = None, device: str | None = None,
                  progress: bool = True, monitor: Callable[[StepReport], None] | None = None) -> list[PhotoOutcome]:
    """Invert every photo into ``network`` and write its results under ``out_dir`` (see the module docstring).

    Every photo is read and aligned before any optimisation starts; one that fails is reported in its
    :class:`PhotoOutcome` and skipped. With ``progress``, a display on stderr (:class:`~stylenerf_edit.progress.
    Progress`: a bar on a terminal, a plain line every 30 s elsewhere) follows the photos' steps, and each
    photo's :meth:`PhotoOutcome.describe` line is printed as soon as it is known (failures to stderr, results to
    stdout).

    ``monitor`` is called with a :class:`StepReport` after every step of every photo; an exception it raises (a
    cancellation) stops the work there and propagates: the photos finished before it keep their files.
    """
    options = options or InvertOptions()
    out_dir = Path(out_dir)
    paths = [Path(p) for p in photos]
    G, info = load_with_info(network, device=resolve_device(device))
    lpips = LPIPS(options.lpips_net, device=G.device)
    outcomes = [PhotoOutcome(photo=p, out_dir=d) for p, d in zip(paths, output_dirs(paths, out_dir))]
    prepared: list[tuple[int, PreparedPhoto]] = []
    steps = options.config.steps
    pti_steps = options.pti.steps if options.pti is not None else 0
    with Progress(0, "inverting", "step", enabled=progress) as bar:
        for i, p in enumerate(paths):
            bar.set_status(f"reading {p.name} ({i + 1}/{len(paths)})")
            try:
                prepared.append((i, prepare_photo(p, G.img_resolution, aligned=options.aligned,
                                                  face_index=options.face_index, landmarks=options.landmarks)))
            except StyleNerfEditError as e:
                outcomes[i].error = str(e)
                bar.write(outcomes[i].describe())
        bar.total = len(prepared) * (steps + pti_steps)
        for start in range(0, len(prepared), options.batch_size):
            chunk = prepared[start:start + options.batch_size]
            batch = [p for _, p in chunk]
            names = ", ".join(paths[i].name for i, _ in chunk)
            done = start * (steps + pti_steps)
            if options.camera is not None:
                yaw, pitch = options.camera
                initial = [(G.camera_prior.frontal().with_(yaw=yaw, pitch=pitch), "given")] * len(batch)
            else:
                bar.set_status(f"pose of {names}")
                initial = estimate_cameras(G, network, batch, options.pose, lpips)
            recorder = VideoRecorder(torch.stack([p.target for p in batch]), steps, options.video_frames) \
                if options.save_video else None

            def on_step(step: int, terms: dict[str, torch.Tensor], images: torch.Tensor) -> None:
                bar.set(done + (step + 1) * len(batch))
                bar.set_status(f"{names} step {step + 1}/{steps}, LPIPS {float(terms['lpips'].mean()):.3f}")
                if recorder is not None:
                    recorder(step, images)
                if monitor is not None:
                    for k, (i, _) in enumerate(chunk):
                        monitor(StepReport(paths[i], "invert", step + 1, steps, float(terms["lpips"][k]),
                                           images[k].detach()))

            t0 = time.time()
            results = invert(G, torch.stack([p.target for p in batch]).to(G.device), [c for c, _ in initial], lpips,
                             options.config, callback=on_step)
            seconds = (time.time() - t0) / len(batch)
            done += len(batch) * steps
            for k, ((i, p), result) in enumerate(zip(chunk, results)):
                frames = recorder.frames[k] if recorder is not None else None
                outcomes[i].metrics = write_photo_outputs(result, p, outcomes[i].out_dir, info, initial[k], options,
                                                          seconds, frames)
                outcomes[i].camera = result.camera
                if options.pti is not None:
                    def on_tuning_step(step: int, terms: dict[str, float], photo: Path = paths[i],
                                       base: int = done + k * pti_steps) -> None:
                        bar.set(base + step + 1)
                        bar.set_status(f"{photo.name} tuning step {step + 1}/{pti_steps}")
                        if monitor is not None:
                            monitor(StepReport(photo, "tune", step + 1, pti_steps))

                    outcomes[i].metrics.update(tune_photo(G, info, result, p, outcomes[i].out_dir, lpips, options.pti,
                                                          callback=on_tuning_step))
                outcomes[i].warnings = fit_warnings(outcomes[i].metrics, info, p, options)
                bar.write(outcomes[i].describe(), stream=sys.stdout)
                for warning in outcomes[i].warnings:
                    bar.write(f"warning: {warning}")
    return outcomes


def calibrate_network(network: str | Path, n: int = 200, seed: int = 0, landmarks: str = "dlib",
                      device: str | None = None) -> tuple[PoseCalibration, Path]:
    """Fit the landmark pose estimator to ``network`` (see ``invert.pose.calibrate_pose``) and save it beside
    the model, where ``--pose landmarks`` finds it."""
    from .landmarks import detect_faces
    from .pose import calibrate_pose

    G = load_with_info(network, device=resolve_device(device))[0]
    scale = max(1, -(-256 // G.img_resolution))   # dlib needs faces of ~80 px and more

    def largest_face_landmarks(image: np.ndarray) -> np.ndarray | None:
        big = np.kron(image, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else image
        faces = detect_faces(big, landmarks)
        return None if not faces else (faces[0].landmarks + 0.5) / scale - 0.5

    try:
        calibration: PoseCalibration | None = calibrate_pose(
            G, largest_face_landmarks, n=n, seed=seed,
            source=f"{landmarks} landmarks on {n} samples of {network}, seed {seed}")
    except PoseError:   # fewer than 3 faces found
        calibration = None
    if calibration is None or calibration.samples < max(3, n // 4):
        raise StyleNerfEditError(f"{network}: landmarks were found on too few of {n} samples for a calibration; "
                                 "this model's faces need --pose search or --pose predictor")
    return calibration, calibration.save(calibration_path(network))
