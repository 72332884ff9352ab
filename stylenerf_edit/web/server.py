"""``stylenerf-edit serve``: the web editor, a small Starlette app over :mod:`.editor` with one plain page.

Why Starlette and a hand-written page rather than Gradio: the page needs per-visitor folders, cancellable
inversions, a render loop that drops stale slider positions and strict limits on what a request may touch; in
Starlette each of these is a few explicit lines, the whole extra is two small pure-Python packages
(``starlette``, ``uvicorn``), and the page loads nothing from outside the server (no CDN, no telemetry: the
Content-Security-Policy forbids it).

Visitors: each page load opens a session (``POST /api/session``) and gets a random token that every later
request carries in its path; two tabs are two sessions and never see each other's files. A session's folder lies
in the server's temporary folder and is removed when its page closes (a beacon), when the page stops pinging
for :data:`SESSION_TIMEOUT` seconds, and when the server stops. Requests name files only by keys the server gave
out; latents are opened only from the listing of ``--latents`` the server made itself.
"""

from __future__ import annotations

import io
import ipaddress
import json
import math
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.images import to_uint8
from stylenerf_edit.invert.pipeline import StepReport
from stylenerf_edit.invert.settings import InversionConfig, TuningConfig
from stylenerf_edit.synthetic.dataset import demo_photos

from .editor import EditorError, EditorModel, View, Workspace

STATIC = Path(__file__).with_name("static")
MAX_UPLOAD_BYTES = 25 * 2 ** 20      # a photo or a latent; a tuning delta of the official 1024 model is smaller
MAX_STEPS = 5000
MAX_SESSIONS = 32
SESSION_TIMEOUT = 120.0              # seconds without a ping before a session is removed (the page pings every 15)
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                      "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"}


class Cancelled(Exception):
    """The visitor cancelled the inversion."""


@dataclass
class Job:
    """An inversion running for one session, as the page follows it."""

    steps: int
    pti_steps: int
    state: str = "running"           # running, done, failed, cancelled
    stage: str = "aligning"          # aligning, invert, tune
    step: int = 0
    lpips: float | None = None
    started: float = field(default_factory=time.time)
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    preview: bytes | None = None
    preview_version: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    # set once the inversion no longer writes to the session's folder, before the state leaves "running"
    finished: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def status(self) -> dict[str, Any]:
        total = self.steps + self.pti_steps
        done = self.step + (self.steps if self.stage == "tune" else 0)
        elapsed = time.time() - self.started
        eta = elapsed / done * (total - done) if done and self.state == "running" else None
        return {"state": self.state, "stage": self.stage, "step": self.step,
                "steps": self.pti_steps if self.stage == "tune" else self.steps, "done": done, "total": total,
                "lpips": self.lpips, "elapsed": round(elapsed, 1), "eta": None if eta is None else round(eta, 1),
                "message": self.message, "preview_version": self.preview_version, **self.result}


class Session:
    """One page: its workspace, its files by key, its inversion."""

    def __init__(self, token: str, workspace: Workspace):
        self.token = token
        self.workspace = workspace
        self.files: dict[str, Path] = {}
        self.job: Job | None = None
        self.seen = time.time()
        self.closed = False
        self.lock = threading.Lock()

    def publish(self, files: dict[str, Path], prefix: str = "") -> dict[str, str]:
        """Make ``files`` downloadable; returns their URLs by name."""
        urls = {}
        for name, path in files.items():
            key = f"{prefix}{name}"
            self.files[key] = path
            urls[name] = f"/api/s/{self.token}/file/{key}?v={time.time_ns()}"
        return urls


class Editor:
    """The server's state: the shared model, the sessions and the folder they live in."""

    def __init__(self, model: EditorModel, root: Path, latents: Path | None = None):
        self.model = model
        self.root = root
        self.latents = latents.resolve() if latents is not None else None
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reaper = threading.Thread(target=self._reap, name="session-reaper", daemon=True)
        self.reaper.start()

    def open_session(self) -> Session:
        with self.lock:
            self._remove_finished()
            if len(self.sessions) >= MAX_SESSIONS:
                raise EditorError(f"the editor already serves {MAX_SESSIONS} pages; close one and reload")
            token = secrets.token_urlsafe(18)
            session = Session(token, Workspace(self.model, self.root / token))
            self.sessions[token] = session
            return session

    def session(self, token: str) -> Session:
        session = self.sessions.get(token)
        if session is None or session.closed:
            raise KeyError(token)
        session.seen = time.time()
        return session

    def close_session(self, token: str) -> None:
        with self.lock:
            session = self.sessions.get(token)
            if session is not None:
                session.closed = True
                if session.job is not None:
                    session.job.cancel.set()
                self._remove_finished()

    def _remove_finished(self) -> None:
        """Forget closed and silent sessions whose inversion has stopped, and delete their folders."""
        now = time.time()
        for token, s in list(self.sessions.items()):
            if not s.closed and now - s.seen > SESSION_TIMEOUT:
                s.closed = True
                if s.job is not None:
                    s.job.cancel.set()
            if s.closed and (s.job is None or s.job.finished.is_set()):
                self.sessions.pop(token, None)
                shutil.rmtree(s.workspace.folder, ignore_errors=True)

    def _reap(self) -> None:
        while not self.stop.wait(5.0):
            with self.lock:
                self._remove_finished()

    def latent_listing(self) -> list[str]:
        """``--latents``' latent files as relative paths, links leading outside it left out."""
        if self.latents is None or not self.latents.is_dir():
            return []
        found = []
        for path in sorted(self.latents.rglob("*.npz")):
            try:
                inside = path.resolve().is_relative_to(self.latents) and path.resolve().is_file()
            except OSError:
                inside = False
            if inside:
                found.append(path.relative_to(self.latents).as_posix())
            if len(found) >= 1000:
                break
        return found

    def shutdown(self) -> None:
        self.stop.set()
        for s in self.sessions.values():
            if s.job is not None:
                s.job.cancel.set()
        for s in self.sessions.values():
            if s.job is not None and s.job.thread is not None:
                s.job.thread.join(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


def _ok(payload: dict[str, Any]) -> JSONResponse:
    return JSONResponse(payload, headers=HEADERS)


async def _read_body(request: Request) -> bytes:
    """The request body, refused past ``MAX_UPLOAD_BYTES`` (by its declared length or while it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise _TooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise _TooLarge()
        chunks.append(chunk)
    if not size:
        raise EditorError("the upload is empty; choose a file")
    return b"".join(chunks)


class _TooLarge(Exception):
    pass


async def _json(request: Request) -> dict[str, Any]:
    """The request's JSON object body; one line when it is anything else."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise EditorError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise EditorError("expected a JSON object")
    return body


def _view(data: dict[str, Any]) -> View:
    strengths = data.get("strengths") or {}
    if not isinstance(strengths, dict) or not all(isinstance(v, (int, float)) for v in strengths.values()):
        raise EditorError("strengths must map direction names to numbers")
    rows = data.get("rows") or None
    number = (lambda v: None if v is None else float(v))
    try:
        return View({str(k): float(v) for k, v in strengths.items()}, rows if rows is None else str(rows),
                    number(data.get("yaw")), number(data.get("pitch")))
    except (TypeError, ValueError):
        raise EditorError("yaw and pitch must be numbers of degrees") from None


def create_app(editor: Editor, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The Starlette app of ``editor`` (see the module docstring for what each route may touch)."""

    def session_route(handler: Callable[..., Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                session = editor.session(request.path_params["token"])
            except KeyError:
                return _error("this page's session has ended; reload the page", 404)
            try:
                return await handler(request, session)
            except _TooLarge:
                return _error(f"the file is larger than {MAX_UPLOAD_BYTES // 2 ** 20} MB; choose a smaller one", 413)
            except EditorError as e:
                return _error(str(e))
            except StyleNerfEditError as e:
                return _error(str(e))
        return endpoint

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=HEADERS)

    async def new_session(request: Request) -> Response:
        try:
            session = editor.open_session()
        except EditorError as e:
            return _error(str(e), 503)
        G = editor.model.G
        return _ok({"token": session.token, "network": editor.model.network, "model": editor.model.info.name,
                    "resolution": G.img_resolution, "sliders": [asdict(s) for s in editor.model.sliders()],
                    "samples": [p.name for p in demo_photos()], "latents": editor.latent_listing(),
                    "default_steps": InversionConfig.steps, "max_upload_mb": MAX_UPLOAD_BYTES // 2 ** 20,
                    # the sliders reach 2.5 standard deviations of the training prior's yaw and pitch
                    "yaw_max": round(math.degrees(2.5 * G.camera_prior.std_u)),
                    "pitch_max": round(math.degrees(2.5 * G.camera_prior.std_v))})

    async def close(request: Request, session: Session) -> Response:
        editor.close_session(session.token)
        return _ok({"closed": True})

    async def ping(request: Request, session: Session) -> Response:
        return _ok({"alive": True})

    async def upload_photo(request: Request, session: Session) -> Response:
        if session.job is not None and session.job.state == "running":
            raise EditorError("an inversion is running; cancel it first")
        data = await _read_body(request)
        name = Path(unquote(request.headers.get("x-filename", "photo"))).name[:200] or "photo"
        aligned = request.query_params.get("aligned") == "1"
        files = await run_in_threadpool(session.workspace.add_photo, data, name, aligned)
        return _ok({"files": session.publish(files)})

    async def sample(request: Request, session: Session) -> Response:
        samples = demo_photos()
        try:
            path = samples[int(request.path_params["index"])]
        except (ValueError, IndexError):
            raise EditorError(f"no sample photo {request.path_params['index']!r}") from None
        files = await run_in_threadpool(session.workspace.use_photo, path, True)   # shipped photos are aligned crops
        return _ok({"files": session.publish(files)})

    async def invert(request: Request, session: Session) -> Response:
        body = await _json(request)
        try:
            steps = int(body.get("steps", InversionConfig.steps))
        except (TypeError, ValueError):
            raise EditorError("steps must be a whole number") from None
        if not 1 <= steps <= MAX_STEPS:
            raise EditorError(f"steps must be from 1 to {MAX_STEPS}")
        pti = bool(body.get("pti", False))
        with session.lock:
            if session.job is not None and session.job.state == "running":
                raise EditorError("an inversion is already running")
            if session.workspace.photo is None:
                raise EditorError("choose a photo first")
            job = Job(steps, TuningConfig.steps if pti else 0)
            session.job = job
            job.thread = threading.Thread(target=_run_inversion, args=(session, job, steps, pti), daemon=True,
                                          name=f"invert-{session.token[:6]}")
            job.thread.start()
        return _ok(job.status())

    async def job_status(request: Request, session: Session) -> Response:
        if session.job is None:
            return _ok({"state": "idle"})
        return _ok(session.job.status())

    async def job_preview(request: Request, session: Session) -> Response:
        if session.job is None or session.job.preview is None:
            return _error("no reconstruction yet", 404)
        return Response(session.job.preview, media_type="image/png", headers=HEADERS)

    async def cancel(request: Request, session: Session) -> Response:
        if session.job is not None and session.job.state == "running":
            session.job.cancel.set()
        return _ok({"cancelling": True})

    def latent_info(session: Session) -> dict[str, Any]:
        latent = session.workspace.latent
        assert latent is not None
        return {"latent": {"yaw": latent.camera.yaw, "pitch": latent.camera.pitch, "source": Path(latent.source).name,
                           "metrics": latent.metrics, "tuned": session.workspace.G is not editor.model.G}}

    async def state(request: Request, session: Session) -> Response:
        return _ok(latent_info(session) if session.workspace.latent is not None else {"latent": None})

    async def sample_image(request: Request) -> Response:
        samples = demo_photos()
        index = request.path_params["index"]
        if not index.isdigit() or int(index) >= len(samples):
            return _error("no such sample photo", 404)
        return FileResponse(samples[int(index)], headers=HEADERS)

    async def upload_latent(request: Request, session: Session) -> Response:
        data = await _read_body(request)
        await run_in_threadpool(session.workspace.add_latent, data)
        return _ok(latent_info(session))

    async def upload_tuning(request: Request, session: Session) -> Response:
        data = await _read_body(request)
        await run_in_threadpool(session.workspace.add_tuning, data)
        return _ok(latent_info(session))

    async def open_listed(request: Request, session: Session) -> Response:
        body = await _json(request)
        name = body.get("name")
        if name not in editor.latent_listing():
            raise EditorError("no such latent in the served folder; reload the page for the current list")
        await run_in_threadpool(session.workspace.open_latent, editor.latents / name, name)
        return _ok(latent_info(session))

    async def render(request: Request, session: Session) -> Response:
        body = await _json(request)
        view = _view(body)
        t0 = time.perf_counter()
        rendered = await run_in_threadpool(session.workspace.render, view, bool(body.get("preview", False)))
        data = await run_in_threadpool(_png, rendered.image)
        headers = {**HEADERS, "X-Warnings": json.dumps(rendered.warnings),
                   "X-Render-Ms": f"{(time.perf_counter() - t0) * 1000:.0f}"}
        return Response(data, media_type="image/png", headers=headers)

    async def export(request: Request, session: Session) -> Response:
        view = _view(await _json(request))
        files = await run_in_threadpool(session.workspace.export, view)
        prefix = f"{files['latent.npz'].parent.name}/"
        return _ok({"files": session.publish(files, prefix)})

    async def file(request: Request, session: Session) -> Response:
        path = session.files.get(request.path_params["key"])
        if path is None or not path.is_file():
            return _error("no such file in this session", 404)
        name = path.name if path.parent == session.workspace.folder else f"{path.parent.name}_{path.name}"
        download = request.query_params.get("download") == "1"
        return FileResponse(path, headers=HEADERS, filename=name if download else None)

    def api(path: str, handler: Callable[..., Any], methods: Sequence[str] = ("POST",)) -> Route:
        return Route(f"/api/s/{{token}}/{path}", session_route(handler), methods=list(methods))

    routes = [
        Route("/", index),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/samples/{index}", sample_image),
        Route("/api/session", new_session, methods=["POST"]),
        api("close", close), api("ping", ping),
        api("photo", upload_photo), api("sample/{index}", sample),
        api("invert", invert), api("job", job_status, ("GET",)), api("job/preview.png", job_preview, ("GET",)),
        api("cancel", cancel),
        api("state", state, ("GET",)), api("latent", upload_latent), api("tuning", upload_tuning), api("open", open_listed),
        api("render", render), api("export", export),
        api("file/{key:path}", file, ("GET",)),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] if allowed_hosts else []
    return Starlette(routes=routes, middleware=middleware)


def _png(image: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _run_inversion(session: Session, job: Job, steps: int, pti: bool) -> None:
    def monitor(report: StepReport) -> None:
        if job.cancel.is_set():
            raise Cancelled()
        job.stage, job.step, job.lpips = report.stage, report.step, report.lpips or job.lpips
        if report.image is not None:
            job.preview = _png(to_uint8(report.image[None].cpu())[0])
            job.preview_version += 1

    state, message = "done", ""
    try:
        outcome = session.workspace.invert(steps, pti, monitor=monitor)
        files = {"reconstruction.png": session.workspace.latent_path.parent / "reconstruction.png",
                 "latent.npz": session.workspace.latent_path}
        job.result = {"metrics": outcome["metrics"], "warnings": outcome["warnings"],
                      "files": session.publish(files, "inversion/")}
    except Cancelled:
        state, message = "cancelled", "inversion cancelled"
    except StyleNerfEditError as e:
        state, message = "failed", str(e)
    except Exception as e:     # a bug: the page says so, the server keeps serving
        state, message = "failed", f"internal error ({type(e).__name__}: {e}); please report it"
        print(f"error in an inversion: {type(e).__name__}: {e}", file=sys.stderr)
    job.finished.set()
    job.state, job.message = state, message


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(network: str | Path = "bundled:heads", host: str = "127.0.0.1", port: int = 7860,
          latents: str | Path | None = None, directions: Sequence[str | Path] = (), device: str | None = None,
          announce: Callable[[str], None] = print) -> None:
    """Load the model, listen on ``host:port`` (0: any free port) and serve the editor until interrupted;
    ``announce`` receives the page's URL (and a warning when ``host`` is not a loopback address)."""
    import uvicorn

    if latents is not None and not Path(latents).is_dir():
        raise StyleNerfEditError(f"{latents}: no such folder; --latents takes a folder of latent.npz files")
    model = EditorModel(network, directions, device)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)      # connections wait from the moment the URL is printed
    except OSError as e:
        sock.close()
        raise StyleNerfEditError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    root = Path(tempfile.mkdtemp(prefix="stylenerf-edit-web-"))
    editor = Editor(model, root, Path(latents) if latents is not None else None)
    loopback = is_loopback(host)
    app = create_app(editor, LOOPBACK_HOSTS if loopback else None)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    if not loopback:
        announce(f"warning: listening on {host}, so other machines can reach the editor, its uploads and "
                 "its CPU; use the default --host 127.0.0.1 unless you mean it")
    announce(f"stylenerf-edit editor for {model.info.name}: http://{shown}:{bound}/  (Ctrl+C to stop)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        editor.shutdown()
        sock.close()
