"""Atomic writes and the image writers built on them: a failed write leaves neither a partial file nor a
changed target."""

from __future__ import annotations

import numpy as np
import pytest

from stylenerf_edit.files import atomic_path, save_npz, write_text
from stylenerf_edit.images import save_png, write_gif, write_mp4


def test_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    target = write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_durable_write_replaces_and_keeps_the_suffix_while_writing(tmp_path):
    seen = []
    with atomic_path(tmp_path / "sub" / "a.png", durable=True) as tmp:
        seen.append(tmp)
        tmp.write_bytes(b"new")
    assert seen[0].suffix == ".png" and seen[0].name.startswith(".")
    assert (tmp_path / "sub" / "a.png").read_bytes() == b"new"
    assert not seen[0].exists()


def test_writers_produce_readable_files_and_nothing_else(tmp_path):
    frame = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    save_png(frame, tmp_path / "a.png")
    write_gif([frame, frame[::-1]], tmp_path / "a.gif")
    write_mp4([frame, frame[::-1]], tmp_path / "a.mp4")
    save_npz(tmp_path / "a.npz", {"x": np.arange(3)})
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), frame)
    assert Image.open(tmp_path / "a.gif").n_frames == 2
    assert (tmp_path / "a.mp4").stat().st_size > 0
    assert np.array_equal(np.load(tmp_path / "a.npz")["x"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4", "a.npz", "a.png"]
