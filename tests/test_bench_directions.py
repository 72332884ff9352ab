"""The ground-truth scoring of bench/directions.py, on procedural renders whose answer is known."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stylenerf_edit.generator.camera import Camera, stack_cameras
from stylenerf_edit.synthetic.params import background_from_code, head_params_from_z
from stylenerf_edit.synthetic.renderer import render_heads


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "directions.py"
    spec = importlib.util.spec_from_file_location("bench_directions", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def heads():
    """Two heads with their own parameters, cameras and backgrounds."""
    g = torch.Generator().manual_seed(5)
    z, code = torch.randn(2, 512, generator=g), torch.randn(2, 32, generator=g) * 0.65
    world, intr = stack_cameras([Camera(yaw=0.0, pitch=0.0), Camera(yaw=15.0, pitch=-5.0)])
    return head_params_from_z(z), world, intr, background_from_code(code)


def _renders(heads, attribute: str, values: list[list[float]], version: int) -> torch.Tensor:
    """[N, M, 3, 64, 64]: head i with ``attribute`` set to values[i][j], its other parameters unchanged."""
    params, world, intr, bg = heads
    M = len(values[0])
    table = torch.tensor(values, dtype=torch.float32).reshape(-1)
    edited = replace(params, **{f: getattr(params, f).repeat_interleave(M) for f in params.__dataclass_fields__})
    edited = replace(edited, **{attribute: table})
    rep = [t.repeat_interleave(M, 0) for t in (world, intr, bg)]
    return render_heads(edited, rep[0], rep[1], 64, rep[2], world=version).image.reshape(len(values), M, 3, 64, 64)


@pytest.mark.parametrize("version", [1, 2])
def test_world_fit_reads_back_the_smile_each_image_was_rendered_with(bench, heads, version):
    values = [[-0.55, 0.23, 0.7], [0.9, -0.1, 0.0]]   # on and between the grid's 0.1 steps
    params, world, intr, bg = heads
    fitted = bench.fit_attribute(_renders(heads, "smile", values, version), params, "smile",
                                 bench.attribute_grid("smile"), world, intr, bg, version)
    assert fitted.shape == (2, 3)
    np.testing.assert_allclose(fitted, values, atol=0.05)   # within half a grid step


@pytest.mark.parametrize("version", [1, 2])
def test_world_fit_of_a_binary_attribute(bench, heads, version):
    values = [[0.0, 1.0], [1.0, 0.0]]
    params, world, intr, bg = heads
    fitted = bench.fit_attribute(_renders(heads, "glasses", values, version), params, "glasses",
                                 bench.attribute_grid("glasses"), world, intr, bg, version)
    np.testing.assert_array_equal(fitted, values)


def test_world_fit_reads_back_the_yaw_each_head_was_seen_at(bench, heads):
    params, _, _, bg = heads
    base = Camera(yaw=0.0, pitch=2.0)
    offsets = [-2.7, 1.4]      # between the grid's 1-degree steps, one head each
    world, intr = stack_cameras([base.with_(yaw=o) for o in offsets])
    images = render_heads(params, world, intr, 128, bg, world=2).image
    np.testing.assert_allclose(bench.fit_yaw(images, params, base, bg, 2), offsets, atol=0.1)


def test_refined_argmin_finds_a_parabolas_vertex_between_grid_points(bench):
    grid = np.linspace(-1, 1, 21)
    cost = np.stack([(grid - 0.234) ** 2, (grid + 0.97) ** 2, np.abs(grid - 2.0)])
    np.testing.assert_allclose(bench.refined_argmin(grid, cost), [0.234, -0.97, 1.0], atol=1e-9)


def test_agreement_of_distances_with_labels(bench):
    labels = np.linspace(0, 1, 50)
    assert bench.agreement(2 * labels - 1, labels, 0.2) == pytest.approx((1.0, 1.0))
    assert bench.agreement(1 - 2 * labels, labels, 0.2) == pytest.approx((0.0, -1.0))
    # Every distance >= 0 (the offset is off): the 10 lowest labels are on the wrong side, the 10 highest right.
    acc, r = bench.agreement(2 * labels, labels, 0.2)
    assert acc == 0.5 and r == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    _, r = bench.agreement(rng.standard_normal(50_000), rng.uniform(size=50_000), 0.2)
    assert abs(r) < 0.02
