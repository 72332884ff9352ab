"""Putting a photo's output folder in place so that no interruption leaves a half-written one that looks done.

The files go into a hidden sibling ``.<name>.partial-<token>/``, each one flushed to disk, with ``batch.json``
(photo, settings hash, run, worker) written last; the folder is then renamed to ``<name>/`` in one step. An
older folder of that name is first renamed aside to ``.<name>.old-<token>/`` and deleted afterwards. The
rename is the commit point: a visible ``<name>/`` is always complete, and whatever a killed run leaves behind is
hidden and removed by :func:`remove_leftovers` on the next run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

RECORD_NAME = "batch.json"
_LEFTOVER = re.compile(r"^\..+\.(partial|old)-[0-9a-f]{12}$")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def commit_folder(out_root: Path, rel_dir: str, files: Mapping[str, bytes], record: Mapping[str, Any]) -> list[str]:
    """Write ``files`` (relative POSIX name -> bytes) and ``batch.json`` as ``out_root/rel_dir`` (see the module
    docstring); returns the paths written, relative to ``out_root``."""
    final = out_root / rel_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = final.with_name(f".{final.name}.partial-{token}")
    tmp.mkdir()
    folders = {tmp}
    for name, data in {**files, RECORD_NAME: json.dumps(dict(record), indent=2).encode() + b"\n"}.items():
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        folders.add(target.parent)
        _write(target, data)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):   # entries before their parents
        _fsync(folder)
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{token}")
        final.rename(old)
    tmp.rename(final)
    _fsync(final.parent)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    return sorted(f"{rel_dir}/{name}" for name in [*files, RECORD_NAME])


def read_record(folder: Path) -> dict[str, Any] | None:
    """The ``batch.json`` of a committed folder, or None when there is no readable one."""
    try:
        record = json.loads((folder / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def list_outputs(out_root: Path, rel_dir: str) -> list[str]:
    """Every file of a committed folder, relative to ``out_root``."""
    folder = out_root / rel_dir
    return sorted(p.relative_to(out_root).as_posix() for p in folder.rglob("*") if p.is_file())


def remove_leftovers(folders: Iterable[Path]) -> int:
    """Delete the hidden ``.partial-``/``.old-`` folders an interrupted commit left in ``folders``; returns how
    many."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if _LEFTOVER.match(entry.name):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                removed += 1
    return removed
