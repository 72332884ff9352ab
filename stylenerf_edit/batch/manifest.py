"""The batch manifest: one SQLite row per photo, written by the driver alone.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`; times are Unix seconds, paths POSIX and relative):

    photos  path TEXT PRIMARY KEY      the photo, relative to the input folder
            out_dir TEXT UNIQUE        its output folder, relative to the output folder
            status TEXT                pending | running | done | failed
            reason TEXT                one line: why it failed (NULL otherwise)
            attempts INTEGER           how many times it was handed to a worker
            started REAL               when the last attempt was handed out
            finished REAL              when the last attempt ended (outputs in place, or failure recorded)
            seconds REAL               the last attempt's own time: reading, its share of the joint optimisation, its files
            outputs TEXT               JSON list of the files written, relative to the output folder
            config_hash TEXT           the settings the last attempt ran with (see ``run.config_hash``)
            worker TEXT                host:pid:device of the last attempt
            run INTEGER                runs.id of the last attempt
    runs    id, started, finished, engine, input_dir, config_hash, config (JSON of everything hashed)

Every change is its own transaction, so a killed run leaves the manifest as of its last finished photo.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from stylenerf_edit.errors import StyleNerfEditError, one_line

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS photos (
    path TEXT PRIMARY KEY,
    out_dir TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN {STATUSES}),
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    seconds REAL,
    outputs TEXT NOT NULL DEFAULT '[]',
    config_hash TEXT,
    worker TEXT,
    run INTEGER
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    engine TEXT NOT NULL,
    input_dir TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""


class ManifestError(StyleNerfEditError):
    """The manifest cannot be read or written."""


@dataclass
class PhotoRecord:
    """One row of ``photos``."""

    path: str
    out_dir: str
    status: str
    reason: str | None = None
    attempts: int = 0
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    outputs: list[str] = field(default_factory=list)
    config_hash: str | None = None
    worker: str | None = None
    run: int | None = None


class Manifest:
    """Read and update a manifest file; ``readonly`` opens an existing one without changing a byte."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        hint = "move it away to start a new manifest (finished outputs are then redone)"
        try:
            if readonly:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            else:
                self._db = sqlite3.connect(self.path, timeout=30)
                self._db.executescript(_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            self._db.execute("SELECT path FROM photos LIMIT 1")
        except sqlite3.Error as e:
            raise ManifestError(f"{self.path}: not a readable batch manifest ({one_line(e)}); {hint}") from None
        if version > SCHEMA_VERSION:
            raise ManifestError(f"{self.path}: manifest version {version} is newer than this tool understands "
                                f"({SCHEMA_VERSION}); upgrade stylenerf-edit")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def records(self) -> dict[str, PhotoRecord]:
        rows = self._db.execute("SELECT path, out_dir, status, reason, attempts, started, finished, seconds, "
                                "outputs, config_hash, worker, run FROM photos")
        return {r[0]: PhotoRecord(*r[:8], json.loads(r[8]), *r[9:]) for r in rows}

    def begin_run(self, engine: str, input_dir: Path, config_hash: str, config: dict[str, Any]) -> int:
        with self._db:
            cursor = self._db.execute("INSERT INTO runs (started, engine, input_dir, config_hash, config) "
                                      "VALUES (?, ?, ?, ?, ?)", (time.time(), engine, str(input_dir),
                                                                 config_hash, json.dumps(config, sort_keys=True)))
        return int(cursor.lastrowid)

    def end_run(self, run: int) -> None:
        with self._db:
            self._db.execute("UPDATE runs SET finished = ? WHERE id = ?", (time.time(), run))

    def add(self, photos: Iterable[tuple[str, str]]) -> None:
        """Record new photos (path, out_dir) as pending."""
        with self._db:
            self._db.executemany("INSERT INTO photos (path, out_dir, status) VALUES (?, ?, 'pending')", photos)

    def mark_running(self, paths: Sequence[str], run: int, config_hash: str) -> None:
        now = time.time()
        with self._db:
            self._db.executemany("UPDATE photos SET status = 'running', reason = NULL, attempts = attempts + 1, "
                                 "started = ?, finished = NULL, seconds = NULL, config_hash = ?, run = ? "
                                 "WHERE path = ?", [(now, config_hash, run, p) for p in paths])

    def mark_done(self, path: str, outputs: Sequence[str], config_hash: str, seconds: float | None,
                  worker: str | None, finished: float | None = None) -> None:
        with self._db:
            self._db.execute("UPDATE photos SET status = 'done', reason = NULL, finished = ?, seconds = ?, "
                             "outputs = ?, config_hash = ?, worker = ? WHERE path = ?",
                             (time.time() if finished is None else finished, seconds, json.dumps(list(outputs)),
                              config_hash, worker, path))

    def mark_failed(self, path: str, reason: str, config_hash: str, seconds: float | None,
                    worker: str | None) -> None:
        with self._db:
            self._db.execute("UPDATE photos SET status = 'failed', reason = ?, finished = ?, seconds = ?, "
                             "outputs = '[]', config_hash = ?, worker = ? WHERE path = ?",
                             (" ".join(reason.split()), time.time(), seconds, config_hash, worker, path))
