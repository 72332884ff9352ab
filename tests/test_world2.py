"""World 2 of the procedural heads: drawn for 128 px, every attribute visible at 128 and 64 px, per-part
masks, view consistency; world 1 unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.synthetic.params import HeadParams, background_from_code, head_params_from_z
from stylenerf_edit.synthetic.renderer import DEFAULT_WORLD, PARTS, WORLD_VERSIONS, HeadRender, render_heads

REFERENCE = Path(__file__).parent / "data" / "world" / "world1_reference.npz"
EYES, MOUTH, GLASSES, HAIR, SKIN = (PARTS.index(n) for n in ("eyes", "mouth", "glasses", "hair", "skin"))


def render(params: HeadParams, cameras: list[Camera], res: int = 128, parts: bool = True) -> HeadRender:
    world, intr = stack_cameras(cameras)
    return render_heads(params, world, intr, res, torch.full((len(cameras), 3), 0.6), world=2, parts=parts)


def to64(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=64, mode="area")


def luminance(image: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, H, W] in [0, 1]."""
    return ((image + 1) / 2 * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)


def test_world1_renders_exactly_as_before() -> None:
    """World 1 (the first bundled model's) is pinned by arrays stored before world 2 existed."""
    assert DEFAULT_WORLD == 2 and WORLD_VERSIONS == (1, 2)
    g = torch.Generator().manual_seed(11)
    z, code = torch.randn(4, 512, generator=g), torch.randn(4, 32, generator=g) * 0.65
    p = head_params_from_z(z)
    p.glasses = torch.tensor([1.0, 0.0, 1.0, 0.0])
    world, intr = stack_cameras([Camera(yaw=-25, pitch=5), Camera(), Camera(yaw=18, pitch=-8), Camera(yaw=30)])
    ref = np.load(REFERENCE)
    for out in (render_heads(p, world, intr, 48, background_from_code(code), world=1),):
        assert out.parts is None
        for name in ("image", "depth", "mask"):
            torch.testing.assert_close(getattr(out, name), torch.from_numpy(ref[name]), atol=1e-6, rtol=0)


def test_world_and_parts_arguments_are_checked() -> None:
    world, intr = stack_cameras([Camera()])
    with pytest.raises(ValueError, match="world version 3"):
        render_heads(HeadParams.neutral(1), world, intr, 16, torch.full((1, 3), 0.5), world=3)
    with pytest.raises(ValueError, match="world 2"):
        render_heads(HeadParams.neutral(1), world, intr, 16, torch.full((1, 3), 0.5), world=1, parts=True)
    assert render(HeadParams.neutral(1), [Camera()], res=16, parts=False).parts is None


def test_world2_is_deterministic_and_batch_independent() -> None:
    p = head_params_from_z(torch.randn(3, 512, generator=torch.Generator().manual_seed(1)))
    p.glasses = torch.tensor([1.0, 0.0, 1.0])
    cams = [Camera(yaw=-22), Camera(pitch=7), Camera(yaw=28, pitch=-4)]
    a, b = render(p, cams, res=64), render(p, cams, res=64)
    for name in ("image", "depth", "mask", "parts"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.image.shape == (3, 3, 64, 64) and a.image.min() >= -1 and a.image.max() <= 1
    one = render(HeadParams.from_tensor(p.as_tensor()[1:2]), cams[1:2], res=64)
    torch.testing.assert_close(one.image, a.image[1:2], atol=1e-6, rtol=0)
    torch.testing.assert_close(one.parts, a.parts[1:2], atol=1e-6, rtol=0)


def test_part_masks_partition_every_pixel() -> None:
    p = HeadParams.neutral(3, smile=1.0, glasses=1.0, age=0.8)
    out = render(p, [Camera(yaw=-30), Camera(), Camera(yaw=30, pitch=10)])
    assert out.parts.shape == (3, len(PARTS), 128, 128)
    assert PARTS == ("background", "skin", "hair", "eyes", "mouth", "glasses")
    assert out.parts.min() >= 0 and out.parts.max() <= 1 + 1e-6
    torch.testing.assert_close(out.parts.sum(1), torch.ones(3, 128, 128), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.parts[:, 0], 1 - out.mask[:, 0], atol=1e-6, rtol=0)
    area = out.parts.sum((2, 3))                                   # pixels per part and view
    assert (area[:, EYES] > 60).all() and (area[:, MOUTH] > 100).all() and (area[:, GLASSES] > 200).all()
    assert (area[:, HAIR] > 1000).all() and (area[:, SKIN] > 3000).all()
    # without glasses there are no glasses pixels
    bare = render(HeadParams.neutral(1), [Camera()])
    assert bare.parts[:, GLASSES].sum() == 0


@pytest.mark.parametrize("yaw", [-30.0, 0.0, 30.0])
def test_glasses_are_seen_where_the_mask_says_at_128_and_64_px(yaw: float) -> None:
    off, on = render(HeadParams.neutral(2, glasses=0.0), [Camera(yaw=yaw)] * 2).image[:1], None
    rend = render(HeadParams.neutral(1, glasses=1.0), [Camera(yaw=yaw)])
    on = rend.image
    mask = rend.parts[:, GLASSES:GLASSES + 1]
    for scale in (lambda x: x, to64):
        diff = (scale(on) - scale(off)).abs().sum(1)
        m = scale(mask)[:, 0]
        near = F.max_pool2d(m[:, None], 3, 1, 1)[:, 0] > 0           # the frame and its anti-aliased edge
        assert diff[near].sum() / diff.sum() > 0.97                    # the change is the frame, nothing else
        frame = m > 0.9 if m.shape[-1] == 128 else m > 0.5
        darkening = (luminance(scale(off)) - luminance(scale(on)))[frame]
        assert frame.sum() > (120 if m.shape[-1] == 128 else 25) and darkening.mean() > 0.25


def test_glasses_rims_are_at_least_two_pixels_wide() -> None:
    rend = render(HeadParams.neutral(1, glasses=1.0), [Camera()])
    m = rend.parts[0, GLASSES] > 0.5
    cols = m.any(0).nonzero()[:, 0]
    lens_col = int(cols.min() + (cols.max() - cols.min()) * 0.3)          # through the subject's right lens
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, m[:, lens_col].int().numpy(), 0])))[::2]
    assert len(runs) == 2 and runs.min() >= 2                             # top and bottom rims, each >= 2 px


def test_eyes_have_whites_and_dark_pupils_at_128_and_64_px() -> None:
    rend = render(HeadParams.neutral(2, eye_size=-1.0), [Camera(), Camera(yaw=25)])
    big = render(HeadParams.neutral(1, eye_size=0.0), [Camera()])
    for out in (rend, big):
        for scale, thr, white, dark in ((lambda x: x, 0.9, 0.7, 0.15), (to64, 0.6, 0.55, 0.25)):
            lum = luminance(scale(out.image))
            eyes = scale(out.parts[:, EYES:EYES + 1])[:, 0] > thr
            for b in range(len(lum)):
                inside = lum[b][eyes[b]]
                assert inside.max() > white and inside.min() < dark, (b, inside.max(), inside.min())
    # the neutral eye shows at least 4 px of white on each side of the iris at 128 px
    lum = luminance(big.image)[0]
    eyes = big.parts[0, EYES] > 0.9
    white = (lum > 0.62) & eyes                                     # skin is about 0.47, the iris 0.25
    row = int(white.sum(1).argmax())
    assert white[row].sum() >= 16          # two eyes, two sides of each iris, >= 4 px each


def test_smile_reshapes_the_mouth_and_lifts_the_cheeks() -> None:
    views = [Camera(yaw=-20), Camera(), Camera(yaw=20)]
    outs = {s: render(HeadParams.neutral(3, smile=s), views) for s in (-1.0, 0.0, 1.0)}

    def corner_lift(out: HeadRender) -> torch.Tensor:
        """Mouth corners' height above the mouth's centre line, in pixels (frontal view)."""
        m = out.parts[1, MOUTH] > 0.5
        cols = m.any(0).nonzero()[:, 0]
        rows = torch.arange(128.0)[:, None]

        def centre_row(c: int) -> float:
            return float((m[:, c] * rows[:, 0]).sum() / m[:, c].sum())
        mid = int((cols.min() + cols.max()) // 2)
        return centre_row(mid) - 0.5 * (centre_row(int(cols.min()) + 1) + centre_row(int(cols.max()) - 1))

    assert corner_lift(outs[1.0]) > 2 and corner_lift(outs[-1.0]) < -1.5 and abs(corner_lift(outs[0.0])) < 1.5
    # a grin opens over teeth; a neutral mouth or a frown is closed
    for s, teeth in ((1.0, True), (0.0, False), (-1.0, False)):
        lum = luminance(outs[s].image)
        bright = ((lum > 0.7) & (outs[s].parts[:, MOUTH] > 0.5)).sum((1, 2))
        assert ((bright > 15) if teeth else (bright == 0)).all(), (s, bright)
    # the cheeks change between the eyes and the mouth, on the skin (not only inside the mouth)
    for scale in (lambda x: x, to64):
        diff = (scale(outs[1.0].image) - scale(outs[0.0].image)).abs().sum(1)
        skin = (scale(outs[0.0].parts[:, SKIN:SKIN + 1])[:, 0] > 0.99) & (scale(outs[1.0].parts[:, SKIN:SKIN + 1])[:, 0] > 0.99)
        h = diff.shape[-1]
        band_rows = slice(int(h * 0.48), int(h * 0.62))                     # below the eyes, above the mouth
        assert (diff[:, band_rows][skin[:, band_rows]] > 0.1).sum() > (80 if h == 128 else 20)


def test_age_greys_hair_adds_lines_and_sags_the_jaw() -> None:
    views = [Camera(yaw=-25), Camera(), Camera(yaw=25)]
    young, old = (render(HeadParams.neutral(3, age=a, hair_color=0.33), views) for a in (0.0, 1.0))
    for out_y, out_o in ((young.image, old.image), (to64(young.image), to64(old.image))):
        hair_y = (young.parts if out_y.shape[-1] == 128 else to64(young.parts))[:, HAIR] > 0.99
        hair_o = (old.parts if out_o.shape[-1] == 128 else to64(old.parts))[:, HAIR] > 0.99
        rgb_y = (out_y + 1) / 2
        rgb_o = (out_o + 1) / 2
        for b in range(3):
            cy = rgb_y[b][:, hair_y[b]].mean(1)
            co = rgb_o[b][:, hair_o[b]].mean(1)
            assert co.mean() > cy.mean() + 0.25                               # grey hair is lighter
            assert (co.max() - co.min()) < 0.5 * (cy.max() - cy.min())        # and less saturated
    # lines: on skin that is skin in both renders, old is locally darker than young (thin dark lines, beyond
    # the overall change of skin tone, which the high-pass removes)
    for scale, n_min in ((lambda x: x, 150), (to64, 30)):
        darker = luminance(scale(young.image)) - luminance(scale(old.image))
        lines = darker - F.avg_pool2d(darker[:, None], 7, 1, 3, count_include_pad=False)[:, 0]
        skin = torch.minimum(scale(young.parts[:, SKIN:SKIN + 1]), scale(old.parts[:, SKIN:SKIN + 1]))
        skin = F.max_pool2d(-skin, 3, 1, 1)[:, 0] < -0.99                            # eroded by a pixel
        assert ((lines > 0.04) & skin).sum((1, 2)).min() > n_min
    # sagging: the jaw line and jowls drop, so the head covers more pixels below the mouth
    rows = slice(88, 110)
    assert (old.mask[:, 0, rows] - young.mask[:, 0, rows]).sum() > 40


def test_world2_is_view_consistent() -> None:
    """Points seen in two views keep their colour: everything is painted on the surfaces, lighting is fixed to
    the head, and the geometry is the same from any camera."""
    p = HeadParams.neutral(2, smile=0.8, glasses=1.0, age=0.7, light_azimuth=0.5)
    cams = [Camera(yaw=0, pitch=3), Camera(yaw=18, pitch=-5)]
    out = render(p, cams, res=128)
    world, intr = stack_cameras(cams)
    from stylenerf_edit.generator.camera import ray_bundle

    origins, dirs = ray_bundle(world, intr, 128)
    pts = origins[0] + out.depth[0, 0].reshape(-1, 1) * dirs[0]                          # view 0's surface points
    cam = torch.linalg.inv(world[1]) @ torch.cat([pts, torch.ones(len(pts), 1)], 1).T     # in view 1's camera
    f = 1 / intr[1, 0, 0]
    ndc = (f * cam[:2] / -cam[2]).T
    grid = torch.stack([ndc[:, 0], -ndc[:, 1]], -1).reshape(1, 128, 128, 2)
    seen = F.grid_sample(out.image[1:], grid, align_corners=False)[0]
    depth1 = F.grid_sample(out.depth[1:], grid, align_corners=False)[0, 0]
    solid = (out.mask[0, 0] > 0.999) & (F.grid_sample(out.mask[1:], grid, align_corners=False)[0, 0] > 0.999)
    visible = solid & ((depth1 - (-cam[2]).reshape(128, 128)).abs() < 2e-3)
    err = (seen - out.image[0]).abs().amax(0)[visible]
    assert visible.sum() > 3000
    assert err.median() < 0.02 and err.quantile(0.9) < 0.12


def test_predictor_trains_on_world2_at_128_px(tmp_path: Path) -> None:
    """The predictor takes the world and resolution it learns from; its config records both."""
    from stylenerf_edit.synthetic.predictor import AttributePredictor, make_set, train

    images, targets = make_set(6, seed=3, resolution=128, world=2, supersample=1)
    assert images.shape == (6, 3, 128, 128) and targets.shape == (6, 6)
    v1, _ = make_set(6, seed=3, resolution=64, world=1)
    assert v1.shape == (6, 3, 64, 64)
    train(tmp_path, n_train=16, n_val=8, epochs=1, threads=1, world=2, resolution=128, train_supersample=1, blur=0.5)
    model = AttributePredictor.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "predictor.json").read_text())
    assert config["world"] == 2 and config["input_resolution"] == 128 and config["blur"] == 0.5
    assert model.input_resolution == 128 and model.features[0].stride == (2, 2)
    assert set(model.predict(images)) == {"smile", "age", "glasses", "hair_color", "yaw", "pitch"}
    shipped = AttributePredictor.from_pretrained()
    assert shipped.input_resolution == 128 and shipped.features[0].in_channels == 3
    with pytest.raises(ValueError, match="power of 2"):
        AttributePredictor(input_resolution=96)


def test_random_blur_softens_a_fraction_of_the_images() -> None:
    from stylenerf_edit.synthetic.predictor import random_blur

    images = torch.zeros(64, 3, 33, 33)
    images[:, :, 16, 16] = 1.0
    gen = torch.Generator().manual_seed(5)
    blurred = [random_blur(images, 0.5, gen) for _ in range(6)]
    for out in blurred:
        torch.testing.assert_close(out.sum((1, 2, 3)), images.sum((1, 2, 3)))     # light is only spread out
    soft = torch.stack([(out[:, 0, 16, 16] < 0.5) for out in blurred])
    assert 0 < soft.float().mean() < 1 and soft.any(1).sum() >= 3                 # some images, several calls
    assert torch.equal(random_blur(images, 0.0, gen), images)
