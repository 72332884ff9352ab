"""The web editor (``stylenerf-edit serve``): its HTTP API on a live server, and the whole flow in headless
Chromium (Debian's ``chromium`` driven by Playwright), compared with what ``edit`` writes for the same settings."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optional import require

require("starlette", "uvicorn", install="pip install 'stylenerf-edit[web]'")

import uvicorn  # noqa: E402

from stylenerf_edit.editing.outputs import edit_latent_file  # noqa: E402
from stylenerf_edit.editing.views import latent_from_seed  # noqa: E402
from stylenerf_edit.invert.latent import GeneratorRef, Latent, load_latent, save_latent  # noqa: E402
from stylenerf_edit.synthetic.dataset import demo_photos  # noqa: E402
from stylenerf_edit.web import server as web  # noqa: E402
from stylenerf_edit.web.editor import EditorModel  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def model() -> EditorModel:
    return EditorModel("bundled:heads")


def seed_latent(model: EditorModel, seed: int, yaw: float = 8.0) -> Latent:
    ws, bg = latent_from_seed(model.G, seed)
    camera = model.G.camera_prior.frontal().with_(yaw=yaw, pitch=-3.0)
    return Latent(ws=ws[0].cpu().numpy(), camera=camera, bg_code=bg[0].cpu().numpy(),
                  generator=GeneratorRef.from_info(model.info), source=f"seed {seed}")


@pytest.fixture(scope="module")
def latents_dir(model: EditorModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    save_latent(seed_latent(model, 3), root / "three" / "latent.npz")
    save_latent(seed_latent(model, 4), root / "four.npz")
    outside = tmp_path_factory.mktemp("outside")
    save_latent(seed_latent(model, 5), outside / "secret.npz")
    (root / "link.npz").symlink_to(outside / "secret.npz")
    return root


class Server:
    """A live editor on a free loopback port, in this process."""

    def __init__(self, model: EditorModel, root: Path, latents: Path | None):
        self.editor = web.Editor(model, root, latents)
        config = uvicorn.Config(web.create_app(self.editor, web.LOOPBACK_HOSTS), host="127.0.0.1", port=0,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def request(self, path: str, data: bytes | dict | None = None, method: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        body = json.dumps(data).encode() if isinstance(data, dict) else data
        hdrs = {"Content-Type": "application/json"} if isinstance(data, dict) else {}
        req = urllib.request.Request(self.url + path, data=body, method=method or ("POST" if data is not None else "GET"),
                                     headers={**hdrs, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path: str, data: bytes | dict | None = None, **kw) -> tuple[int, dict]:
        status, _, body = self.request(path, data if data is not None else ({} if path.endswith(
            ("session", "close", "cancel", "ping")) or "/sample/" in path else None), **kw)
        return status, json.loads(body)

    def session(self) -> dict:
        status, info = self.json("/api/session")
        assert status == 200, info
        return info

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.editor.shutdown()


@pytest.fixture(scope="module")
def server(model: EditorModel, latents_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    s = Server(model, tmp_path_factory.mktemp("sessions"), latents_dir)
    yield s
    s.stop()


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_session_offers_the_models_directions_samples_and_the_served_latents(server: Server) -> None:
    info = server.session()
    assert [s["name"] for s in info["sliders"]] == ["age", "glasses", "hair_color", "smile"]
    assert all(s["low"] < -2 and s["high"] > 2 for s in info["sliders"])
    assert info["resolution"] == 128 and info["default_steps"] == 300 and len(info["samples"]) == len(demo_photos())
    assert info["latents"] == ["four.npz", "three/latent.npz"]      # the link leading outside is not offered
    page = server.request("/")[2].decode()
    assert "http" not in page.replace("http-equiv", "")               # nothing fetched from elsewhere
    status, headers, _ = server.request("/")
    assert "default-src 'self'" in headers["content-security-policy"]


def test_two_pages_never_see_each_others_files(server: Server) -> None:
    a, b = server.session(), server.session()
    status, result = server.json(f"/api/s/{a['token']}/sample/1")
    assert status == 200, result
    url = result["files"]["crop"]
    assert server.request(url)[0] == 200
    crop = np.asarray(Image.open(io.BytesIO(server.request(url)[2])))
    assert crop.shape == (128, 128, 3)
    assert server.request(url.replace(a["token"], b["token"]))[0] == 404
    status, body = server.json(url.replace(a["token"], "not-a-token").split("?")[0])
    assert status == 404 and "reload the page" in body["error"]
    assert server.json(f"/api/s/{b['token']}/state")[1] == {"latent": None}


def post_raw(server: Server, path: str, declared: int | None, chunks: list[bytes],
             monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict]:
    """POST with a Content-Length header and no body, or a chunked body past a lowered limit."""
    import http.client

    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    if declared is not None:
        conn.putrequest("POST", path)
        conn.putheader("Content-Length", str(declared))
        conn.endheaders()
    else:
        monkeypatch.setattr(web, "MAX_UPLOAD_BYTES", 1000)
        conn.request("POST", path, body=iter(chunks), encode_chunked=True)
    response = conn.getresponse()
    result = response.status, json.loads(response.read())
    conn.close()
    monkeypatch.undo()
    return result


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(server: Server,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    token = server.session()["token"]
    photo = f"/api/s/{token}/photo"
    status, body = server.json(photo, b"this is not an image", headers={"X-Filename": "notes.txt"})
    assert status == 400 and "notes.txt" in body["error"] and "not an image" in body["error"]
    jpeg = png_bytes(np.asarray(Image.open(demo_photos()[0]).convert("RGB")), "JPEG")
    status, body = server.json(photo, jpeg[: len(jpeg) // 2], headers={"X-Filename": "half.jpg"})
    assert status == 400 and "half.jpg" in body["error"] and "truncated" in body["error"]
    status, body = server.json(photo, png_bytes(np.full((200, 300, 3), 128, np.uint8)),
                               headers={"X-Filename": "wall.png"})
    assert status == 400 and "wall.png: no face found" in body["error"]
    for declared, chunks in [(web.MAX_UPLOAD_BYTES + 1, []), (None, [b"\0" * 600] * 4)]:   # said, or streamed
        status, body = post_raw(server, photo, declared, chunks, monkeypatch)
        assert status == 413 and "larger than" in body["error"]
    huge = io.BytesIO()
    Image.new("L", (8000, 7000)).save(huge, format="PNG")        # 56 megapixels in a small file
    status, body = server.json(photo, huge.getvalue(), headers={"X-Filename": "huge.png"})
    assert status == 400 and "huge.png: 8000x7000 pixels exceed the limit" in body["error"]
    status, body = server.json(f"/api/s/{token}/latent", b"PK\x03\x04 not a zip")
    assert status == 400 and "the uploaded latent" in body["error"]
    status, body = server.json(f"/api/s/{token}/render", {"strengths": {"smile": 1}})
    assert status == 400 and "invert a photo or open a latent first" in body["error"]
    status, body = server.json(f"/api/s/{token}/photo?aligned=1", jpeg, headers={"X-Filename": "good.jpg"})
    assert status == 200 and set(body["files"]) == {"alignment", "crop"}
    assert server.json(photo, b"junk", headers={"X-Filename": "junk.png"})[0] == 400
    status, job = server.json(f"/api/s/{token}/invert", {"steps": 1})      # the good photo is still the one
    while job["state"] == "running":
        time.sleep(0.2)
        job = server.json(f"/api/s/{token}/job")[1]
    assert job["state"] == "done" and job["metrics"]["psnr"] > 10, job


def test_requests_cannot_reach_files_outside_the_session_and_the_served_folder(server: Server,
                                                                                latents_dir: Path) -> None:
    token = server.session()["token"]
    for name in ["../four.npz", str(latents_dir / "four.npz"), "link.npz", "three/../../outside/secret.npz"]:
        status, body = server.json(f"/api/s/{token}/open", {"name": name})
        assert status == 400 and "no such latent" in body["error"], name
    for key in ["../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", str(latents_dir / "four.npz")]:
        assert server.request(f"/api/s/{token}/file/{key}")[0] == 404, key
    status, body = server.json(f"/api/s/{token}/open", {"name": "three/latent.npz"})
    assert status == 200 and body["latent"]["yaw"] == pytest.approx(8.0) and not body["latent"]["tuned"]
    status, headers, _ = server.request("/", headers={"Host": "evil.example"})
    assert status == 400                                  # a loopback server answers loopback names only


def test_render_and_downloads_match_what_edit_writes(server: Server, latents_dir: Path, tmp_path: Path) -> None:
    token = server.session()["token"]
    latent_file = latents_dir / "three" / "latent.npz"
    status, body = server.json(f"/api/s/{token}/latent", latent_file.read_bytes())
    assert status == 200, body
    view = {"strengths": {"smile": 0.8, "age": -0.5}, "rows": None, "yaw": 20.0, "pitch": -3.0}
    status, headers, data = server.request(f"/api/s/{token}/render", view)
    assert status == 200 and json.loads(headers["x-warnings"]) == []
    page = np.asarray(Image.open(io.BytesIO(data)))
    edit_latent_file(latent_file, ["smile=0.8", "age=-0.5"], tmp_path / "cli", camera=(20.0, -3.0))
    expected = np.asarray(Image.open(tmp_path / "cli" / "edited.png"))
    assert np.array_equal(page, expected)
    unedited = np.asarray(Image.open(io.BytesIO(server.request(f"/api/s/{token}/render", {"yaw": 20.0,
                                                                                          "pitch": -3.0})[2])))
    assert np.abs(unedited.astype(int) - page).mean() > 1
    preview = np.asarray(Image.open(io.BytesIO(server.request(f"/api/s/{token}/render", {**view, "preview": True})[2])))
    assert preview.shape == (64, 64, 3)       # half resolution while a slider moves
    small = np.asarray(Image.fromarray(expected).resize((64, 64), Image.Resampling.BOX)).astype(int)
    assert np.abs(preview.astype(int) - small).mean() < 12
    status, headers, _ = server.request(f"/api/s/{token}/render", {"strengths": {"smile": 4}})
    assert "outside the 99%" in json.loads(headers["x-warnings"])[0]
    status, body = server.json(f"/api/s/{token}/export", view)
    assert status == 200 and set(body["files"]) == {"latent.npz", "edited.png", "before_after.png", "sweep.gif",
                                                    "sweep.mp4"}
    exported = server.request(body["files"]["edited.png"])[2]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(exported))), expected)
    (tmp_path / "down.npz").write_bytes(server.request(body["files"]["latent.npz"])[2])
    down = load_latent(tmp_path / "down.npz", generator=server.editor.model.info)
    assert down.camera.yaw == 20.0 and down.extra["edits"] == ["smile +0.8", "age -0.5"]
    for bad in [{"strengths": {"smile": "x"}}, {"strengths": {"nope": 1}}, {"yaw": 400}, {"rows": "../x"}, b"{oops",
                b"[1, 2]"]:
        status, body = server.json(f"/api/s/{token}/render", bad)
        assert status == 400 and body["error"], bad


def test_a_long_inversion_can_be_cancelled_and_a_closed_page_leaves_nothing(server: Server) -> None:
    token = server.session()["token"]
    folder = server.editor.sessions[token].workspace.folder
    assert server.json(f"/api/s/{token}/sample/0")[0] == 200
    status, job = server.json(f"/api/s/{token}/invert", {"steps": 5000})
    assert status == 200 and job["state"] == "running"
    assert server.json(f"/api/s/{token}/invert", {"steps": 5})[1]["error"] == "an inversion is already running"
    deadline = time.time() + 120
    while server.json(f"/api/s/{token}/job")[1]["step"] < 2:
        assert time.time() < deadline
        time.sleep(0.2)
    assert server.request(f"/api/s/{token}/job/preview.png")[0] == 200
    server.json(f"/api/s/{token}/cancel")
    while (job := server.json(f"/api/s/{token}/job")[1])["state"] == "running":
        assert time.time() < deadline
        time.sleep(0.2)
    assert job["state"] == "cancelled" and job["step"] < 5000
    assert server.json(f"/api/s/{token}/state")[1] == {"latent": None}
    assert folder.is_dir()
    server.json(f"/api/s/{token}/close")
    assert not folder.exists() and token not in server.editor.sessions
    assert server.request(f"/api/s/{token}/ping", b"")[0] == 404


def test_a_silent_page_is_forgotten(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    token = server.session()["token"]
    folder = server.editor.sessions[token].workspace.folder
    server.editor.sessions[token].seen -= web.SESSION_TIMEOUT + 1
    server.editor._remove_finished()
    assert not folder.exists() and server.json(f"/api/s/{token}/state")[0] == 404


def test_serve_prints_its_url_and_warns_off_loopback(tmp_path: Path) -> None:
    assert web.is_loopback("127.0.0.1") and web.is_loopback("localhost") and web.is_loopback("::1")
    assert not web.is_loopback("0.0.0.0") and not web.is_loopback("192.168.1.4")
    exe = [sys.executable, "-m", "stylenerf_edit.cli", "--threads", "1", "serve", "--port", "0"]
    for host, warned in [("127.0.0.1", False), ("0.0.0.0", True)]:
        proc = subprocess.Popen(exe + ["--host", host], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("stylenerf-edit editor for bundled:heads: http://"), line
            url = line.split()[4]
            with urllib.request.urlopen(url.replace("0.0.0.0", "127.0.0.1"), timeout=30) as r:
                assert b"stylenerf-edit" in r.read()
        finally:
            proc.terminate()
            err = proc.communicate(timeout=30)[1]
        assert ("warning: listening on 0.0.0.0" in err) == warned, err
    result = subprocess.run(exe[:-2] + ["--latents", str(tmp_path / "missing")], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: ") and "missing" in result.stderr


def _browser():
    require("playwright", install="pip install playwright (the test extra)")
    if not Path(CHROMIUM).is_file():
        message = "needs Debian's chromium: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    return sync_playwright()


@pytest.fixture
def served(latents_dir: Path):
    proc = subprocess.Popen([sys.executable, "-m", "stylenerf_edit.cli", "serve", "--port", "0", "--latents",
                             str(latents_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("stylenerf-edit editor"), line + proc.stderr.read()
    yield line.split()[4]
    proc.terminate()
    proc.wait(timeout=30)


def wait_rendered(page, after: int) -> None:
    page.wait_for_function(f"Number(document.getElementById('view').dataset.renders) > {after} && "
                           "document.getElementById('view').dataset.pending === '0'", timeout=60_000)


def slide(page, selector: str, value: float) -> None:
    """Move a slider as a drag ends: ``input`` (a preview is asked for), then ``change`` (the full image)."""
    page.fill(selector, str(value))
    page.dispatch_event(selector, "input")
    page.dispatch_event(selector, "change")


def shown_image(page) -> np.ndarray:
    """The editor's current image, as the page holds it (a blob: URL)."""
    data = page.evaluate("async (u) => Array.from(new Uint8Array(await (await fetch(u)).arrayBuffer()))",
                         page.get_attribute("#view", "src"))
    return np.asarray(Image.open(io.BytesIO(bytes(data))))


def invert_and_edit(page, steps: int) -> None:
    """Invert the chosen photo in the page, then move the smile and yaw sliders and make the downloads."""
    page.wait_for_function("!document.getElementById('invert').disabled")
    page.fill("#steps", str(steps))
    page.click("#invert")
    page.wait_for_selector("body[data-job='done']", timeout=max(120, 3 * steps) * 1000)
    wait_rendered(page, 0)
    slide(page, "#dir-smile", 1.5)
    slide(page, "#yaw", 20)
    wait_rendered(page, int(page.get_attribute("#view", "data-renders")))
    page.click("#export")
    page.wait_for_selector("#downloads a[data-file='latent.npz']", timeout=120_000)


def download(page, selector: str, to: Path) -> Path:
    with page.expect_download() as event:
        page.click(selector)
    event.value.save_as(to)
    return to


def test_the_whole_flow_in_a_real_browser(served: str, model: EditorModel, tmp_path: Path) -> None:
    import skimage

    (tmp_path / "notes.txt").write_text("not a photo")
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, bypass_csp=True, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(served)
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#photo-file", str(tmp_path / "notes.txt"))
        page.wait_for_selector("#message.error")
        assert "notes.txt" in page.text_content("#message")              # a bad upload: said in the page
        page.set_input_files("#photo-file", str(Path(skimage.data_dir) / "astronaut.png"))
        page.wait_for_function("document.getElementById('crop').src !== ''")
        invert_and_edit(page, steps=4)
        assert "procedural heads" in page.text_content("#fit-warnings")       # a real face on the bundled model: said
        view = json.loads(page.get_attribute("#view", "data-view"))
        assert view["strengths"] == {"smile": 1.5} and view["yaw"] == 20
        assert page.get_attribute("#view", "data-preview") == "0"           # released: the full image
        shown = shown_image(page)
        edited = load_latent(download(page, "#downloads a[data-file='latent.npz']", tmp_path / "edited.npz"),
                             generator=model.info)
        assert edited.camera.yaw == 20 and edited.extra["edits"] == ["smile +1.5"]
        inverted = download(page, "#inverted-latent", tmp_path / "inverted.npz")
        edit_latent_file(inverted, ["smile=1.5"], tmp_path / "cli", camera=(20.0, view["pitch"]))
        assert np.array_equal(shown, np.asarray(Image.open(tmp_path / "cli" / "edited.png")))   # what `edit` renders
        slide(page, "#dir-smile", 0)
        slide(page, "#yaw", load_latent(inverted).camera.yaw)
        wait_rendered(page, int(page.get_attribute("#view", "data-renders")))
        assert np.abs(shown_image(page).astype(int) - shown).mean() > 2      # the sliders change the image
        assert not errors, errors
        screenshot = os.environ.get("STYLENERF_EDIT_SCREENSHOT")     # the README's picture: a sample, fully inverted
        if screenshot:
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
            page.goto(served)
            page.wait_for_selector("body[data-ready='1']")
            page.click("#samples img[data-sample='1']")
            invert_and_edit(page, steps=int(os.environ.get("STYLENERF_EDIT_SCREENSHOT_STEPS", "300")))
            page.screenshot(path=screenshot, full_page=True)
        browser.close()
