"""Loading generators: official pickle -> our generator, native safetensors round trip, bad files."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from stylenerf_edit.errors import CheckpointError
from stylenerf_edit.generator import Camera, describe, generator_from_official, load_generator, save_pretrained
from stylenerf_edit.generator.checkpoint import config_from_official, weights_sha256


def render(G, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ws = G.mapping(G.sample_z(2, g), truncation_psi=0.7)
    with torch.no_grad():
        return G.synthesize(ws, [Camera(yaw=12, pitch=-4), Camera(yaw=-20, pitch=6)], G.sample_bg_code(2, g)).img


def test_pickle_loads_to_the_same_generator(fixture_pickle: Path, fixture_generator, official_state) -> None:
    G = load_generator(fixture_pickle)
    expected = {k: v for k, v in official_state.items() if not k.endswith("resample_filter")}
    assert list(G.state_dict()) == list(expected)  # official names and order
    for k, v in G.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert not any(p.requires_grad for p in G.parameters()) and not G.training
    assert torch.equal(render(G), render(fixture_generator))


def test_pickle_to_safetensors_round_trip(fixture_pickle: Path, tmp_path: Path) -> None:
    G = load_generator(fixture_pickle)
    out = save_pretrained(G, tmp_path / "conv", source={"file": fixture_pickle.name})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    for form in (out, out / "model.safetensors", out / "config.json"):
        G2 = load_generator(form)
        assert G2.cfg == G.cfg
        assert torch.equal(render(G2, 3), render(G, 3))
    info_pkl, info_native = describe(fixture_pickle), describe(out)
    assert info_pkl.weights_sha256 == info_native.weights_sha256 == weights_sha256(G.state_dict())
    assert info_pkl.file_sha256 != info_native.file_sha256
    assert info_native.extra["source"] == {"file": fixture_pickle.name}
    assert info_pkl.parameter_count == 4_939_850 and info_pkl.config.num_ws == 15


def test_sizes_come_from_the_tensors(official_kwargs: dict, official_state: dict) -> None:
    """A checkpoint whose widths differ from what its kwargs predict (like ffhq_1024.pkl) still loads."""
    state = dict(official_state)
    g = torch.Generator().manual_seed(0)
    for name in [k for k in state if k.startswith("synthesis.b128.")]:
        t = state[name]
        if name.endswith(("conv0.weight", "conv0.adapter.1.bias", "conv0.bias", "conv1.bias")):
            state[name] = torch.randn(48, *t.shape[1:], generator=g)
        elif name.endswith("conv0.adapter.1.weight"):
            state[name] = torch.randn(48, 12, 1, 1, generator=g)
        elif name.endswith("conv0.adapter.0.weight"):
            state[name] = torch.randn(12, 96, *t.shape[2:], generator=g)
        elif name.endswith("conv0.adapter.0.bias"):
            state[name] = torch.randn(12, generator=g)
        elif name.endswith("conv1.weight"):
            state[name] = torch.randn(48, 48, *t.shape[2:], generator=g)
        elif name.endswith(("conv1.affine.weight", "torgb.affine.weight")):
            state[name] = torch.randn(48, t.shape[1], generator=g)
        elif name.endswith(("conv1.affine.bias", "torgb.affine.bias")):
            state[name] = torch.ones(48)
        elif name.endswith("torgb.weight"):
            state[name] = torch.randn(3, 48, 1, 1, generator=g)
    G = generator_from_official(official_kwargs, state)
    assert G.cfg.block_channels == [512, 48] and G.cfg.adapter_channels == [128, 12]
    assert render(G).shape == (2, 3, 128, 128)


@pytest.mark.parametrize("path,value,needle", [
    ("synthesis_kwargs.upsample_mode", "bilinear", "upsample_mode"),
    ("synthesis_kwargs.foreground_kwargs.use_viewdirs", True, "use_viewdirs"),
    ("synthesis_kwargs.camera_kwargs.ray_align_corner", True, "ray_align_corner"),
])
def test_unsupported_options_are_named(official_kwargs: dict, official_state: dict, path: str, value,
                                       needle: str) -> None:
    kwargs = copy.deepcopy(official_kwargs)
    node = kwargs
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=needle):
        config_from_official(kwargs, official_state)


def test_altered_resample_filter_is_refused(official_kwargs: dict, official_state: dict) -> None:
    state = dict(official_state)
    state["synthesis.b64.resample_filter"] = state["synthesis.b64.resample_filter"] * 2
    with pytest.raises(ValueError, match="resample_filter"):
        generator_from_official(official_kwargs, state)


def test_nan_weights_are_refused(official_kwargs: dict, official_state: dict) -> None:
    state = dict(official_state)
    state["mapping.fc3.bias"] = torch.full_like(state["mapping.fc3.bias"], float("nan"))
    with pytest.raises(ValueError, match="mapping.fc3.bias.*NaN"):
        generator_from_official(official_kwargs, state)


def test_progressive_growing_alpha_is_refused(official_kwargs: dict, official_state: dict) -> None:
    G = generator_from_official(official_kwargs, {**official_state, "synthesis.alpha": torch.tensor(0.5)})
    with pytest.raises(ValueError, match="alpha"):
        render(G)


def test_fresh_model_alpha_uses_20_samples(official_kwargs: dict, official_state: dict) -> None:
    G = generator_from_official(official_kwargs, {**official_state, "synthesis.alpha": torch.tensor(-1.0)})
    ws = G.mapping(G.sample_z(1, torch.Generator().manual_seed(0)))
    with torch.no_grad():
        out = G.synthesize(ws, Camera(), G.sample_bg_code(1, torch.Generator().manual_seed(0)))
    assert out.rays.fg_depth.shape[-1] == 40  # 20 coarse + 20 fine


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def converted(fixture_pickle: Path, tmp_path: Path) -> Path:
    return save_pretrained(load_generator(fixture_pickle), tmp_path / "conv")


def test_corrupt_native_files(converted: Path) -> None:
    weights = converted / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError) as e:
        load_generator(converted)
    assert str(weights) in one_line(e)


def test_bad_native_config(converted: Path) -> None:
    config = converted / "config.json"
    config.write_text("{not json")
    with pytest.raises(CheckpointError) as e:
        load_generator(converted)
    assert str(config) in one_line(e)
    config.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="format"):
        load_generator(converted)


def test_native_weights_of_another_model_are_refused(converted: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(converted / "model.safetensors"))
    del weights["synthesis.b128.torgb.bias"]
    save_file(weights, str(converted / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing.*b128.torgb.bias"):
        load_generator(converted)


def test_directory_without_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as e:
        load_generator(tmp_path)
    assert "config.json" in one_line(e)


def test_unknown_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as e:
        load_generator("ffhq_2048")
    assert "ffhq_2048" in one_line(e) and "ffhq_256" in str(e.value)
    with pytest.raises(CheckpointError, match="no such file"):
        load_generator(tmp_path / "missing.pkl")


def test_model_name_not_downloaded_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLENERF_EDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointError) as e:
        load_generator("ffhq_256")
    message = one_line(e)
    assert "stylenerf-edit download ffhq_256" in message and str(tmp_path / "home") in message


def test_manually_placed_checkpoint_is_found_by_name(fixture_pickle: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLENERF_EDIT_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    os.symlink(fixture_pickle, tmp_path / "models" / "ffhq_256.pkl")
    G = load_generator("ffhq_256")
    assert G.img_resolution == 128
    assert describe("ffhq_256").name == "ffhq_256"


def test_cuda_device_without_gpu_is_a_clear_error() -> None:
    from stylenerf_edit.generator import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(CheckpointError, match="--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
