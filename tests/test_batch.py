"""Batch processing: discovery, hostile inputs, the manifest, resume after SIGKILL, local processes and Ray."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylenerf_edit.batch import (BatchOptions, assign_output_dirs, discover_photos, format_summary, run_batch)
from stylenerf_edit.batch.commit import (RECORD_NAME, STAGING_NAME, CommitRefused, commit_folder,
                                         remove_leftovers)
from stylenerf_edit.generator.checkpoint import load_with_info
from stylenerf_edit.invert.latent import GeneratorRef, load_latent
from stylenerf_edit.invert.optimize import InversionConfig
from stylenerf_edit.invert.pipeline import InvertOptions
from stylenerf_edit.synthetic.dataset import demo_photos

INVERT_FILES = {"aligned.png", "reconstruction.png", "latent.npz", "metrics.json", RECORD_NAME}


def _run(*args: str):
    from click.testing import CliRunner

    from stylenerf_edit.cli import main

    return CliRunner().invoke(main, list(args))


def _rows(out: Path) -> dict[str, dict]:
    with sqlite3.connect(out / "manifest.sqlite", timeout=30) as db:
        db.row_factory = sqlite3.Row
        return {r["path"]: dict(r) for r in db.execute("SELECT * FROM photos")}


def _counts(output: str) -> dict[str, int]:
    """The summary table's counts: {"done": 3, "failed before": 1, ...}."""
    found = [re.match(r"^(done|recovered|skipped|failed before|failed|left) +(\d+) ", line)
             for line in output.splitlines()]
    return {m[1]: int(m[2]) for m in found if m}


def _leftovers(out: Path) -> list[Path]:
    """Unfinished commits, and the staging folder itself: a finished run leaves neither."""
    return [out / STAGING_NAME] if (out / STAGING_NAME).exists() else []


def _aligned_folder(root: Path, n: int) -> Path:
    """``n`` shipped procedural photos (aligned crops: no face detection) under ``root/in``."""
    src = root / "in"
    for i in range(n):
        target = src / ("sub" if i % 2 else ".") / f"p{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo_photos()[i % 4], target)
    return src


@pytest.fixture(scope="module")
def faces() -> dict[str, Image.Image]:
    from matplotlib import cbook
    from skimage import data

    return {"astronaut": Image.fromarray(data.astronaut()),
            "grace": Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")}


@pytest.fixture(scope="module")
def direction_file(tmp_path_factory) -> Path:
    from stylenerf_edit.directions.direction import Direction, save_direction

    info = load_with_info("bundled:heads")[1]
    v = np.zeros(info.config.w_dim, dtype=np.float32)
    v[0] = 1
    d = Direction(attribute="axis0", vector=v, space="w", rows=None, offset=0.0, spread=1.0,
                  generator=GeneratorRef.from_info(info))
    return save_direction(d, tmp_path_factory.mktemp("directions") / "axis0.npz")


# --- discovery --------------------------------------------------------------------------------------------

def test_discovery_skips_hidden_files_and_the_output_folder(tmp_path):
    for name in ["a.jpg", "b.JPEG", "c.PnG", "d.webp", "e.bmp", "f.tif", "g.TIFF", "x/y/z.jpg", "notes.txt",
                 ".hidden.jpg", ".cache/h.jpg", "out/old.jpg", "x/.i.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert discover_photos(tmp_path, exclude=[tmp_path / "out"]) == [
        "a.jpg", "b.JPEG", "c.PnG", "d.webp", "e.bmp", "f.tif", "g.TIFF", "x/y/z.jpg"]


def test_output_folders_never_collide_and_known_ones_stay():
    photos = ["x.jpg", "x.png", "x/y.jpg", "a/b.jpg", "a/b.png", "a/b_png.jpg", "manifest.sqlite.jpg"]
    assigned = assign_output_dirs(photos, {}, reserved=["manifest.sqlite"])
    # A name a photo has as it is (b_png.jpg: b_png) goes before a name made up for another (b.png).
    assert assigned == {"x.jpg": "x_jpg", "x.png": "x_png", "x/y.jpg": "x/y", "a/b.jpg": "a/b",
                        "a/b.png": "a/b_png_2", "a/b_png.jpg": "a/b_png",
                        "manifest.sqlite.jpg": "manifest.sqlite_jpg"}
    for order in (photos[::-1], sorted(photos, key=len)):      # the same names whatever the order
        assert assign_output_dirs(order, {}, reserved=["manifest.sqlite"]) == assigned
    # A photo added later does not move the folder of one already recorded.
    again = assign_output_dirs(["b.jpg", "b.png"], {"b.png": "b"})
    assert again == {"b.jpg": "b_jpg", "b.png": "b"}


def test_output_folder_names_are_safe_whatever_the_input_is_called():
    photos = ["a\x01/x.png", "a_/x.png", "A.png", "a.png", "tab\t.png", "back\\slash.png", "d/e\u202e.png"]
    assert assign_output_dirs(photos, {}) == {
        "a\x01/x.png": "a__2/x", "a_/x.png": "a_/x", "A.png": "A", "a.png": "a_png", "tab\t.png": "tab_",
        "back\\slash.png": "back_slash", "d/e\u202e.png": "d/e_"}


def test_a_name_in_use_by_anything_but_this_batch_is_never_taken():
    on_disk = {"": {"mine": None, "notes": "", "p": "p.png", "q": "other.png", "sub": ""}}
    photos = ["mine.png", "notes.png", "p.png", "q.png", "sub/x.png"]
    assigned = assign_output_dirs(photos, {}, existing=lambda folder: on_disk.get(folder, {}))
    # A user's file or folder, or another photo's output, keeps its name; a plain folder may hold outputs.
    assert assigned == {"mine.png": "mine_png", "notes.png": "notes_png", "p.png": "p", "q.png": "q_png",
                        "sub/x.png": "sub/x"}


# --- a hostile folder through the CLI ----------------------------------------------------------------------

GOOD = ["a/astronaut.png", "b/c/grace_hopper.JPG", "large.jpg", "gray.png", "cmyk.jpg", "exif.jpg", "two_faces.png"]
BAD = {"bad/truncated.jpg": "truncated or corrupt", "bad/empty.jpg": "the file is empty",
       "bad/notes.jpg": "not an image file Pillow can read", "bad/tiny.png": "no face found",
       "bad/no_face.png": "no face found"}


def _hostile_folder(root: Path, faces: dict[str, Image.Image]) -> Path:
    src = root / "in"
    for d in ["a", "b/c", "bad", ".cache"]:
        (src / d).mkdir(parents=True, exist_ok=True)
    astronaut, grace = faces["astronaut"], faces["grace"]
    astronaut.save(src / "a/astronaut.png")
    grace.save(src / "b/c/grace_hopper.JPG", quality=95)
    big = Image.new("RGB", (6000, 4000), (120, 130, 140))     # 24 megapixels, mostly flat, one big face
    big.paste(astronaut.resize((2048, 2048)), (3000, 1000))
    big.save(src / "large.jpg", quality=80)
    astronaut.convert("L").save(src / "gray.png")
    grace.convert("CMYK").save(src / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6                                          # orientation: rotate 90 degrees clockwise to view
    grace.transpose(Image.Transpose.ROTATE_90).save(src / "exif.jpg", exif=exif, quality=95)
    pair = Image.new("RGB", (1400, 1100), (200, 200, 200))     # the astronaut's face is twice the size
    pair.paste(astronaut.resize((1024, 1024)), (20, 40))
    pair.paste(grace.resize((256, 300)), (1100, 400))
    pair.save(src / "two_faces.png")
    data = (src / "a/astronaut.png").read_bytes()
    astronaut.save(src / "bad/truncated.jpg", quality=90)
    full = (src / "bad/truncated.jpg").read_bytes()
    (src / "bad/truncated.jpg").write_bytes(full[:len(full) // 2])
    (src / "bad/empty.jpg").write_bytes(b"")
    (src / "bad/notes.jpg").write_text("this is not a photo\n")
    Image.new("RGB", (1, 1), (180, 140, 120)).save(src / "bad/tiny.png")
    gradient = np.linspace(0, 255, 200 * 200 * 3).reshape(200, 200, 3).astype(np.uint8)
    Image.fromarray(gradient).save(src / "bad/no_face.png")
    (src / ".hidden.png").write_bytes(data)
    (src / ".cache/astronaut.png").write_bytes(data)
    (src / "readme.txt").write_text("photos for the batch test\n")
    return src


def test_hostile_folder_reports_each_bad_photo_and_completes_the_good_ones(tmp_path, faces, direction_file):
    src = _hostile_folder(tmp_path, faces)
    out = src / "results"      # inside the input: never taken for photos
    args = ["batch", str(src), "--out", str(out), "--steps", "2", "--edit", f"{direction_file}=2",
            "--views", "-20,20"]
    result = _run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    rows = _rows(out)
    assert set(rows) == set(GOOD) | set(BAD)
    for path in GOOD:
        r = rows[path]
        assert r["status"] == "done" and r["attempts"] == 1 and r["reason"] is None, r
        folder = out / r["out_dir"]
        assert {p.name for p in folder.iterdir()} == INVERT_FILES | {"edits"}
        assert {p.name for p in (folder / "edits/axis0+2").iterdir()} == {"latent.npz", "edited.png",
                                                                         "before_after.png", "edit.json"}
        width, height = Image.open(folder / "edits/axis0+2/before_after.png").size      # 2 views x 2 rows, labelled
        R = Image.open(folder / "aligned.png").size[0]
        assert 2 * R < width < 2 * R + 200 and 2 * R < height < 2 * R + 40
        assert sorted(json.loads(r["outputs"])) == sorted(p.relative_to(out).as_posix()
                                                          for p in folder.rglob("*") if p.is_file())
        assert json.loads((folder / RECORD_NAME).read_text())["config_hash"] == r["config_hash"]
        assert r["started"] <= r["finished"] and r["seconds"] > 0
    assert rows["b/c/grace_hopper.JPG"]["out_dir"] == "b/c/grace_hopper"
    for path, reason in BAD.items():
        r = rows[path]
        assert r["status"] == "failed" and reason in r["reason"] and "\n" not in r["reason"], r
        assert str(src) not in r["reason"] and not (out / r["out_dir"]).exists()
        assert any(line.strip().startswith(path) and line.strip().endswith(r["reason"])
                   for line in result.output.splitlines())
    # The EXIF orientation is applied: the portrait is aligned in its upright 512 x 600 frame.
    exif_latent = load_latent(out / "exif/latent.npz")
    assert exif_latent.alignment["source_size"] == [600, 512]
    # Of two faces the largest (the astronaut, on the left) is taken.
    quad = np.array(load_latent(out / "two_faces/latent.npz").alignment["quad"])
    assert 20 < quad[:, 0].mean() < 1044
    assert json.loads((out / "large/metrics.json").read_text())["pose_method"] == "landmarks"
    assert _counts(result.output) == {"done": 7, "failed": 5}
    assert not _leftovers(out)
    # Off a terminal: plain lines, each photo's as it finishes; unreadable files before any optimisation, in
    # the milliseconds their reading took (each photo's own time, not a share of the run).
    assert "\r" not in result.output
    lines = result.output.splitlines()
    first_done = min(i for i, line in enumerate(lines) if ": done -> " in line)
    for path in ("bad/truncated.jpg", "bad/empty.jpg", "bad/notes.jpg"):
        assert any(line.startswith(f"{path}: failed: ") for line in lines[:first_done]), path
        assert rows[path]["seconds"] < 1.0
    assert sum(": done -> " in line and "PSNR" in line for line in lines) == 7
    assert min(rows[p]["seconds"] for p in GOOD) > max(rows[p]["seconds"] for p in BAD if p != "bad/no_face.png")
    assert not (out / ".batch.lock").exists()       # removed when the run ends

    # Resume: the second run does no work; failures are reported again, with their reasons.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "manifest.sqlite"}
    again = _run(*args)
    assert again.exit_code == 1
    assert _counts(again.output) == {"done": 0, "skipped": 7, "failed": 0, "failed before": 5}
    assert "not an image file Pillow can read" in again.output
    assert _rows(out) == rows
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # --retry-failed retries exactly the failed photos (which fail again, for the same reasons).
    retried = _run(*args, "--retry-failed")
    assert retried.exit_code == 1 and _counts(retried.output) == {"done": 0, "skipped": 7, "failed": 5}
    after = _rows(out)
    assert all(after[p]["attempts"] == 2 and after[p]["status"] == "failed" for p in BAD)
    assert all(after[p] == rows[p] for p in GOOD)


# --- dry run, --limit, settings changes, missing outputs -------------------------------------------------

def test_dry_run_limit_settings_change_and_missing_outputs(tmp_path):
    src, out = _aligned_folder(tmp_path, 4), tmp_path / "out"
    base = ["batch", str(src), "--out", str(out), "--steps", "2", "--aligned"]

    dry = _run(*base, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would process 4 photo(s)" in dry.output and "new  sub/p1.png -> sub/p1/" in dry.output
    assert not out.exists()

    first = _run(*base, "--limit", "2")
    assert first.exit_code == 0, first.output
    assert _counts(first.output) == {"done": 2, "failed": 0, "left": 2}
    rows = _rows(out)
    assert sorted(p for p, r in rows.items() if r["status"] == "done") == ["p0.png", "p2.png"]
    assert sorted(p for p, r in rows.items() if r["status"] == "pending") == ["sub/p1.png", "sub/p3.png"]

    manifest = (out / "manifest.sqlite").read_bytes()
    dry = _run(*base, "--dry-run")
    assert "would process 2 photo(s)" in dry.output and "2 done already" in dry.output
    assert (out / "manifest.sqlite").read_bytes() == manifest

    rest = _run(*base)
    assert rest.exit_code == 0 and _counts(rest.output) == {"done": 2, "skipped": 2, "failed": 0}
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in _rows(out).values())

    # Other settings: refused (it would replace finished outputs) unless --force.
    changed = _run(*base[:-2], "3", "--aligned")
    assert changed.exit_code == 1 and "--force" in changed.output and len(changed.output.splitlines()) == 1
    forced = _run(*base[:-2], "3", "--aligned", "--force")
    assert forced.exit_code == 0 and _counts(forced.output)["done"] == 4
    assert all(json.loads((out / r["out_dir"] / "metrics.json").read_text())["steps"] == 3
               for r in _rows(out).values())

    # A finished photo whose files went missing is redone, and only it.
    (out / "sub/p1/latent.npz").unlink()
    repaired = _run(*base[:-2], "3", "--aligned")
    assert repaired.exit_code == 0 and _counts(repaired.output) == {"done": 1, "skipped": 3, "failed": 0}
    assert (out / "sub/p1/latent.npz").is_file() and _rows(out)["sub/p1.png"]["attempts"] == 3


def test_bad_requests_are_one_line_errors(tmp_path, monkeypatch):
    src = _aligned_folder(tmp_path, 1)
    out = str(tmp_path / "out")
    (tmp_path / "empty").mkdir()
    cases = [(["batch", str(tmp_path / "missing"), "--out", out], "no such folder"),
             (["batch", str(tmp_path / "empty"), "--out", out], "no photos found"),
             (["batch", str(src), "--out", out, "--address", "1.2.3.4:6379"], "needs --engine ray"),
             (["batch", str(src), "--out", out, "--edit", "nope=2"], "no direction named 'nope'"),
             (["batch", str(src), "--out", out, "--views", "a:b"], "views 'a:b'")]
    monkeypatch.setitem(sys.modules, "ray", None)     # as if Ray were not installed
    cases.append((["batch", str(src), "--out", out, "--aligned", "--engine", "ray"], "pip install 'ray>=2.9'"))
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


def test_a_lock_left_by_a_killed_run_does_not_block_and_a_held_one_names_its_holder(tmp_path):
    src = _aligned_folder(tmp_path, 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".batch.lock").write_text("999999\n")      # what a killed run leaves: a file, no lock
    result = _run("batch", str(src), "--out", str(out), "--steps", "1", "--aligned")
    assert result.exit_code == 0, result.output
    assert not (out / ".batch.lock").exists()
    code = ("import fcntl, sys, time\nf = open(sys.argv[1], 'a+')\nfcntl.flock(f, fcntl.LOCK_EX)\n"
            "f.write('4242\\n')\nf.flush()\nprint('held', flush=True)\ntime.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out / ".batch.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _run("batch", str(src), "--out", str(out), "--steps", "1", "--aligned")
        assert result.exit_code == 1 and "another batch run (pid 4242) is writing to this folder" in result.output
    finally:
        holder.kill()
        holder.wait()
    assert _run("batch", str(src), "--out", str(out), "--steps", "1", "--aligned").exit_code == 0


# --- failures inside a mini-batch -----------------------------------------------------------------------

@pytest.mark.parametrize("error,reason", [
    (FloatingPointError("the loss became non-finite at step 0; lower the learning rates"), "non-finite"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "lower --batch-size"),
])
def test_a_failing_photo_does_not_take_its_batch_mates_down(tmp_path, monkeypatch, error, reason):
    import stylenerf_edit.batch.worker as worker
    from stylenerf_edit.invert.optimize import invert

    src = _aligned_folder(tmp_path, 3)
    from stylenerf_edit.generator import describe

    poison = worker.prepare_photo(src / "sub/p1.png", describe().config.img_resolution, aligned=True).target

    def invert_unless_poisoned(G, targets, *args, **kwargs):
        if any(torch.equal(t.cpu(), poison) for t in targets):
            raise error
        return invert(G, targets, *args, **kwargs)

    monkeypatch.setattr(worker, "invert", invert_unless_poisoned)
    options = BatchOptions(invert=InvertOptions(config=InversionConfig(steps=2), aligned=True, batch_size=3),
                           progress=False)
    report = run_batch(src, tmp_path / "out", options=options)
    assert sorted(report.done) == ["p0.png", "p2.png"] and list(report.failed) == ["sub/p1.png"]
    assert reason in report.failed["sub/p1.png"] and not report.ok
    assert "sub/p1.png" in format_summary(report)


# --- SIGKILL in the middle, then resume ----------------------------------------------------------------

def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path):
    src, out = _aligned_folder(tmp_path, 5), tmp_path / "out"
    args = ["batch", str(src), "--out", str(out), "--steps", "12", "--aligned", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stylenerf_edit.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while True:
            assert proc.poll() is None, "the run finished before it could be killed; give it more steps"
            assert time.time() < deadline, "no photo was done in time"
            try:
                if any(r["status"] == "done" for r in _rows(out).values()):
                    break
            except sqlite3.Error:     # not created yet
                pass
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = _rows(out)
    done_before = {p for p, r in killed.items() if r["status"] == "done"}
    assert 1 <= len(done_before) < 5, killed
    # Whatever is visible is complete; anything half-written is hidden. A folder renamed into place just before
    # the kill, whose photo the manifest had not yet marked done, is recorded as done by the resume, not redone.
    visible = {p for p, r in killed.items() if (out / r["out_dir"]).exists()}
    for p in visible:
        assert INVERT_FILES <= {f.name for f in (out / killed[p]["out_dir"]).iterdir()}
    recovered = visible - done_before
    mtimes = {f: f.stat().st_mtime_ns for p in visible for f in (out / killed[p]["out_dir"]).iterdir()}

    resumed = _run(*args)
    assert resumed.exit_code == 0, resumed.output
    rows = _rows(out)
    assert all(r["status"] == "done" for r in rows.values())
    for path, r in rows.items():
        record = json.loads((out / r["out_dir"] / RECORD_NAME).read_text())
        assert record["run"] == r["run"] and record["committed"] == r["finished"]
        if path in done_before:      # untouched by the second run
            assert r == killed[path]
        elif path in recovered:
            assert r["run"] == 1 and r["attempts"] == 1
        else:                        # processed by the second run, once (twice handed out only if killed in it)
            assert r["run"] == 2 and r["attempts"] == (2 if killed[path]["status"] == "running" else 1)
            assert r["started"] > killed[next(iter(done_before))]["finished"]
        load_latent(out / r["out_dir"] / "latent.npz")
    assert {f: f.stat().st_mtime_ns for f in mtimes} == mtimes
    counts = _counts(resumed.output)
    assert counts["skipped"] == len(done_before) and counts.get("recovered", 0) == len(recovered)
    assert counts["done"] == 5 - len(visible) and not _leftovers(out)


# --- several local processes and Ray give the in-process results ----------------------------------------

def _latents(out: Path) -> dict[str, np.ndarray]:
    return {p: load_latent(out / r["out_dir"] / "latent.npz").ws for p, r in _rows(out).items()}


def test_local_worker_processes_match_the_in_process_run(tmp_path):
    src = _aligned_folder(tmp_path, 2)
    options = dict(invert=InvertOptions(config=InversionConfig(steps=2), aligned=True, batch_size=1), progress=False)
    single = run_batch(src, tmp_path / "one", options=BatchOptions(**options))
    pool = run_batch(src, tmp_path / "two", options=BatchOptions(**options, workers=2, device="cpu"))
    assert sorted(single.done) == sorted(pool.done) == ["p0.png", "sub/p1.png"]
    workers = {r["worker"] for r in _rows(tmp_path / "two").values()}
    assert len(workers) == 2 and all(w.endswith(":cpu") for w in workers)
    a, b = _latents(tmp_path / "one"), _latents(tmp_path / "two")
    for p in a:
        np.testing.assert_allclose(a[p], b[p], atol=1e-4, rtol=0)


def test_ray_engine_matches_the_local_engine(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'ray>=2.9' to test --engine ray")
    src = _aligned_folder(tmp_path, 3)
    options = dict(invert=InvertOptions(config=InversionConfig(steps=2), aligned=True, batch_size=2), progress=False)
    local = run_batch(src, tmp_path / "local", options=BatchOptions(**options))
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    try:
        remote = run_batch(src, tmp_path / "ray", options=BatchOptions(**options, engine="ray"))
    finally:
        ray.shutdown()
    assert sorted(remote.done) == sorted(local.done) and remote.ok
    rows = _rows(tmp_path / "ray")
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in rows.values())
    assert len({r["started"] for r in rows.values()}) == 2      # two mini-batches, one task each
    a, b = _latents(tmp_path / "local"), _latents(tmp_path / "ray")
    for p in a:
        np.testing.assert_allclose(a[p], b[p], atol=1e-4, rtol=0)


def test_a_new_input_folder_never_goes_inside_a_photos_output_folder(tmp_path):
    src, out = _aligned_folder(tmp_path, 1), tmp_path / "out"
    assert _run("batch", str(src), "--out", str(out), "--steps", "1", "--aligned").exit_code == 0
    (src / "p0").mkdir()
    shutil.copyfile(src / "p0.png", src / "p0" / "q.png")    # OUT/p0/ is p0.png's folder: the input folder p0/
    result = _run("batch", str(src), "--out", str(out), "--steps", "1", "--aligned")   # gets another name
    assert result.exit_code == 0, result.output
    assert {p: r["out_dir"] for p, r in _rows(out).items()} == {"p0.png": "p0", "p0/q.png": "p0_2/q"}
    # A manifest that records such a nesting, or a folder outside OUT (edited by hand), is refused.
    for bad, message in [("p0/q", "would lie inside p0/"), ("../escape", "not a safe folder name")]:
        with sqlite3.connect(out / "manifest.sqlite") as db:
            db.execute("UPDATE photos SET out_dir = ? WHERE path = 'p0/q.png'", (bad,))
        result = _run("batch", str(src), "--out", str(out), "--steps", "1", "--aligned", "--force")
        assert result.exit_code == 1 and message in result.output and len(result.output.splitlines()) == 1
    assert not (tmp_path / "escape").exists()


# --- nothing the batch did not write is replaced or deleted ---------------------------------------------

def test_the_batch_never_replaces_or_deletes_what_it_did_not_write(tmp_path):
    src, out = _aligned_folder(tmp_path, 2), tmp_path / "out"      # p0.png, sub/p1.png
    (out / "p0").mkdir(parents=True)
    (out / "p0" / "notes.txt").write_text("mine\n")                  # a user's folder where p0.png's would go
    (out / "sub").mkdir()
    (out / "sub" / "p1").write_text("a file\n")                      # and a user's file where sub/p1.png's would
    base = ["batch", str(src), "--out", str(out), "--aligned", "--steps"]
    first = _run(*base, "1")
    assert first.exit_code == 0, first.output
    assert {p: r["out_dir"] for p, r in _rows(out).items()} == {"p0.png": "p0_png", "sub/p1.png": "sub/p1_png"}
    assert (out / "p0/notes.txt").read_text() == "mine\n" and (out / "sub/p1").read_text() == "a file\n"
    record = json.loads((out / "p0_png" / RECORD_NAME).read_text())
    assert record["photo"] == "p0.png" and record["out_dir"] == "p0_png"
    assert record["files"]["latent.npz"] == hashlib.sha256((out / "p0_png/latent.npz").read_bytes()).hexdigest()

    # A file added to a finished photo's folder, or changed in it, is the user's: redoing that photo is refused.
    (out / "p0_png" / "notes.txt").write_text("mine too\n")
    changed = out / "sub/p1_png/reconstruction.png"
    changed.write_bytes(changed.read_bytes() + b"edited")
    kept = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "manifest.sqlite"}
    forced = _run(*base, "2", "--force")
    assert forced.exit_code == 1 and _counts(forced.output) == {"done": 0, "failed": 2}
    rows = _rows(out)
    assert "p0_png/ holds notes.txt, which the batch did not write" in rows["p0.png"]["reason"]
    assert "sub/p1_png/ holds reconstruction.png, changed since the batch wrote it" in rows["sub/p1.png"]["reason"]
    assert all("--retry-failed" in r["reason"] and "\n" not in r["reason"] for r in rows.values())
    assert {p: p.read_bytes() for p in kept} == kept and not _leftovers(out)

    # Moved away, the photo is redone by --retry-failed; the other stays refused.
    (out / "p0_png" / "notes.txt").unlink()
    retried = _run(*base, "2", "--retry-failed")
    assert retried.exit_code == 1 and _counts(retried.output) == {"done": 1, "failed": 1}
    assert json.loads((out / "p0_png/metrics.json").read_text())["steps"] == 2
    assert changed.read_bytes() == kept[changed] and (out / "p0/notes.txt").read_text() == "mine\n"


def test_a_file_name_that_is_not_utf8_is_reported_not_a_traceback(tmp_path):
    src, out = _aligned_folder(tmp_path, 1), tmp_path / "out"
    shutil.copyfile(src / "p0.png", os.path.join(os.fsencode(src), b"bad\xff.png"))
    result = _run("batch", str(src), "--out", str(out), "--steps", "1", "--aligned")
    assert result.exit_code == 1, result.output
    assert _counts(result.output) == {"done": 1, "failed": 1} and "Traceback" not in result.output
    assert "bad\\xff.png  its file name is not valid UTF-8" in result.output
    assert list(_rows(out)) == ["p0.png"]


def test_commit_replaces_only_its_own_unchanged_folder(tmp_path, monkeypatch):
    import stylenerf_edit.batch.commit as commit

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    flushed: list[Path] = []
    monkeypatch.setattr(commit, "fsync_path", lambda path: flushed.append(Path(path)))
    files = {"a.txt": b"1", "edits/e+1/b.txt": b"2"}
    commit_folder(out, "d/x", files, {"photo": "x.png"})
    # The new folders are flushed before the rename, the folders the rename and mkdir changed after it.
    tmp = flushed[2]
    assert flushed[:3] == [tmp / "edits/e+1", tmp / "edits", tmp] and tmp.parent == out / STAGING_NAME
    assert len(flushed) == 6 and set(flushed[3:]) == {out / "d", out / STAGING_NAME, out}
    assert json.loads((out / "d/x" / RECORD_NAME).read_text())["files"] == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    commit_folder(out, "d/x", {"a.txt": b"3"}, {"photo": "x.png"})           # its own commit: replaced
    assert (out / "d/x/a.txt").read_bytes() == b"3" and not (out / "d/x/edits").exists()

    (out / "user").mkdir()
    (out / "file").write_text("mine\n")
    (out / "link").symlink_to(outside)
    refusals = [("d/x", {"photo": "y.png"}, "outputs of another photo (x.png)"),
                ("user", {"photo": "x.png"}, "no readable batch.json"), ("file", {"photo": "x.png"}, "is a file"),
                ("link", {"photo": "x.png"}, "is a link"), ("link/x", {"photo": "x.png"}, "is a link or a file"),
                ("../x", {"photo": "x.png"}, "not a name"), ("..", {"photo": "x.png"}, "not a name")]
    for rel_dir, record, message in refusals:
        with pytest.raises(CommitRefused, match=re.escape(message)):
            commit_folder(out, rel_dir, files, record)
    with pytest.raises(CommitRefused, match="not a name"):
        commit_folder(out, "y", {"../../z": b""}, {"photo": "y.png"})
    assert (out / "d/x/a.txt").read_bytes() == b"3" and (out / "file").read_text() == "mine\n"
    assert not any(outside.iterdir()) and not (tmp_path / "x").exists() and not any((out / "user").iterdir())

    # Leftovers are removed from the staging folder only, and only the batch's own.
    staging = out / STAGING_NAME
    (staging / "partial-0123456789ab").mkdir()
    (staging / "old-0123456789ab").mkdir()
    (staging / "notes.txt").write_text("not the batch's\n")
    (out / ".x.partial-0123456789ab").mkdir()
    assert remove_leftovers(out) == 2
    assert sorted(p.name for p in staging.iterdir()) == ["notes.txt"] and (out / ".x.partial-0123456789ab").is_dir()


def test_settings_added_later_leave_earlier_hashes_valid_until_used():
    """A batch finished before coarse-to-fine or the PTI edit regulariser existed keeps its settings hash; turning
    either on changes it."""
    from stylenerf_edit.batch.run import batch_config, config_hash
    from stylenerf_edit.invert.pipeline import InvertOptions
    from stylenerf_edit.invert.settings import InversionConfig, TuningConfig

    _, info = load_with_info("bundled:heads")

    def recorded(config: InversionConfig, pti: TuningConfig | None) -> dict:
        options = BatchOptions(invert=InvertOptions(config=config, pti=pti))
        return batch_config(info, "bundled:heads", options, [], [])

    plain = recorded(InversionConfig(coarse_fraction=0.0), TuningConfig(edit_weight=0.0))
    assert not {"coarse_fraction", "coarse_resolution"} & set(plain["inversion"])
    assert not {"edit_weight", "edit_directions", "edit_strength"} & set(plain["invert"]["pti"])
    coarse = recorded(InversionConfig(coarse_fraction=0.5), TuningConfig(edit_weight=0.0))
    assert coarse["inversion"]["coarse_fraction"] == 0.5 and coarse["inversion"]["coarse_resolution"] == 64
    edits = recorded(InversionConfig(coarse_fraction=0.0), TuningConfig(edit_weight=2.0))
    assert edits["invert"]["pti"]["edit_directions"] == TuningConfig.edit_directions
    assert len({config_hash(plain), config_hash(coarse), config_hash(edits)}) == 3
    # the coarse size means nothing without coarse steps
    assert config_hash(recorded(InversionConfig(coarse_fraction=0.0, coarse_resolution=128),
                                TuningConfig(edit_weight=0.0))) == config_hash(plain)
