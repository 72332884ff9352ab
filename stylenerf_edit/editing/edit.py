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

How far an edit may go: the generator's own samples (z drawn from its prior, through the mapping) lie along a
direction within a range :func:`sample_range` measures (99 % of them by default, about +-2.6 standard
deviations for a normal spread). An edit that takes a latent past it asks the model for faces it never learnt
(on the bundled model, past the procedural world's parameter range: a young head at ``age -2`` gets red hair).
:func:`check_edits` reports where each edit lands, :func:`clamp_edits` shortens the ones that leave the range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import torch

from stylenerf_edit.directions.direction import Direction
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.generator.network import Generator, GeneratorConfig
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


@dataclass(frozen=True)
class SampleRange:
    """Where a generator's samples lie along a direction: their mean signed distance and the central
    ``coverage`` of them, in standard deviations (edit strengths) from that mean."""

    attribute: str
    mean: float          # W units
    low: float           # strength units, below the mean
    high: float
    coverage: float


def sample_range(G: Generator, direction: Direction, n: int = 4096, seed: int = 0,
                 coverage: float = 0.99) -> SampleRange:
    """Measure :class:`SampleRange` on ``n`` seeded samples of ``G``'s mapping (no rendering: milliseconds)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(G.sample_z(n, gen).to(G.device)).cpu().numpy()
    d = direction.distance(ws)
    lo, hi = np.quantile(d, [(1 - coverage) / 2, (1 + coverage) / 2])
    mean = float(d.mean())
    return SampleRange(direction.attribute, mean, float(lo - mean) / direction.spread,
                       float(hi - mean) / direction.spread, coverage)


@dataclass(frozen=True)
class EditCheck:
    """Where one edit takes a latent along its direction, in strength units from the samples' mean."""

    edit: Edit
    before: float
    after: float          # with all the checked edits applied together
    per_unit: float       # this edit's own move per unit of strength: 1 on its rows, less on fewer rows
    range: SampleRange

    @property
    def inside(self) -> bool:
        return self.range.low - 1e-3 <= self.after <= self.range.high + 1e-3   # clamped edits land on the bounds

    def describe(self) -> str:
        where = "inside" if self.inside else "outside"
        return (f"{self.edit.describe()} takes the latent from {self.before:+.2f} to {self.after:+.2f} standard "
                f"deviations, {where} the {self.range.coverage:.0%} of the model's own samples "
                f"({self.range.low:+.2f} to {self.range.high:+.2f})")


def check_edits(G: Generator, ws: torch.Tensor, edits: Sequence[Edit],
                ranges: Mapping[str, SampleRange] | None = None) -> list[EditCheck]:
    """Where each of ``edits`` (applied together to ``ws`` [num_ws, w_dim]) lands along its own direction;
    ``ranges`` (by attribute) are :func:`sample_range` results measured before, the others are measured now."""
    def position(d: Direction, r: SampleRange, x: torch.Tensor) -> float:
        return float(d.distance(x.detach().cpu().numpy()[None])[0] - r.mean) / d.spread

    edited = apply_edits(ws, edits)
    checks = []
    for e in edits:
        r = (ranges or {}).get(e.direction.attribute) or sample_range(G, e.direction)
        before = position(e.direction, r, ws)
        unit = position(e.direction, r, apply_edits(ws, [replace(e, strength=1.0)])) - before
        checks.append(EditCheck(e, before, position(e.direction, r, edited), unit, r))
    return checks


def clamp_edits(checks: Sequence[EditCheck]) -> list[Edit]:
    """The checked edits with each strength shortened so that its latent stays inside the samples' range (an
    edit that starts outside it is not pushed further out; its strength becomes 0 in that sense)."""
    clamped = []
    for c in checks:
        target = min(max(c.after, min(c.range.low, c.before)), max(c.range.high, c.before))
        shorter = (c.after - target) / c.per_unit if c.per_unit > 0 else 0.0
        clamped.append(replace(c.edit, strength=c.edit.strength - shorter))
    return clamped


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
    """ws [num_ws, w_dim] or [B, num_ws, w_dim] plus the edits' offset (same shape; a copy when there are none)."""
    if not edits:
        return ws.clone()
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
