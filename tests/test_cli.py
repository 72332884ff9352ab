"""The command line: every command, and bad input answered with one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from stylenerf_edit.cli import main


def run(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def converted(fixture_pickle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "fixture_128"
    result = run("convert", fixture_pickle, out)
    assert result.exit_code == 0, result.output
    assert "4,939,850 parameters" in result.output
    return out


def test_convert_and_info(converted: Path, fixture_pickle: Path) -> None:
    assert (converted / "model.safetensors").is_file() and (converted / "config.json").is_file()
    native = json.loads(run("info", converted, "--json").output)
    official = json.loads(run("info", fixture_pickle, "--json").output)
    assert native["weights_sha256"] == official["weights_sha256"]
    assert native["img_resolution"] == 128 and native["num_ws"] == 15 and native["parameter_count"] == 4_939_850
    assert official["format"] == "official-pickle" and native["format"] == "safetensors"
    text = run("info", fixture_pickle).output
    assert "num_ws           15" in text and "4,939,850" in text and official["file_sha256"] in text


def test_render_still_and_view(converted: Path, tmp_path: Path) -> None:
    result = run("render", "--network", converted, "--seed", "0-1", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    a = np.asarray(Image.open(tmp_path / "seed0000.png"))
    assert a.shape == (128, 128, 3) and a.std() > 1
    result = run("render", "--network", converted, "--seed", "0", "--yaw", "20", "--pitch", "5", "--out", tmp_path / "v")
    b = np.asarray(Image.open(tmp_path / "v" / "seed0000.png"))
    assert result.exit_code == 0 and np.abs(a.astype(int) - b).mean() > 1


def test_render_sweep(converted: Path, tmp_path: Path) -> None:
    result = run("render", "--network", converted, "--seed", "4", "--sweep", "--frames", "3", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    strip = np.asarray(Image.open(tmp_path / "seed0004_sweep.png"))
    assert strip.shape == (128, 3 * 128, 3)
    gif = Image.open(tmp_path / "seed0004_sweep.gif")
    assert gif.n_frames == 4  # ping-pong loop of 3 frames
    mp4 = (tmp_path / "seed0004_sweep.mp4").read_bytes()
    assert mp4[4:8] == b"ftyp" and len(mp4) > 1000
    assert not list(tmp_path.glob(".*partial*")), "no temporary files may be left behind"


def test_render_rejects_sweep_with_yaw(converted: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render", "--network", str(converted), "--seed", "0", "--sweep", "--yaw", "3"])
    assert result.exit_code == 2 and "exclusive" in result.output


@pytest.mark.parametrize("content", [None, b"", b"\x89PNG\r\n\x1a\n not a pickle", b"hello world"])
def test_bad_network_files(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "model.pkl"
    if content is not None:
        path.write_bytes(content)
    for command in (["info", path], ["convert", path, tmp_path / "out"], ["render", "--network", path, "--seed", "0"]):
        assert_one_line_error(run(*command), str(path))


def test_truncated_pickle(fixture_pickle: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pkl"
    path.write_bytes(fixture_pickle.read_bytes()[:100_000])
    assert_one_line_error(run("info", path), str(path))
    assert_one_line_error(run("convert", path, tmp_path / "out"), str(path))
    assert not (tmp_path / "out").exists()


def test_unknown_model_name() -> None:
    assert_one_line_error(run("render", "--network", "ffhq_4096", "--seed", "1"), "ffhq_4096", "ffhq_256")
    result = CliRunner().invoke(main, ["download", "ffhq_4096"])
    assert result.exit_code == 2 and "ffhq_256" in result.output


def test_download_offline_says_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STYLENERF_EDIT_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    result = run("download", "ffhq_512")
    assert_one_line_error(result, "ffhq_512.pkl", str(tmp_path / "models" / "ffhq_512.pkl"), "huggingface.co")


def test_download_finds_a_manually_placed_file(fixture_pickle: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STYLENERF_EDIT_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ffhq_256.pkl").symlink_to(fixture_pickle)
    result = run("download", "ffhq_256")
    assert result.exit_code == 0 and result.output.strip() == str(tmp_path / "models" / "ffhq_256.pkl")


def test_console_entry_point_exits_cleanly_on_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "stylenerf_edit.cli", "info", str(tmp_path / "nope.pkl")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_demo_edit_folders_are_safe_and_stay_inside_out(tmp_path: Path) -> None:
    from stylenerf_edit.demo import run_demo
    from stylenerf_edit.directions.direction import Direction, save_direction
    from stylenerf_edit.generator.checkpoint import load_with_info
    from stylenerf_edit.invert.latent import GeneratorRef

    info = load_with_info("bundled:heads")[1]
    v = np.zeros(info.config.w_dim, dtype=np.float32)
    v[0] = 1
    direction = Direction(attribute="axis0", vector=v, space="w", rows=None, offset=0.0, spread=1.0,
                          generator=GeneratorRef.from_info(info))
    files = []
    for folder in ("a", "b"):       # two direction files of one name, given as absolute paths
        (tmp_path / "dirs" / folder).mkdir(parents=True)
        files.append(save_direction(direction, tmp_path / "dirs" / folder / "axis0.npz"))
    out = tmp_path / "work" / "demo"
    result = run_demo(out, edits=[f"{f}=1" for f in files], steps=1, yaws=(0.0,), progress=False)
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["demo"]
    assert sorted(p.name for p in (tmp_path / "dirs").rglob("*")) == ["a", "axis0.npz", "axis0.npz", "b"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["axis0+1", "axis0+1_2", "inversion"]
    assert (out / "axis0+1_2" / "sweep.gif").is_file() and 'src="axis0+1_2/sweep.gif"' in result.index.read_text()


def test_the_cli_starts_without_importing_torch() -> None:
    """`stylenerf-edit --help` and option parsing must not wait for torch (seconds, more on a busy machine); the
    heavy imports happen inside each command."""
    code = ("import sys, stylenerf_edit.cli\n"
            "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'PIL') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    result = CliRunner().invoke(main, ["invert", "--help"])
    assert result.exit_code == 0 and "--pti-steps" in result.output


def test_threads_are_set_before_any_command_and_the_wait_policy_only_when_asked(monkeypatch) -> None:
    import torch

    from stylenerf_edit.threads import configure_threads

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["--threads", "1", "info", "bundled:heads"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1 and "OMP_WAIT_POLICY" not in os.environ   # the runtime's default
        configure_threads(wait_policy="PASSIVE")
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")           # the user's choice wins
        configure_threads(wait_policy="PASSIVE")
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
        assert CliRunner().invoke(main, ["--threads", "0", "info", "bundled:heads"]).exit_code == 2
    finally:
        torch.set_num_threads(before)
