"""Semantic edits of W+ latents: directions with strengths on chosen rows, style mixing, interpolation.

Rows of a StyleNeRF W+ latent (``num_ws = fg_layers + 2 + 2 * upsampler blocks + 1``):

    geometry    rows 0 .. fg_layers      the NeRF's hidden layers and its density output: shape
    appearance  row  fg_layers + 1       the NeRF's feature/colour output
    nerf        geometry + appearance    everything the radiance field sees
    upsampler   the remaining rows       the 2-D upsampler: fine texture and colour
    all         every row

An edit adds ``strength`` standard deviations of the direction's training samples along its normal on the
chosen rows; the camera and the
background code are kept, so an edited face can be rendered from the same or any other viewpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from stylenerf_edit.directions.direction import Direction
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.generator.network import GeneratorConfig
from stylenerf_edit.invert.latent import Latent

ROW_GROUPS = ("all", "nerf", "geometry", "appearance", "upsampler")


class EditError(StyleNerfEditError):
    """An edit specification cannot be applied."""


def row_group(cfg: GeneratorConfig, spec: str) -> list[int]:
    """Rows of a named group (see the module docstring) or of an explicit list such as ``0-3,7``."""
    fg = cfg.fg_num_ws
    groups = {"all": range(cfg.num_ws), "nerf": range(fg), "geometry": range(cfg.fg_layers + 1),
              "appearance": [cfg.fg_layers + 1], "upsampler": range(fg, cfg.num_ws)}
    if spec in groups:
        return list(groups[spec])
    rows: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            rows.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise EditError(f"rows {spec!r}: use one of {', '.join(ROW_GROUPS)} or a list like 0-3,7") from None
    if not rows or min(rows) < 0 or max(rows) >= cfg.num_ws:
        raise EditError(f"rows {spec!r}: this generator has rows 0-{cfg.num_ws - 1}")
    return sorted(set(rows))


def parse_edit(spec: str) -> tuple[str, float]:
    """``"smile=+2"`` -> ("smile", 2.0); the name may also be a path to a direction file."""
    name, sep, value = spec.rpartition("=")
    try:
        strength = float(value)
    except ValueError:
        strength = float("nan")
    if not sep or not name or not np.isfinite(strength):
        raise EditError(f"edit {spec!r}: expected NAME=STRENGTH, e.g. smile=2 or age=-1.5")
    return name, strength


@dataclass(frozen=True)
class Edit:
    """One direction with a strength (unit steps along its normal) on some rows (None: the direction's own)."""

    direction: Direction
    strength: float
    rows: tuple[int, ...] | None = None

    def describe(self) -> str:
        rows = "" if self.rows is None else f" on rows {list(self.rows)}"
        return f"{self.direction.attribute} {self.strength:+g}{rows}"


def edit_delta(edits: Sequence[Edit], num_ws: int) -> torch.Tensor:
    """The summed W+ offset of ``edits``: [num_ws, w_dim]. A strength counts standard deviations of the
    direction's training samples along its normal (``Direction.spread``), so ``smile=2`` means the same
    for every generator and direction."""
    total = None
    for e in edits:
        if not np.isfinite(e.direction.spread) or e.direction.spread <= 0:
            raise EditError(f"direction '{e.direction.attribute}' has no measured spread (conditioned but never "
                            "evaluated?); retrain it with `stylenerf-edit directions train`")
        step = e.direction.spread * e.direction.as_ws_delta(num_ws, None if e.rows is None else list(e.rows))
        total = e.strength * step if total is None else total + e.strength * step
    if total is None:
        raise EditError("no edits given")
    return torch.from_numpy(np.asarray(total, dtype=np.float32))


def apply_edits(ws: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    """ws [num_ws, w_dim] or [B, num_ws, w_dim] plus the edits' offset (same shape)."""
    num_ws = ws.shape[-2]
    return ws + edit_delta(edits, num_ws).to(ws.device, ws.dtype)


def edit_latent(latent: Latent, edits: Sequence[Edit]) -> Latent:
    """A copy of ``latent`` with the edits applied to its ws; camera, background and provenance kept."""
    for e in edits:
        d = e.direction
        if d.generator is not None and d.generator.weights_sha256 != latent.generator.weights_sha256:
            raise EditError(f"direction '{d.attribute}' was trained on '{d.generator.name}', but the latent belongs "
                            f"to '{latent.generator.name}'; use directions trained for that generator")
    ws = apply_edits(torch.from_numpy(latent.ws), edits).numpy()
    history = list(latent.extra.get("edits", [])) + [e.describe() for e in edits]
    return replace(latent, ws=ws, extra={**latent.extra, "edits": history}, metrics={}, loss_history={})


def style_mix(ws_a: torch.Tensor, ws_b: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """``ws_a`` with ``rows`` taken from ``ws_b`` (both [..., num_ws, w_dim])."""
    assert ws_a.shape == ws_b.shape, f"latents differ in shape: {tuple(ws_a.shape)} vs {tuple(ws_b.shape)}"
    out = ws_a.clone()
    out[..., list(rows), :] = ws_b[..., list(rows), :]
    return out


def interpolate(a: Latent, b: Latent, t: float) -> Latent:
    """Linear blend of two latents of one generator: ws, background code and camera angles."""
    if a.generator.weights_sha256 != b.generator.weights_sha256:
        raise EditError(f"cannot interpolate latents of '{a.generator.name}' and '{b.generator.name}'")
    camera = a.camera.with_(yaw=(1 - t) * a.camera.yaw + t * b.camera.yaw,
                            pitch=(1 - t) * a.camera.pitch + t * b.camera.pitch)
    return replace(a, ws=(1 - t) * a.ws + t * b.ws, bg_code=(1 - t) * a.bg_code + t * b.bg_code, camera=camera,
                   metrics={}, loss_history={}, extra={**a.extra, "interpolated": [a.source, b.source, t]})
