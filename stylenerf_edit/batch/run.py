"""Batch processing of a folder of photos: resumable, fault tolerant, on local processes or a Ray cluster.

``run_batch`` (``stylenerf-edit batch``) inverts every photo under an input folder (see ``discover``) and
writes, per photo, ``OUT/<relative path without suffix>/`` with the files of ``stylenerf-edit invert``
(``aligned.png``, ``reconstruction.png``, ``latent.npz``, ``metrics.json``), one ``edits/<name><strength>/``
folder per ``--edit`` (``latent.npz``, ``edited.png``, ``before_after.png`` of ``stylenerf-edit edit``; each
edit applied on its own), and ``batch.json`` (photo, folder, file hashes, settings hash, run, worker).
``OUT/manifest.sqlite`` records every photo and its folder (see ``manifest``); folder names are made safe and
unique (see ``discover``).

Resume (the default): a photo is skipped when it is done with the same settings hash and its files are all
there; it is redone when its files are missing or its last attempt was interrupted; a failed photo is skipped
(its reason shown in the summary) unless ``retry_failed`` or the settings changed. Photos done with *other*
settings stop the run with an error, since redoing them replaces their outputs: pass ``force`` to redo them,
or use another output folder. The settings hash covers the generator's weights, its pose calibration, every
inversion option, and the edits (direction contents, strengths, views); not the batch size, workers, engine
or device, which do not change what a photo's outputs mean.

Crash safety: the driver alone writes the output tree and the manifest. A photo's folder appears by one
rename once complete (see ``commit``), then the manifest marks it done. A run killed between the two leaves
the photo "running" with a complete folder whose ``batch.json`` carries the current settings hash: the next
run records it as done without redoing it, so no photo is lost or processed twice.

Nothing the batch did not write is replaced or deleted: a new photo whose folder name is in use by anything
else gets another name, and a photo whose folder was changed or taken since (see ``commit``) fails with the
reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import numpy as np

from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import sha256_file
from stylenerf_edit.generator.checkpoint import GeneratorInfo, describe
from stylenerf_edit.invert.pipeline import InvertOptions, calibration_path
from stylenerf_edit.names import is_safe_name
from stylenerf_edit.progress import Progress, format_duration

from .commit import (RECORD_NAME, STAGING_NAME, CommitRefused, commit_folder, list_outputs, read_record,
                     remove_leftovers, staging_folder)
from .discover import PHOTO_SUFFIXES, PLAIN_FOLDER, Existing, assign_output_dirs, discover_photos
from .engines import ENGINES, require_ray, run_local, run_ray
from .manifest import Manifest, PhotoRecord
from .worker import BatchEdit, PhotoTask, WorkerJob, failure_reason

MANIFEST_NAME = "manifest.sqlite"
LOCK_NAME = ".batch.lock"
CONFIG_FORMAT = 1


class BatchError(StyleNerfEditError):
    """A batch cannot start: bad folders or options, settings that differ from the finished photos'."""


@dataclass
class BatchOptions:
    """What ``stylenerf-edit batch`` exposes, with the same defaults (and every inversion option)."""

    invert: InvertOptions = field(default_factory=InvertOptions)   # steps, aligned, batch_size, ...
    edits: tuple[str, ...] = ()          # "smile=2" (a direction name of the model, or a .npz path, = strength)
    views: str = "-30:30:5"              # yaws of each edit's before/after sheet (see editing.views.parse_views)
    engine: str = "local"                # see engines.ENGINES
    workers: int | None = None           # local: processes (None: 1, in this process); ray: tasks in flight
    address: str | None = None           # Ray cluster address (engine "ray" only)
    device: str | None = None            # None/"auto", cpu, cuda:1, or a list cuda:0,cuda:1 for local workers
    limit: int | None = None             # process at most this many photos this run
    dry_run: bool = False                # plan only: nothing is written
    retry_failed: bool = False           # retry photos that failed with the same settings
    force: bool = False                  # redo photos done with other settings
    progress: bool = True                # progress on stderr (a bar, or a line every 30 s off a terminal), a line per photo

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise BatchError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.address is not None and self.engine != "ray":
            raise BatchError("--address is the Ray cluster's address: it needs --engine ray")
        if self.workers is not None and self.workers < 1:
            raise BatchError(f"--workers must be at least 1, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            raise BatchError(f"--limit must be at least 1, got {self.limit}")
        if self.invert.batch_size < 1:
            raise BatchError(f"--batch-size must be at least 1, got {self.invert.batch_size}")


@dataclass
class PlannedPhoto:
    """A photo this run processes, and why."""

    path: str
    out_dir: str
    why: str        # new, interrupted, outputs missing, retry, settings changed


@dataclass
class BatchReport:
    """What a run did (or, for a dry run, would do); photo paths are relative to the input folder."""

    input_dir: Path
    out_dir: Path
    config_hash: str
    dry_run: bool = False
    planned: list[PlannedPhoto] = field(default_factory=list)   # processed this run (after --limit)
    deferred: list[str] = field(default_factory=list)           # left for a later run by --limit
    skipped: list[str] = field(default_factory=list)            # done before with these settings
    recovered: list[str] = field(default_factory=list)          # finished by an interrupted run, now recorded
    failed_before: dict[str, str] = field(default_factory=dict)  # failed before, not retried: path -> reason
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)        # path -> one-line reason
    seconds: float = 0.0                                        # wall time of the processing

    @property
    def ok(self) -> bool:
        """True when no photo of the folder stands failed."""
        return not self.failed and not self.failed_before

    @property
    def photos_per_hour(self) -> float:
        n = len(self.done) + len(self.failed)
        return 3600.0 * n / self.seconds if self.seconds > 0 else 0.0


def _array_digest(*arrays: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a, dtype=np.float32)
            digest.update(f"{a.shape}".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()


def resolve_edits(specs: Sequence[str], network: str, info: GeneratorInfo) -> tuple[BatchEdit, ...]:
    """``"smile=2"`` specs -> edits with their directions loaded and checked against the generator, and an
    output folder each (``smile+2``, see ``editing.outputs.edit_folder_names``)."""
    from stylenerf_edit.directions.library import resolve_direction
    from stylenerf_edit.editing.edit import parse_edit
    from stylenerf_edit.editing.outputs import edit_folder_names

    parsed: dict[tuple[str, float], str] = {}
    for spec in specs:
        edit = parse_edit(spec)
        if edit in parsed:
            raise BatchError(f"--edit {spec}: the same direction and strength is given twice")
        parsed[edit] = spec
    return tuple(BatchEdit(folder, resolve_direction(name, network, info), strength)
                 for (name, strength), folder in zip(parsed, edit_folder_names(list(parsed))))


def batch_config(info: GeneratorInfo, network: str, options: BatchOptions, edits: Sequence[BatchEdit],
                 yaws: Sequence[float]) -> dict[str, Any]:
    """Everything that changes a photo's outputs (see the module docstring); its hash is the settings hash."""
    inv = options.invert
    calibration = calibration_path(network)
    return {
        "format": CONFIG_FORMAT,
        "weights_sha256": info.weights_sha256,
        "pose_calibration_sha256": sha256_file(calibration) if calibration.is_file() else None,
        "inversion": _recorded(asdict(inv.config), {"coarse_fraction": ("coarse_fraction", "coarse_resolution")}),
        "invert": {"aligned": inv.aligned, "face_index": inv.face_index, "landmarks": inv.landmarks,
                   "pose": inv.pose, "camera": None if inv.camera is None else list(inv.camera),
                   "save_video": inv.save_video, "video_frames": inv.video_frames if inv.save_video else None,
                   "paste_back": inv.paste_back, "lpips_net": inv.lpips_net,
                   **({"paste_region": inv.paste_region} if inv.paste_back else {}),   # earlier hashes stay valid
                   "pti": None if inv.pti is None else _recorded(asdict(inv.pti), {
                       "edit_weight": ("edit_weight", "edit_directions", "edit_strength")})},
        "edits": [{"folder": e.folder, "strength": e.strength, "space": e.direction.space,
                   "rows": e.direction.rows, "offset": e.direction.offset, "spread": e.direction.spread,
                   "vector_sha256": _array_digest(e.direction.vector, e.direction.center)} for e in edits],
        "views": list(yaws) if edits else None,
    }


def _recorded(settings: dict[str, Any], later: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """``settings`` less the groups of settings added in later versions whose switch (the key) is off (0): the hashes
    of photos finished before those settings existed stay valid."""
    dropped = {name for switch, names in later.items() if not settings[switch] for name in names}
    return {k: v for k, v in settings.items() if k not in dropped}


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _is_utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:     # os.fsdecode turned bytes that are not UTF-8 into lone surrogates
        return False
    return True


def _shown(name: str) -> str:
    return name.encode(errors="surrogateescape").decode(errors="backslashreplace")


def _check_assignments(assigned: dict[str, str], manifest_path: Path) -> None:
    """Refuse a recorded output folder that is not a safe relative path (a manifest edited by hand or by an
    older version), and a folder inside another photo's: redoing that photo would replace both."""
    for photo, folder in assigned.items():
        if not all(is_safe_name(part) for part in folder.split("/")):
            raise BatchError(f"{manifest_path}: records the output folder {folder!r} for {photo}, which is not a "
                             "safe folder name; move the manifest away to start a new one")
    folders = {folder: photo for photo, folder in assigned.items()}
    for photo, folder in assigned.items():
        outer = next((str(p) for p in PurePosixPath(folder).parents if str(p) in folders), None)
        if outer is not None:
            raise BatchError(f"{photo}: its output folder {folder}/ would lie inside {outer}/, the output folder of "
                             f"{folders[outer]}; rename the input folder {outer}/ or choose another --out")


def _complete(out_root: Path, record: PhotoRecord) -> bool:
    return bool(record.outputs) and all((out_root / p).is_file() for p in record.outputs)


def _plan(report: BatchReport, photos: Sequence[str], records: dict[str, PhotoRecord],
          assigned: dict[str, str], options: BatchOptions) -> None:
    """Sort every photo into planned / skipped / recovered / failed_before / deferred (see the module docstring)."""
    out_root, chash = report.out_dir, report.config_hash
    todo, changed = [], []
    for path in photos:
        rec, out = records.get(path), assigned[path]
        if rec is None or rec.status == "pending":
            todo.append(PlannedPhoto(path, out, "new"))
        elif rec.status == "running":
            committed = read_record(out_root / out)
            if committed and committed.get("photo") == path and committed.get("config_hash") == chash:
                report.recovered.append(path)
            else:
                todo.append(PlannedPhoto(path, out, "interrupted"))
        elif rec.status == "done":
            if rec.config_hash != chash:
                changed.append(path)
                todo.append(PlannedPhoto(path, out, "settings changed"))
            elif not _complete(out_root, rec):
                todo.append(PlannedPhoto(path, out, "outputs missing"))
            else:
                report.skipped.append(path)
        elif rec.config_hash != chash:
            todo.append(PlannedPhoto(path, out, "settings changed"))
        elif options.retry_failed:
            todo.append(PlannedPhoto(path, out, "retry"))
        else:
            report.failed_before[path] = rec.reason or "failed"
    if changed and not options.force:
        raise BatchError(f"{out_root}: {len(changed)} photo(s) ({changed[0]}, ...) were done with other settings "
                         "than these; pass --force to redo them with these settings, or choose another --out")
    limit = len(todo) if options.limit is None else options.limit
    report.planned, report.deferred = todo[:limit], [p.path for p in todo[limit:]]


def _existing(out_root: Path) -> Existing:
    """What lies in an output folder already, for ``assign_output_dirs``: entry name -> the photo its
    ``batch.json`` names, ``PLAIN_FOLDER`` for a folder without one, None for anything else."""
    def look(folder: str) -> dict[str, str | None]:
        where = out_root / folder
        if where.is_symlink() or not where.is_dir():
            return {}
        found: dict[str, str | None] = {}
        for entry in where.iterdir():
            if entry.is_symlink() or not entry.is_dir():
                found[entry.name] = None
            elif not os.path.lexists(entry / RECORD_NAME):
                found[entry.name] = PLAIN_FOLDER
            else:
                photo = (read_record(entry) or {}).get("photo")
                found[entry.name] = photo if isinstance(photo, str) else None
        return found

    return look


@contextlib.contextmanager
def _exclusive(out_root: Path) -> Iterator[None]:
    """Hold ``OUT/.batch.lock`` for the run (two drivers on one output folder would overwrite each other) and
    remove it at the end. The lock is the kernel's (flock): a killed run's is released with its process, so a lock
    file left behind never blocks the next run. The file names the holder's pid for the message."""
    import fcntl

    path = out_root / LOCK_NAME
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise BatchError(f"{out_root}: another batch run{f' (pid {holder})' if holder.isdigit() else ''} is "
                             "writing to this folder; wait for it to finish or choose another --out") from None
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()           # a finishing run removed the file we locked: lock the one that is there now
    try:
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()    # while still held, so a run waiting on this file retries on a fresh one
        f.close()


def _chunks(items: Sequence[PhotoTask], size: int) -> list[list[PhotoTask]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def run_batch(input_dir: str | Path, out_dir: str | Path, network: str = "bundled:heads",
              options: BatchOptions | None = None) -> BatchReport:
    """Process every photo under ``input_dir`` into ``out_dir`` (see the module docstring).

    Raises:
        BatchError: missing input folder, no photos, settings differing from finished photos without ``force``,
            another run on ``out_dir``; ``StyleNerfEditError`` subclasses for a bad network, edit or device.
    """
    from stylenerf_edit.editing.views import parse_views

    options = options or BatchOptions()
    if options.engine == "ray":
        require_ray()     # before anything is planned or written
    input_dir, out_root = Path(input_dir).resolve(), Path(out_dir).resolve()
    if not input_dir.is_dir():
        raise BatchError(f"{input_dir}: no such folder; pass the folder that holds the photos")
    photos = discover_photos(input_dir, exclude=[out_root])
    if not photos:
        raise BatchError(f"{input_dir}: no photos found (looked for {', '.join(PHOTO_SUFFIXES)} files, hidden "
                         "ones skipped)")
    info = describe(network)
    yaws = parse_views(options.views)
    edits = resolve_edits(options.edits, network, info)
    config = batch_config(info, network, options, edits, yaws)
    report = BatchReport(input_dir, out_root, config_hash(config), dry_run=options.dry_run)
    # The manifest keeps names as text: a name that is not UTF-8 cannot be recorded, so it is reported instead.
    unnamed = [p for p in photos if not _is_utf8(p)]
    report.failed.update({_shown(p): "its file name is not valid UTF-8, which the manifest cannot record; "
                                     "rename it" for p in unnamed})
    photos = [p for p in photos if p not in unnamed]
    manifest_path = out_root / MANIFEST_NAME
    reserved = [MANIFEST_NAME, f"{MANIFEST_NAME}-journal", LOCK_NAME, STAGING_NAME]

    if options.dry_run:
        records = {}
        if manifest_path.is_file():
            with Manifest(manifest_path, readonly=True) as manifest:
                records = manifest.records()
        known = {p: r.out_dir for p, r in records.items()}
        assigned = assign_output_dirs(photos, known, reserved, _existing(out_root))
        _check_assignments(assigned, manifest_path)
        _plan(report, photos, records, assigned, options)
        return report

    out_root.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_root), Manifest(manifest_path) as manifest:
        records = manifest.records()
        assigned = assign_output_dirs(photos, {p: r.out_dir for p, r in records.items()}, reserved,
                                      _existing(out_root))
        _check_assignments(assigned, manifest_path)
        _plan(report, photos, records, assigned, options)
        manifest.add([(p, assigned[p]) for p in photos if p not in records])
        for path in report.recovered:
            committed = read_record(out_root / assigned[path]) or {}
            manifest.mark_done(path, list_outputs(out_root, assigned[path]), report.config_hash,
                               committed.get("seconds"), committed.get("worker"), committed.get("committed"))
        remove_leftovers(out_root)
        if report.planned:
            staging_folder(out_root)
            run = manifest.begin_run(options.engine, input_dir, report.config_hash, config)
            _execute(report, manifest, run, WorkerJob(network, options.invert, edits, tuple(yaws)), options)
            manifest.end_run(run)
        with contextlib.suppress(OSError):     # only when empty: it is kept while it holds anything
            (out_root / STAGING_NAME).rmdir()
    return report


def _photo_line(path: str, out_dir: str, files: dict[str, bytes], seconds: float) -> str:
    """``a.png: done -> a/  PSNR 25.31 dB  LPIPS 0.081  48 s``, the fit read from the photo's metrics.json."""
    try:
        m = json.loads(files.get("metrics.json", b"{}"))
        fit = f"  PSNR {m['psnr']:.2f} dB  LPIPS {m['lpips']:.3f}"
    except (ValueError, KeyError, TypeError):
        fit = ""
    return f"{path}: done -> {out_dir}/{fit}  {format_duration(seconds)}"


def _check_inputs(report: BatchReport, manifest: Manifest, run: int, tasks: dict[str, PhotoTask],
                  bar: Progress) -> None:
    """Read every photo before any optimisation: an unreadable one fails now, in milliseconds, not after the
    photos queued before it."""
    from stylenerf_edit.invert.photo import load_photo

    for i, (path, task) in enumerate(list(tasks.items())):
        bar.set_status(f"checking {path} ({i + 1}/{len(tasks)})")
        t0 = time.perf_counter()
        try:
            load_photo(task.source)
        except StyleNerfEditError as e:
            reason = failure_reason(e, task.source)
            manifest.mark_running([path], run, report.config_hash)      # an attempt, as in a worker
            manifest.mark_failed(path, reason, report.config_hash, time.perf_counter() - t0, None)
            report.failed[path] = reason
            del tasks[path]
            bar.write(f"{path}: failed: {reason}")
            bar.update()


def _execute(report: BatchReport, manifest: Manifest, run: int, job: WorkerJob, options: BatchOptions) -> None:
    """Check the inputs, hand the readable ones out in mini-batches and commit every result as it arrives."""
    tasks = {p.path: PhotoTask(p.path, str(report.input_dir / p.path), p.out_dir) for p in report.planned}
    with Progress(len(tasks), "batch", "photo", enabled=options.progress) as bar:
        _check_inputs(report, manifest, run, tasks, bar)
        batches = _chunks(list(tasks.values()), options.invert.batch_size)
        running: list[PhotoTask] = []

        def status(text: str) -> str:
            failed = f"{len(report.failed)} failed, " if report.failed else ""
            return f"{failed}{text}"

        def dispatch(batch: Sequence[PhotoTask]) -> None:
            manifest.mark_running([t.path for t in batch], run, report.config_hash)
            running[:] = batch
            if options.engine == "ray" or (options.workers or 1) > 1:
                bar.set_status(status(f"{len(batch)} more photo(s) handed out"))
            else:
                bar.set_status(status(", ".join(Path(t.path).name for t in batch)))

        finished = bar.n

        def on_step(text: str, fraction: float) -> None:
            bar.set(finished + len(running) * fraction)
            bar.set_status(status(text))

        if options.engine == "ray":
            results = run_ray(batches, job, dispatch, options.workers, options.address, options.device)
        else:
            results = run_local(batches, job, dispatch, options.workers or 1, options.device, on_step=on_step)
        t0 = time.perf_counter()
        with contextlib.closing(results):
            for batch_results in results:
                for r in batch_results:
                    error = r.error
                    if error is None:
                        committed = time.time()
                        record = {"photo": r.path, "config_hash": report.config_hash, "run": run,
                                  "worker": r.worker, "seconds": round(r.seconds, 3), "committed": committed}
                        try:
                            outputs = commit_folder(report.out_dir, tasks[r.path].out_dir, r.files, record)
                        except CommitRefused as e:
                            error = str(e)
                        else:
                            manifest.mark_done(r.path, outputs, report.config_hash, r.seconds, r.worker, committed)
                            report.done.append(r.path)
                            bar.write(_photo_line(r.path, tasks[r.path].out_dir, r.files, r.seconds),
                                      stream=sys.stdout)
                    if error is not None:
                        manifest.mark_failed(r.path, error, report.config_hash, r.seconds or None, r.worker or None)
                        report.failed[r.path] = error
                        bar.write(f"{r.path}: failed: {error}")
                    finished += 1
                    bar.set(finished)
                report.seconds = time.perf_counter() - t0
                bar.set_status(status(f"{report.photos_per_hour:.0f} photos/h"))


def _rows(items: Sequence[tuple[str, str]]) -> list[str]:
    width = max((len(a) for a, _ in items), default=0)
    return [f"  {a:<{width}}  {b}" for a, b in items]


def format_plan(report: BatchReport) -> str:
    """What a dry run would do, one photo a line."""
    lines = [f"would process {len(report.planned)} photo(s) into {report.out_dir}"
             + (f" ({len(report.deferred)} more left for a later run by --limit)" if report.deferred else "")
             + f"; {len(report.skipped)} done already, {len(report.failed_before)} failed before (not retried)"
             + (f", {len(report.recovered)} finished by an interrupted run" if report.recovered else "")]
    lines += _rows([(p.why, f"{p.path} -> {p.out_dir}/") for p in report.planned])
    return "\n".join(lines)


def format_summary(report: BatchReport) -> str:
    """The end-of-run table: counts per outcome, throughput, then every failed photo with its reason."""
    counts = [("done", len(report.done), f"this run, {report.photos_per_hour:.0f} photos/hour"
               if report.done or report.failed else "this run"),
              ("recovered", len(report.recovered), "finished by an interrupted run"),
              ("skipped", len(report.skipped), "done before with these settings"),
              ("failed", len(report.failed), "this run"),
              ("failed before", len(report.failed_before), "not retried: pass --retry-failed"),
              ("left", len(report.deferred), "for a later run (--limit)")]
    width = max(len(name) for name, _, _ in counts)
    lines = [f"{name:<{width}}  {n:>6}  {note}" for name, n, note in counts if n or name in ("done", "failed")]
    failures = {**report.failed_before, **report.failed}
    if failures:
        lines.append("failed photos:")
        lines += _rows(sorted(failures.items()))
    lines.append(f"manifest: {report.out_dir / MANIFEST_NAME}")
    return "\n".join(lines)
