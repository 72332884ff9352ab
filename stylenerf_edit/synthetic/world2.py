"""World 2: procedural heads drawn for a 128-px model, every attribute visible down to 64 px.

Same parameters, ranges, camera and ray casting as world 1 (``renderer``), but with features sized in output
pixels at 128 px (the face spans about 72 px): painted eyes with whites, iris, pupil and lash line; thick
dark glasses with a bridge and temples; a mouth whose corners rise into an open grin with teeth while
cheek pads lift, or fall into a closed frown under lowered brows; age that greys hair and brows, recedes
the hairline, adds forehead lines, crow's feet, under-eye bags, deeper folds and sagging jowls. Everything
that does not change the silhouette is painted in head coordinates, so it moves rigidly between views,
and every painted edge is anti-aliased analytically over one output pixel before the s x s box filter.

Lengths below are in head units (world units / ``SCALE``); at 128 px one output pixel is about 0.0017
head units on the face.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stylenerf_edit.generator.camera import ray_bundle

from .params import HeadParams
from .raycast import INF, PARTS, HeadRender, band, lerp, palette, ray_ellipsoid, ray_vertical_cylinder

SCALE = 0.9            # world units per head unit (the FFHQ framing of world 1)
PIXEL = 0.217          # head units per output pixel at the face, times the resolution (fov 12 deg, radius 1)
BLEND = 0.003          # head units over which the normals of touching skin ellipsoids blend
CHUNK_RAYS = 1 << 17   # rays cast at once: keeps the working set in cache (several times faster on a CPU)

# Materials (ellipsoids first: their centre and radii give the normals). FACE..JOWL_R carry the painted
# features, NOSE..ALA_R the nostrils.
(FACE, JAW, CHEEK_L, CHEEK_R, JOWL_L, JOWL_R, NOSE, BRIDGE, ALA_L, ALA_R, EAR_L, EAR_R, HAIR, TORSO,
 NECK, GLASSES) = range(16)
N_ELLIPSOIDS = TORSO + 1

HAIR_PALETTE = torch.tensor([[0.08, 0.065, 0.06], [0.30, 0.19, 0.11], [0.50, 0.23, 0.12], [0.84, 0.70, 0.46]])
GREY_HAIR = torch.tensor([0.80, 0.80, 0.79])
SKIN_LIGHT, SKIN_DARK = torch.tensor([0.95, 0.79, 0.68]), torch.tensor([0.42, 0.28, 0.20])
CLOTHES = torch.tensor([0.17, 0.23, 0.37])
LIP_TINT = torch.tensor([0.72, 0.30, 0.30])
MOUTH_INSIDE, TONGUE, TEETH = torch.tensor([0.17, 0.05, 0.06]), torch.tensor([0.50, 0.20, 0.20]), torch.tensor([0.94, 0.92, 0.86])
EYE_WHITE, IRIS, PUPIL = torch.tensor([0.95, 0.94, 0.92]), torch.tensor([0.33, 0.24, 0.16]), torch.tensor([0.03, 0.03, 0.03])
LASH, FRAME, BLUSH = torch.tensor([0.06, 0.05, 0.05]), torch.tensor([0.06, 0.055, 0.06]), torch.tensor([0.86, 0.46, 0.44])

# Glasses: a front frame in the plane x = FRAME_X (rounded-rectangle rims, a bridge, end pieces) and two
# temples running back to the ears.
FRAME_X, LENS_Y, LENS_Z, LENS_HALF, LENS_CORNER, RIM = 0.090, 0.028, 0.017, (0.0195, 0.0135), 0.0075, 0.0026
EYE_Y, EYE_Z = 0.028, 0.017


def render_world2(params: HeadParams, world_mat: torch.Tensor, camera_mat: torch.Tensor, resolution: int,
                  background: torch.Tensor, supersample: int = 2, parts: bool = False) -> HeadRender:
    """World-2 heads; arguments as :func:`renderer.render_heads`."""
    B = len(params)
    dev = world_mat.device
    assert world_mat.shape == (B, 4, 4) and camera_mat.shape == (B, 4, 4) and background.shape == (B, 3)
    p = params.to(dev)
    R = resolution * supersample
    origins, dirs = ray_bundle(world_mat.float(), camera_mat.float(), R)
    ray_len = dirs.norm(dim=-1)
    dirs = dirs / ray_len[..., None]
    centers, radii = _ellipsoids(p)
    per_chunk = max(1, CHUNK_RAYS // (R * R))
    outs = [_shade(p, i, min(B, i + per_chunk), origins / SCALE, dirs, ray_len, centers, radii,
                   background.float().to(dev), resolution, supersample, parts) for i in range(0, B, per_chunk)]
    colour, depth, mask, part = (torch.cat([o[k] for o in outs]) if outs[0][k] is not None else None
                                 for k in range(4))
    return HeadRender(image=colour * 2 - 1, depth=depth / mask.clamp(min=1e-6), mask=mask, parts=part)


def _ellipsoids(p: HeadParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres and radii [B, N_ELLIPSOIDS, 3] of the head's ellipsoids, in head units."""
    B = len(p)
    w = 1 + 0.12 * p.face_width
    age, grin = p.age, p.smile.clamp(min=0)
    nose = p.nose_length

    def v(x: float | torch.Tensor, y: float | torch.Tensor, z: float | torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.as_tensor(c, dtype=torch.float32, device=age.device).expand(B) for c in (x, y, z)], -1)

    jowl = 0.55 + 0.40 * age          # jowls grow out of the jaw line with age
    cheek = 1 + 0.08 * grin           # cheek pads, hidden in a neutral face, lift and swell in a smile
    table = {
        FACE: (v(0.0, 0.0, 0.005), v(0.078, 0.066 * w, 0.088)),
        JAW: (v(0.008, 0.0, -0.044 - 0.008 * age), v(0.066, 0.056 * w * (1 + 0.08 * age), 0.046 + 0.003 * age)),
        CHEEK_L: (v(0.033 + 0.010 * grin, 0.033 * w, -0.012 + 0.008 * grin - 0.003 * age), v(0.024 * cheek, 0.020 * cheek, 0.018 * cheek)),
        CHEEK_R: (v(0.033 + 0.010 * grin, -0.033 * w, -0.012 + 0.008 * grin - 0.003 * age), v(0.024 * cheek, 0.020 * cheek, 0.018 * cheek)),
        JOWL_L: (v(0.024 + 0.008 * age, 0.033 * w + 0.006 * age, -0.060 - 0.010 * age), v(0.026 * jowl, 0.018 * jowl, 0.016 * jowl)),
        JOWL_R: (v(0.024 + 0.008 * age, -0.033 * w - 0.006 * age, -0.060 - 0.010 * age), v(0.026 * jowl, 0.018 * jowl, 0.016 * jowl)),
        NOSE: (v(0.074, 0.0, -0.008), v(0.016 * (1 + 0.4 * nose), 0.011, 0.02 * (1 + 0.15 * nose))),
        BRIDGE: (v(0.068, 0.0, 0.012), v(0.012, 0.0075, 0.024)),
        ALA_L: (v(0.067, 0.0105, -0.020), v(0.009, 0.0075, 0.0065)),
        ALA_R: (v(0.067, -0.0105, -0.020), v(0.009, 0.0075, 0.0065)),
        EAR_L: (v(-0.004, 0.065 * w, 0.0), v(0.013, 0.009, 0.021)),
        EAR_R: (v(-0.004, -0.065 * w, 0.0), v(0.013, 0.009, 0.021)),
        HAIR: (v(-0.010, 0.0, 0.013), v(0.086, 0.073 * w, 0.095)),
        TORSO: (v(-0.02, 0.0, -0.2), v(0.075, 0.18, 0.095)),
    }
    centers = torch.stack([table[m][0] for m in range(N_ELLIPSOIDS)], 1)
    radii = torch.stack([table[m][1] for m in range(N_ELLIPSOIDS)], 1)
    return centers, radii


def _shade(p: HeadParams, i0: int, i1: int, origins: torch.Tensor, dirs: torch.Tensor, ray_len: torch.Tensor,
           centers: torch.Tensor, radii: torch.Tensor, background: torch.Tensor, resolution: int, supersample: int,
           want_parts: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cast and shade the rays of heads i0..i1-1; returns the pixels' colour [b, 3, R, R], covered depth sum
    [b, 1, R, R], coverage [b, 1, R, R] and parts [b, P, R, R] (or None)."""
    sl = slice(i0, i1)
    p = _slice(p, sl)
    o, d = origins[sl, None, :], dirs[sl]
    c, r = centers[sl], radii[sl]
    B, N = d.shape[:2]
    dev = d.device

    best = torch.full((B, N), INF, device=dev)
    mat = torch.zeros((B, N), dtype=torch.long, device=dev)

    def take(t: torch.Tensor, m: int) -> None:
        nonlocal best, mat
        closer = t < best
        best = torch.where(closer, t, best)
        mat = torch.where(closer, torch.full_like(mat, m), mat)

    skin_t: list[torch.Tensor] = []
    for m in range(N_ELLIPSOIDS):
        t = ray_ellipsoid(o, d, c[:, m:m + 1], r[:, m:m + 1])
        if m <= ALA_R:
            skin_t.append(t)
        if m == HAIR:  # hair covers the top and back of the head above a hairline that recedes with age
            hit = o + t[..., None] * d
            hairline = (0.061 + 0.7 * (hit[..., 0] - 0.06) + 0.004 * (hit[..., 1] / 0.05) ** 2
                        + 0.010 * p.age[:, None] * ((hit[..., 0] - 0.02) / 0.05).clamp(0, 1))
            t = torch.where(hit[..., 2] > hairline, t, INF)
            # where the front of the hair is cut away beside the face, the ray sees the hair behind the head
            t_back = _far_hit(o, d, c[:, m:m + 1], r[:, m:m + 1])
            t = torch.where(torch.isfinite(t), t, t_back)
        take(t, m)
    take(ray_vertical_cylinder(o, d, torch.tensor([[[-0.01, 0.0]]], device=dev), 0.042, (-0.25, -0.03)), NECK)
    t_front, t_temple, temple_normal = _glasses(o, d, p)
    take(t_front, GLASSES)
    take(t_temple, GLASSES)

    covered = torch.isfinite(best)
    t = torch.where(covered, best, torch.zeros_like(best))
    x = o + t[..., None] * d
    m_ell = mat.clamp(max=N_ELLIPSOIDS - 1)
    cc = c.gather(1, m_ell[..., None].expand(-1, -1, 3))
    rr = r.gather(1, m_ell[..., None].expand(-1, -1, 3))
    normal = (x - cc) / rr.square()
    normal = torch.where((mat == NECK)[..., None], torch.cat([x[..., :2] - x.new_tensor([-0.01, 0.0]), torch.zeros_like(x[..., :1])], -1), normal)
    is_temple = (mat == GLASSES) & (t_temple <= t_front)
    front_n = x.new_tensor([1.0, 0.0, 0.0]).expand_as(normal)
    normal = torch.where((mat == GLASSES)[..., None], torch.where(is_temple[..., None], temple_normal, front_n), normal)
    # Skin ellipsoids meet in creases; blending their normals by hit distance rounds the creases off in the
    # shading without moving the silhouette.
    on_skin = (covered & (mat <= ALA_R)).nonzero(as_tuple=True)
    ts = torch.stack(skin_t, -1)[on_skin]                                 # [M, K]
    xs = x[on_skin][:, None, :]
    ns = F.normalize((xs - c[on_skin[0], :ALA_R + 1]) / r[on_skin[0], :ALA_R + 1].square(), dim=-1)
    weight = torch.exp(-(ts - ts.min(-1, keepdim=True).values) / BLEND)   # 0 for missed ellipsoids
    normal = normal.index_put(on_skin, (weight[..., None] * ns).sum(1))
    normal = torch.where(((normal * d).sum(-1) > 0)[..., None], -normal, normal)   # the side facing the camera
    normal = F.normalize(normal, dim=-1)

    tone = lerp(SKIN_LIGHT.to(dev), SKIN_DARK.to(dev), p.skin_tone[:, None])
    skin = lerp(tone, tone.mean(-1, keepdim=True), 0.25 * p.age[:, None]) * (1 - 0.05 * p.age[:, None])
    grey = (((p.age - 0.3) / 0.7).clamp(0, 1) ** 1.3)[:, None]     # greying starts in middle age
    hair = lerp(palette(HAIR_PALETTE.to(dev), p.hair_color), GREY_HAIR.to(dev).expand(B, 3), grey)
    albedo = skin[:, None, :].expand(B, N, 3)
    # hair: broad strands around the crown, painted in head coordinates
    strands = 1 - 0.035 * (0.5 + 0.5 * torch.sin(28 * torch.atan2(x[..., 1], x[..., 0] + 0.03) + 6 * x[..., 2] / 0.09))
    albedo = torch.where((mat == HAIR)[..., None], hair[:, None] * strands[..., None], albedo)
    albedo = torch.where((mat == TORSO)[..., None], CLOTHES.to(dev), albedo)
    albedo = torch.where((mat == GLASSES)[..., None], FRAME.to(dev), albedo)
    # Features are painted only where they can show (a third of the rays): each selected ray is its own
    # batch row of one, so the painting code broadcasts per-head parameters as for whole images.
    on_nose = covered & (mat >= NOSE) & (mat <= ALA_R)
    albedo = albedo.index_put(on_nose.nonzero(as_tuple=True), _paint_nose(x[on_nose], albedo[on_nose], resolution))
    painted = covered & (mat <= JOWL_R)
    sel = painted.nonzero(as_tuple=True)
    face, eyes_r, mouth_r = _paint_face(x[sel][:, None], albedo[sel][:, None], skin[sel[0]], hair[sel[0]],
                                        HeadParams.from_tensor(p.as_tensor()[sel[0]]), resolution)
    albedo = albedo.index_put(sel, face[:, 0])

    az = math.radians(50) * p.light_azimuth
    el = math.radians(25) + math.radians(35) * p.light_elevation
    light = torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)[:, None, :]
    diffuse = (normal * light).sum(-1, keepdim=True).clamp(min=0)
    ambient = 0.30 + 0.08 * normal[..., 2:3]       # more light from the sky than from the ground
    colour = (albedo * (ambient + 0.62 * diffuse)).clamp(0, 1)
    colour = torch.where(covered[..., None], colour, background[sl, None, :])
    depth = torch.where(covered, t * SCALE / ray_len[sl], torch.zeros_like(t))
    cover = covered.float()
    part = None
    if want_parts:
        eyes = torch.zeros_like(cover).index_put(sel, eyes_r[:, 0])
        mouth = torch.zeros_like(cover).index_put(sel, mouth_r[:, 0])
        hair_w = (mat == HAIR).float() * cover
        glasses = (mat == GLASSES).float() * cover
        skin_w = cover - hair_w - glasses - eyes - mouth
        part = torch.stack([1 - cover, skin_w, hair_w, eyes, mouth, glasses], -1)
        assert part.shape[-1] == len(PARTS)

    def pool(a: torch.Tensor) -> torch.Tensor:
        R = resolution * supersample
        a = a.reshape(B, R, R, -1).permute(0, 3, 1, 2)
        return F.avg_pool2d(a, supersample) if supersample > 1 else a

    return pool(colour), pool(depth[..., None]), pool(cover[..., None]), pool(part) if part is not None else None


def _far_hit(o: torch.Tensor, d: torch.Tensor, center: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Far (exit) hit distance of unit rays with an ellipsoid, inf on a miss; arguments as ``ray_ellipsoid``."""
    oo = (o - center) / radii
    dd = d / radii
    a = (dd * dd).sum(-1)
    b = (oo * dd).sum(-1)
    disc = b * b - a * ((oo * oo).sum(-1) - 1)
    t = (-b + disc.clamp(min=0).sqrt()) / a
    return torch.where((disc > 0) & (t > 0), t, torch.full_like(t, INF))


def _slice(p: HeadParams, sl: slice) -> HeadParams:
    return HeadParams.from_tensor(p.as_tensor()[sl])


def _glasses(o: torch.Tensor, d: torch.Tensor, p: HeadParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hit distances with the front frame and with the temples (inf where missed or without glasses), and
    the temples' normals."""
    B, N = d.shape[:2]
    wearing = p.glasses[:, None] > 0.5
    dx = torch.where(d[..., 0].abs() > 1e-9, d[..., 0], torch.full_like(d[..., 0], 1e-9))
    t = (FRAME_X - o[..., 0]) / dx
    hit = o + t[..., None] * d
    y, z = hit[..., 1], hit[..., 2]
    ay = y.abs()
    # rounded-rectangle rims around each eye (exact signed distance of a rounded box)
    qy = (ay - LENS_Y).abs() - (LENS_HALF[0] - LENS_CORNER)
    qz = (z - LENS_Z).abs() - (LENS_HALF[1] - LENS_CORNER)
    outside = torch.sqrt(qy.clamp(min=0) ** 2 + qz.clamp(min=0) ** 2)
    sd = outside + torch.maximum(qy, qz).clamp(max=0) - LENS_CORNER
    rim = sd.abs() < RIM
    inner = LENS_Y - LENS_HALF[0]
    bridge = (ay < inner + RIM) & ((z - (LENS_Z + 0.006)).abs() < 0.0021)
    outer = LENS_Y + LENS_HALF[0]
    end_piece = (ay > outer) & (ay < outer + 0.005) & ((z - (LENS_Z + 0.006)).abs() < 0.0021)
    front = (rim | bridge | end_piece) & (t > 0) & wearing
    t_front = torch.where(front, t, INF)

    # temples: strips in vertical planes from the end pieces (FRAME_X, +-a) back to the ears (0, +-b)
    a = outer + 0.005
    b = 0.065 * (1 + 0.12 * p.face_width)[:, None] + 0.002
    t_temple = torch.full((B, N), INF, device=d.device)
    n_out = torch.zeros_like(d)
    for side in (1.0, -1.0):
        length = torch.sqrt(FRAME_X ** 2 + (b - a) ** 2)
        nx, ny = (b - a) / length, side * FRAME_X / length     # outward unit normal of the strip's plane
        denom = d[..., 0] * nx + d[..., 1] * ny
        denom = torch.where(denom.abs() > 1e-9, denom, torch.full_like(denom, 1e-9))
        ts = ((FRAME_X - o[..., 0]) * nx + (side * a - o[..., 1]) * ny) / denom
        h = o + ts[..., None] * d
        along = -(h[..., 0] - FRAME_X) / FRAME_X                  # 0 at the frame, 1 at the ear
        zt = LENS_Z + 0.006 - 0.004 * along
        on = (ts > 0) & (along > 0) & (along < 1) & ((h[..., 2] - zt).abs() < 0.0021) & wearing
        closer = on & (ts < t_temple)
        t_temple = torch.where(closer, ts, t_temple)
        n_side = torch.stack([nx.expand(B, N), ny.expand(B, N), torch.zeros(B, N, device=d.device)], -1)
        n_out = torch.where(closer[..., None], n_side, n_out)
    return t_front, t_temple, n_out


def _cover(signed_distance: torch.Tensor, soft: float) -> torch.Tensor:
    """Coverage of the region signed_distance < 0, anti-aliased over ``soft``."""
    return (0.5 - signed_distance / soft).clamp(0, 1)


def _paint_nose(x: torch.Tensor, albedo: torch.Tensor, resolution: int) -> torch.Tensor:
    """Nostrils: two dark ovals under the nose tip."""
    soft = PIXEL / resolution
    y, z = x[..., 1], x[..., 2]
    dark = torch.zeros_like(y)
    for side in (1.0, -1.0):
        e = torch.sqrt(((y - side * 0.0065) / 0.0042) ** 2 + ((z + 0.0255) / 0.0022) ** 2)
        dark = torch.maximum(dark, _cover((e - 1) * 0.0022, soft))
    return albedo * (1 - 0.45 * (dark * (x[..., 0] > 0.055))[..., None])


def _paint_face(x: torch.Tensor, albedo: torch.Tensor, skin: torch.Tensor, hair: torch.Tensor, p: HeadParams,
                resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eyes, brows, mouth, cheeks and age lines painted on the face surfaces.

    x: hit points [B, N, 3] (the renderer passes one ray per row, N = 1). Returns the colour [B, N, 3] and the
    eye and mouth coverages [B, N]."""
    soft = PIXEL / resolution
    dev = x.device
    y, z = x[..., 1], x[..., 2]
    front = (x[..., 0] > 0.02).float()

    def col(colour: torch.Tensor) -> torch.Tensor:
        return colour.to(dev).expand_as(albedo)

    smile = p.smile[:, None]
    grin, frown = smile.clamp(min=0), (-smile).clamp(min=0)
    age = p.age[:, None]
    old = age.clamp(0, 1) ** 1.5                    # creases stay faint until late in life
    es = p.eye_size[:, None]
    colour = albedo
    lines = torch.zeros_like(y)                     # darkening of creases (0..1)

    # Cheeks: a soft blush on the cheek pads that rises and deepens in a smile.
    for side in (1.0, -1.0):
        e = torch.sqrt(((y - side * 0.034) / 0.015) ** 2 + ((z + 0.010 - 0.007 * grin) / 0.012) ** 2)
        colour = lerp(colour, col(BLUSH), ((1 - e).clamp(0, 1) * (0.10 + 0.10 * grin))[..., None])

    # Eyes: almond openings with white, iris, pupil, catch light, lash line; the lower lid rises in a smile.
    eyes = torch.zeros_like(y)
    a = 0.0160 * (1 + 0.25 * es)
    h_up = 0.0060 * (1 + 0.2 * es) * (1 - 0.12 * age)
    h_lo = 0.0042 * (1 + 0.2 * es) * (1 - 0.35 * grin)
    r_iris = 0.0056 * (1 + 0.1 * es)
    for side in (1.0, -1.0):
        dy, dz = y - side * EYE_Y, z - EYE_Z
        f = (1 - (dy / a) ** 2).clamp(min=0)
        upper, lower = h_up * f, -h_lo * f
        sd = torch.maximum(torch.maximum(dz - upper, lower - dz), dy.abs() - a)
        opening = _cover(sd, soft) * front
        ri = torch.sqrt(dy ** 2 + (dz - 0.0006) ** 2)
        iris = _cover(ri - r_iris, soft)
        pupil = _cover(ri - 0.45 * r_iris, soft)
        glint = _cover(torch.sqrt((dy - 0.0018) ** 2 + (dz - 0.0022) ** 2) - 0.0010, soft)
        lid_shadow = (1 - (upper - dz) / 0.0025).clamp(0, 1) * 0.15
        eye = lerp(col(EYE_WHITE), col(IRIS), iris[..., None])
        eye = lerp(eye, col(PUPIL), pupil[..., None])
        eye = lerp(eye, col(EYE_WHITE), (glint * 0.9)[..., None]) * (1 - lid_shadow[..., None])
        # lash line along the upper lid, a little past the corners; a faint crease above it
        fl = (1 - (dy / (1.1 * a)) ** 2).clamp(min=0)
        lash = band(dz - h_up * fl - 0.0006, 0.0010 * (0.4 + 0.6 * fl), soft) * (dy.abs() < 1.1 * a) * front
        crease = band(dz - h_up * fl - 0.0045, 0.0006, soft) * (dy.abs() < a) * front
        # socket: a soft shade around the eye
        sock = torch.sqrt((dy / (1.7 * a)) ** 2 + ((dz - 0.001) / 0.011) ** 2)
        colour = colour * (1 - 0.10 * (1.2 - sock).clamp(0, 1)[..., None] - 0.18 * crease[..., None])
        colour = lerp(colour, eye, opening[..., None])
        colour = lerp(colour, col(LASH), (lash * (1 - opening))[..., None])
        eyes = eyes + torch.maximum(opening, lash)
        # age: under-eye bags and crow's feet at the outer corners
        lines = lines + band(dz + h_lo * f + 0.0042, 0.0007, soft) * (dy.abs() < 0.75 * a) * front * old
        for angle in (-0.45, 0.0, 0.45):
            ux, uz = math.cos(angle), math.sin(angle)
            py, pz = side * dy - (a + 0.0025), dz
            along = py * ux + pz * uz
            across = -py * uz + pz * ux
            lines = lines + band(across, 0.0006, soft) * ((along > 0) & (along < 0.007)).float() * front * old

    # Brows in the (greying) hair colour, a little darker; raised by a smile, inner ends pulled down in a frown.
    brows = torch.zeros_like(y)
    for side in (1.0, -1.0):
        u = (side * (y - side * EYE_Y) / 0.0175)             # -1 inner end, +1 outer end
        centre = 0.038 + 0.0028 * (1 - u * u) + 0.0020 * grin - 0.0045 * frown * ((1 - u) / 2).clamp(0, 1) ** 1.5
        half = 0.0027 * (1 - 0.35 * (u + 1) / 2)
        brows = brows + band(z - centre, half, soft) * _cover((u.abs() - 1) * 0.0175, soft) * front
    colour = lerp(colour, (hair * 0.8)[:, None, :].expand_as(colour), (brows.clamp(max=1) * 0.92)[..., None])
    # frown lines between the brows
    for side in (1.0, -1.0):
        lines = lines + band(y - side * 0.0055, 0.0007, soft) * ((z > 0.027) & (z < 0.037)).float() * front * frown * 0.8

    # Mouth: lips around a centre line whose corners rise with the smile (and droop with age); a grin opens
    # it over teeth and a dark inside.
    half_w = 0.0245 * (1 + 0.10 * smile)
    u = y / half_w
    f = (1 - u * u).clamp(min=0)
    centre = -0.046 - 0.004 * age + (0.010 * smile - 0.003 * age) * (u * u - 0.25)
    opening = 0.011 * grin * f ** 0.6
    top, bottom = centre + 0.45 * opening, centre - 0.55 * opening
    thin = 1 - 0.3 * age
    lip_up = (0.0030 * thin) * f.sqrt() + 0.0005
    lip_lo = (0.0040 * thin) * f.sqrt() + 0.0005 + 0.0010 * frown * f
    inside_w = _cover((u.abs() - 1) * half_w, soft) * front
    mouth = _cover(torch.maximum(z - (top + lip_up), (bottom - lip_lo) - z), soft) * inside_w
    gap = _cover(torch.maximum(z - top, bottom - z), soft) * inside_w
    teeth = gap * _cover(top - 0.55 * opening - z, soft) * _cover(u.abs() - 0.82, 0.05)
    tongue = gap * _cover(z - (bottom + 0.3 * opening), soft)
    lips = lerp(skin[:, None, :], LIP_TINT.to(dev), 0.5).expand_as(colour) * 0.92
    colour = lerp(colour, lips, mouth[..., None])
    colour = lerp(colour, col(MOUTH_INSIDE), gap[..., None])
    colour = lerp(colour, col(TONGUE), (tongue * 0.6)[..., None])
    colour = lerp(colour, col(TEETH), teeth[..., None])
    # the seam between closed lips, and dimples at the corners of a smile
    seam = band(z - centre, 0.00055, soft) * inside_w * (1 - gap) * _cover(u.abs() - 1.0, 0.05)
    colour = colour * (1 - 0.55 * seam[..., None])
    for side in (1.0, -1.0):
        corner_z = -0.046 - 0.004 * age + (0.010 * smile - 0.003 * age) * 0.75
        dimple = _cover(torch.sqrt((y - side * (half_w + 0.0022)) ** 2 + (z - corner_z) ** 2) - 0.0016, soft)
        lines = lines + dimple * grin * front * 0.8

    # Folds from the nose wings past the mouth corners (deeper with age and in a smile), marionette lines and
    # forehead lines with age.
    for side in (1.0, -1.0):
        s = ((-0.018 - z) / 0.028).clamp(0, 1)
        yy = side * (0.015 + 0.004 * grin + 0.013 * s ** 0.6)
        fold = band(y - yy, 0.0009, 1.5 * soft) * _cover(torch.maximum(z + 0.018, -0.046 - z), 0.006) * front
        lines = lines + fold * (0.15 + 0.6 * old + 0.45 * grin)
        m = ((-0.052 - z) / 0.014).clamp(0, 1)
        marionette = band(y - side * (0.0265 + 0.004 * m), 0.0008, 1.5 * soft) * _cover(torch.maximum(z + 0.051, -0.066 - z), 0.006)
        lines = lines + marionette * front * 0.7 * old
    for k, zl in enumerate((0.047, 0.0525, 0.058)):
        wave = zl + 0.0012 * torch.cos(y / 0.028 * math.pi)
        lines = lines + band(z - wave, 0.0007, soft) * _cover(y.abs() - (0.026 - 0.004 * k), 0.004) * front * old
    colour = colour * (1 - 0.5 * lines.clamp(max=1))[..., None]
    return colour, eyes.clamp(max=1), mouth
