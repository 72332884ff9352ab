"""Ray-cast procedural heads through the generator's own camera model.

Every primitive has a closed-form ray intersection (ellipsoids, a cylinder, planes), so a batch of heads
renders with a handful of tensor operations per primitive: no sphere tracing, no meshes. Features that
do not change the silhouette (mouth, lips, teeth, brows, lines, irises) are painted on the surfaces in
head coordinates, so they move rigidly with the head between views. Anti-aliasing is an s x s box
filter over sub-pixel rays placed exactly like the generator's pixel centres.

This module draws world 1 and chooses between the worlds; world 2 lives in ``world2``.

World frame (the generator's): +z up, the head at the origin facing +x, its left towards +y.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stylenerf_edit.generator.camera import ray_bundle

from .params import HeadParams
from .raycast import INF, PARTS, HeadRender, band, lerp, palette, ray_ellipsoid, ray_vertical_cylinder
from .world2 import render_world2

__all__ = ["DEFAULT_WORLD", "PARTS", "WORLD_VERSIONS", "HeadRender", "render_heads", "ray_ellipsoid",
           "ray_vertical_cylinder"]

WORLD_VERSIONS = (1, 2)
DEFAULT_WORLD = 2  # the world of the shipped model
SCALE = 0.9  # overall head size: frames the head like an FFHQ crop at the FFHQ camera (fov 12 deg, radius 1)

# Material ids of the primitives (index into the ``t`` stack).
FACE, JAW, NOSE, EYE_L, EYE_R, EAR_L, EAR_R, HAIR, TORSO, NECK, GLASSES = range(11)
SKIN = (FACE, JAW, NOSE, EAR_L, EAR_R, NECK)

HAIR_PALETTE = torch.tensor([[0.07, 0.06, 0.06], [0.33, 0.2, 0.11], [0.55, 0.24, 0.12], [0.86, 0.72, 0.46]])
GREY_HAIR = torch.tensor([0.78, 0.78, 0.76])
SKIN_LIGHT, SKIN_DARK = torch.tensor([0.96, 0.8, 0.69]), torch.tensor([0.42, 0.28, 0.2])
CLOTHES = torch.tensor([0.16, 0.22, 0.38])
LIPS, MOUTH_INSIDE, TEETH = torch.tensor([0.62, 0.25, 0.25]), torch.tensor([0.18, 0.05, 0.06]), torch.tensor([0.92, 0.9, 0.85])
EYE_WHITE, IRIS, FRAME = torch.tensor([0.93, 0.93, 0.9]), torch.tensor([0.25, 0.35, 0.45]), torch.tensor([0.05, 0.05, 0.06])


def render_heads(params: HeadParams, world_mat: torch.Tensor, camera_mat: torch.Tensor, resolution: int,
                 background: torch.Tensor, supersample: int = 2, *, world: int = DEFAULT_WORLD,
                 parts: bool = False) -> HeadRender:
    """Render a batch of heads.

    Args:
        params: B heads.
        world_mat, camera_mat: the generator's camera matrices [B, 4, 4] (see ``generator.camera``).
        resolution: output size R.
        background: flat background colours [B, 3] in [0, 1].
        supersample: s, rays per pixel side (s*s rays per pixel).
        world: which version of the world (:data:`WORLD_VERSIONS`); a model records the one it was
            distilled from. 1 is the 64-px world of the first bundled model; 2 is drawn for 128 px
            (``world2``): eyes, glasses, smiles and age that stay visible down to 64 px.
        parts: also return per-part coverage masks (``HeadRender.parts``, channels :data:`PARTS`; world 2 only).
    """
    if world == 2:
        return render_world2(params, world_mat, camera_mat, resolution, background, supersample, parts=parts)
    if world != 1:
        raise ValueError(f"unknown world version {world!r}; known: {', '.join(map(str, WORLD_VERSIONS))}")
    if parts:
        raise ValueError("per-part masks are only drawn by world 2 (render_heads(..., world=2, parts=True))")
    B = len(params)
    dev = world_mat.device
    p = params.to(dev)
    pal = {k: v.to(dev) for k, v in _COLOURS.items()}
    assert world_mat.shape == (B, 4, 4) and camera_mat.shape == (B, 4, 4) and background.shape == (B, 3)
    R = resolution * supersample
    origins, dirs = ray_bundle(world_mat.float(), camera_mat.float(), R)
    ray_len = dirs.norm(dim=-1)                                 # converts distance to camera depth
    dirs = dirs / ray_len[..., None]
    o = origins[:, None, :]

    def v3(x: torch.Tensor | float, y: torch.Tensor | float, z: torch.Tensor | float) -> torch.Tensor:
        parts = [torch.as_tensor(c, dtype=torch.float32, device=dev).expand(B) for c in (x, y, z)]
        return torch.stack(parts, -1)[:, None, :] * SCALE

    width = 1 + 0.12 * p.face_width
    sag = p.age
    eye_r = 0.011 * (1 + 0.3 * p.eye_size)
    shapes = {
        FACE: (v3(0.0, 0.0, 0.005), v3(0.078, 0.066 * width, 0.088)),
        JAW: (v3(0.008, 0.0, -0.044 - 0.006 * sag), v3(0.066, 0.056 * width * (1 + 0.1 * sag), 0.046)),
        NOSE: (v3(0.074, 0.0, -0.008), v3(0.016 * (1 + 0.4 * p.nose_length), 0.011, 0.02 * (1 + 0.15 * p.nose_length))),
        EYE_L: (v3(0.062, 0.026, 0.018), v3(eye_r, eye_r, eye_r)),
        EYE_R: (v3(0.062, -0.026, 0.018), v3(eye_r, eye_r, eye_r)),
        EAR_L: (v3(-0.004, 0.065 * width, 0.0), v3(0.013, 0.009, 0.021)),
        EAR_R: (v3(-0.004, -0.065 * width, 0.0), v3(0.013, 0.009, 0.021)),
        HAIR: (v3(-0.008, 0.0, 0.012), v3(0.083, 0.071 * width, 0.092)),
        TORSO: (v3(-0.02, 0.0, -0.2), v3(0.075, 0.18, 0.095)),
    }
    t = torch.full((B, R * R, GLASSES + 1), INF, device=dev)
    for mat, (c, r) in shapes.items():
        t[..., mat] = ray_ellipsoid(o, dirs, c, r)
    # Hair covers the top and the back of the head: keep hits above a hairline that drops towards the nape.
    c, r = shapes[HAIR]
    hit = (o + t[..., HAIR, None] * dirs) / SCALE
    hairline = 0.048 + 0.7 * (hit[..., 0] - 0.06)
    t[..., HAIR] = torch.where(hit[..., 2] > hairline, t[..., HAIR], INF)
    t[..., NECK] = ray_vertical_cylinder(o, dirs, v3(-0.01, 0.0, 0.0)[..., :2], 0.042 * SCALE,
                                         (-0.25 * SCALE, -0.03 * SCALE))
    t[..., GLASSES] = _glasses_hits(o, dirs, p.glasses)

    depth_t, mat = t.min(dim=-1)
    covered = torch.isfinite(depth_t)
    depth_t = torch.where(covered, depth_t, torch.zeros_like(depth_t))
    x = (o + depth_t[..., None] * dirs) / SCALE                  # hit points in unscaled head coordinates

    centers = torch.stack([shapes[m][0][:, 0] for m in range(TORSO + 1)], 1) / SCALE      # [B, 9, 3]
    radii = torch.stack([shapes[m][1][:, 0] for m in range(TORSO + 1)], 1) / SCALE
    m_ell = mat.clamp(max=TORSO)
    cc = centers.gather(1, m_ell[..., None].expand(-1, -1, 3))
    rr = radii.gather(1, m_ell[..., None].expand(-1, -1, 3))
    normal = (x - cc) / rr.square()
    cyl = torch.cat([x[..., :2] - torch.tensor([-0.01, 0.0], device=dev), torch.zeros_like(x[..., :1])], -1)
    normal = torch.where((mat == NECK)[..., None], cyl, normal)
    normal = torch.where((mat == GLASSES)[..., None], torch.tensor([1.0, 0.0, 0.0], device=dev).expand_as(normal), normal)
    normal = F.normalize(normal, dim=-1)

    skin = lerp(pal["skin_light"], pal["skin_dark"], p.skin_tone[:, None]) * (1 - 0.12 * p.age[:, None])
    hair = lerp(palette(pal["hair"], p.hair_color), pal["grey"].expand(B, 3), (p.age ** 1.5)[:, None])
    albedo = skin[:, None, :].expand(B, R * R, 3).clone()
    albedo = torch.where((mat == HAIR)[..., None], hair[:, None], albedo)
    albedo = torch.where((mat == TORSO)[..., None], pal["clothes"], albedo)
    albedo = torch.where((mat == GLASSES)[..., None], pal["frame"], albedo)
    is_eye = (mat == EYE_L) | (mat == EYE_R)
    albedo = torch.where(is_eye[..., None], _eye_colour(x, mat, p, pal), albedo)
    on_face = (mat == FACE) | (mat == JAW)
    albedo = torch.where(on_face[..., None], _paint_face(x, albedo, hair, p, pal, resolution), albedo)

    az = math.radians(50) * p.light_azimuth
    el = math.radians(25) + math.radians(35) * p.light_elevation
    light = torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)[:, None, :]
    diffuse = (normal * light).sum(-1, keepdim=True).clamp(min=0)
    colour = albedo * (0.38 + 0.62 * diffuse)
    colour = torch.where(covered[..., None], colour, background[:, None, :].to(colour))

    def pool(a: torch.Tensor) -> torch.Tensor:
        a = a.reshape(B, R, R, -1).permute(0, 3, 1, 2)
        return F.avg_pool2d(a, supersample) if supersample > 1 else a

    mask = pool(covered.float()[..., None])
    depth = pool((depth_t / ray_len * covered)[..., None]) / mask.clamp(min=1e-6)
    return HeadRender(image=pool(colour) * 2 - 1, depth=depth, mask=mask)


def _glasses_hits(o: torch.Tensor, dirs: torch.Tensor, glasses: torch.Tensor) -> torch.Tensor:
    """Round rims in the plane x = 0.084 in front of the eyes, a bridge, and two temples back to the ears."""
    rim_r, half = 0.017, 0.0016
    t = ((0.084 * SCALE - o[..., 0]) / dirs[..., 0]).where(dirs[..., 0].abs() > 1e-9, torch.full_like(dirs[..., 0], INF))
    hit = (o + t[..., None] * dirs) / SCALE
    y, z = hit[..., 1], hit[..., 2]
    ring = torch.minimum((torch.sqrt((y - 0.026) ** 2 + (z - 0.018) ** 2) - rim_r).abs(),
                         (torch.sqrt((y + 0.026) ** 2 + (z - 0.018) ** 2) - rim_r).abs())
    bridge = (y.abs() < 0.026 - rim_r + half) & ((z - 0.022).abs() < half)
    front = ((ring < half) | bridge) & (t > 0)
    best = torch.where(front, t, torch.full_like(t, INF))
    for side in (1.0, -1.0):  # temples: thin horizontal bars in the planes y = +-(0.026 + rim_r)
        ts = ((side * (0.026 + rim_r) * SCALE - o[..., 1]) / dirs[..., 1]).where(
            dirs[..., 1].abs() > 1e-9, torch.full_like(dirs[..., 1], INF))
        h = (o + ts[..., None] * dirs) / SCALE
        on = (ts > 0) & ((h[..., 2] - 0.02).abs() < half) & (h[..., 0] < 0.084) & (h[..., 0] > 0.0)
        best = torch.minimum(best, torch.where(on, ts, torch.full_like(ts, INF)))
    return torch.where(glasses[:, None] > 0.5, best, torch.full_like(best, INF))


def _eye_colour(x: torch.Tensor, mat: torch.Tensor, p: HeadParams, pal: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eye white with an iris and pupil facing +x."""
    side = torch.where(mat == EYE_L, 1.0, -1.0)
    local = x - torch.stack([torch.full_like(side, 0.062), 0.026 * side, torch.full_like(side, 0.018)], -1)
    r = (0.011 * (1 + 0.3 * p.eye_size))[:, None]
    off_axis = torch.sqrt(local[..., 1] ** 2 + local[..., 2] ** 2) / r          # 0 at the front centre
    front = local[..., 0] > 0
    iris = (front & (off_axis < 0.62)).float()[..., None]
    pupil = (front & (off_axis < 0.3)).float()[..., None]
    colour = lerp(pal["eye_white"].expand_as(x), pal["iris"].expand_as(x), iris)
    return colour * (1 - 0.85 * pupil)


def _paint_face(x: torch.Tensor, albedo: torch.Tensor, hair: torch.Tensor, p: HeadParams,
                pal: dict[str, torch.Tensor], resolution: int) -> torch.Tensor:
    """Mouth (lips, opening, teeth), eyebrows and age lines on the face/jaw surface, in head coordinates."""
    soft = 0.21 / resolution * 0.5 / SCALE          # half a pixel at the face, in head units
    y, z, front = x[..., 1], x[..., 2], x[..., 0] > 0.02
    smile, age = p.smile[:, None], p.age[:, None]

    # Mouth: a curve whose corners rise with smile (and droop a little with age); it opens into a grin.
    half_w = 0.023
    u = (y / half_w).clamp(-1, 1)
    inside_w = (y.abs() < half_w) & front
    centre = -0.045 - 0.004 * age + (0.011 * smile - 0.002 * age) * (u * u - 0.35)
    opening = (0.0065 * smile.clamp(min=0)) * (1 - u * u)
    lip = 0.0022 * (1 - u * u).clamp(min=0).sqrt() + 0.0008
    upper, lower = centre + opening / 2, centre - opening / 2
    lips = (band(z - (upper + lip), lip, soft) + band(z - (lower - lip), lip, soft)).clamp(max=1)
    gap = ((z < upper) & (z > lower)).float()
    teeth = (gap * (z > centre).float())
    colour = lerp(albedo, pal["lips"].expand_as(albedo), (lips * inside_w)[..., None])
    colour = lerp(colour, pal["mouth_inside"].expand_as(albedo), (gap * inside_w)[..., None])
    colour = lerp(colour, pal["teeth"].expand_as(albedo), (teeth * inside_w)[..., None])

    # Eyebrows, in the (greying) hair colour.
    brow = torch.zeros_like(y)
    for side in (1.0, -1.0):
        dy = y - side * 0.026
        arc = 0.041 + 0.003 * (1 - (dy / 0.015) ** 2)
        brow = brow + band(z - arc, 0.0022, soft) * (dy.abs() < 0.015).float()
    colour = lerp(colour, hair[:, None, :].expand_as(colour), (brow.clamp(max=1) * front)[..., None] * 0.9)

    # Age: forehead lines and cheek folds, darker with age.
    lines = torch.zeros_like(y)
    for zl in (0.055, 0.064):
        lines = lines + band(z - zl, 0.0009, soft) * (y.abs() < 0.028).float()
    for side in (1.0, -1.0):  # nasolabial folds from beside the nose to the mouth corners
        yy = side * (0.019 + 0.006 * (-(z + 0.012) / 0.03).clamp(0, 1))
        lines = lines + band(y - yy, 0.001, soft) * ((z < -0.012) & (z > -0.042)).float()
    shade = (lines.clamp(max=1) * front * age * 0.45)[..., None]
    return colour * (1 - shade)


_COLOURS = {"skin_light": SKIN_LIGHT, "skin_dark": SKIN_DARK, "hair": HAIR_PALETTE, "grey": GREY_HAIR,
            "clothes": CLOTHES, "lips": LIPS, "mouth_inside": MOUTH_INSIDE, "teeth": TEETH,
            "eye_white": EYE_WHITE, "iris": IRIS, "frame": FRAME}
