"""Output folder names: safe whatever the photo is called, unique within a run, the same on a rerun."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from stylenerf_edit.editing.outputs import edit_folder_names
from stylenerf_edit.invert.pipeline import output_dirs
from stylenerf_edit.names import MAX_NAME_BYTES, is_safe_name, photo_output_names, safe_name, safe_output_names


@pytest.mark.parametrize("text,expected", [
    ("..", "output"), (".", "output"), ("...", "output"), ("", "output"), (" . ", "output"),
    (".hidden", "hidden"), ("..x", "x"), ("a/b", "a_b"), ("a\\b", "a_b"), ("tab\tname", "tab_name"),
    ("bell\x07", "bell_"), ("del\x7f", "del_"), ("rtl\u202eexe", "rtl_exe"), ("bad\udcff", "bad_"),
    ("trailing. ", "trailing"), ("NUL", "_NUL"), ("con.txt", "_con.txt"), ("e\u0301", "\u00e9"),
    ("smile+2", "smile+2"), ("a..b", "a..b"),
])
def test_safe_name(text, expected):
    assert safe_name(text) == expected and is_safe_name(expected)


def test_long_names_are_cut_and_stay_apart():
    a, b = safe_name("é" * 200 + "a"), safe_name("é" * 200 + "b")
    assert a != b and len(a.encode()) <= MAX_NAME_BYTES and len(b.encode()) <= MAX_NAME_BYTES
    assert a.startswith("é" * 50) and is_safe_name(a)


@pytest.mark.parametrize("name", ["", ".", "..", ".x", "a/b", "x\n", "x ", "CON"])
def test_unsafe_names_are_recognised(name):
    assert not is_safe_name(name)


def test_photo_names_collide_nowhere_and_keep_natural_names():
    photos = ["a_2.png", "a.png", "b/a.png", "c/A.png"]
    names = dict(zip(photos, photo_output_names(photos)))
    assert names == {"a_2.png": "a_2", "a.png": "a", "b/a.png": "a_png", "c/A.png": "A_png_2"}
    for order in itertools.permutations(photos):       # whatever order they are given in
        assert dict(zip(order, photo_output_names(list(order)))) == names


def test_dot_and_hidden_photo_names_become_visible_folders():
    photos = ["...jpg", "..jpg", ".jpg", ".hidden.png", "hidden.png", "photo.jpg", "x/\x1b[2J.png"]
    names = photo_output_names(photos)
    assert all(is_safe_name(n) for n in names) and len({n.casefold() for n in names}) == len(photos)
    assert dict(zip(photos, names))["hidden.png"] == "hidden"      # the name that needed no change keeps it
    assert dict(zip(photos, names))["photo.jpg"] == "photo"


def test_taken_names_are_avoided_case_insensitively():
    assert safe_output_names([("k", ["Notes"])], taken=["notes", "NOTES_2"]) == ["Notes_3"]


def test_edit_folders_are_safe_and_unique():
    edits = [("smile", 2.0), ("../../dirs/x.npz", -1.0), ("/abs/other/x.npz", -1.0), ("..", 1.0), ("age", 0.5)]
    names = edit_folder_names(edits)
    assert names[0] == "smile+2" and names[4] == "age+0.5" and set(names[1:3]) == {"x-1", "x-1_2"}
    assert all(is_safe_name(n) for n in names)
    assert edit_folder_names(edits[::-1]) == names[::-1]


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_invert_folders_stay_inside_out_and_never_collide(tmp_path):
    out = tmp_path / "out"
    photos = [_photo(tmp_path / n) for n in ["...jpg", "..jpg", ".hidden.png", "a_2.png", "a.png", "b/a.png"]]
    dirs = output_dirs(photos, out)
    assert all(d.parent == out and is_safe_name(d.name) for d in dirs)
    assert len(set(dirs)) == len(dirs)
    assert dict(zip([p.name for p in photos[3:5]], [d.name for d in dirs[3:5]])) == {"a_2.png": "a_2", "a.png": "a"}
    assert output_dirs(photos[::-1], out) == dirs[::-1]                    # a rerun, in any order


def test_invert_never_writes_into_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "out"
    a, b = _photo(tmp_path / "a.png"), _photo(tmp_path / "b.png")
    (out / "a").mkdir(parents=True)
    (out / "a" / "notes.txt").write_text("mine\n")                         # a user's folder
    (out / "b").mkdir()
    (out / "b" / "metrics.json").write_text(json.dumps({"photo": os.path.abspath(b)}))   # b's earlier results
    assert [d.name for d in output_dirs([a, b], out)] == ["a_png", "b"]
    (out / "c").symlink_to(tmp_path)                                      # a link out of the folder
    assert output_dirs([_photo(tmp_path / "c.png")], out)[0].name == "c_png"
