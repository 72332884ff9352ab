"""Putting a photo's output folder in place: no interruption leaves a half-written one that looks done, and
nothing the batch did not write is ever replaced or deleted.

The files go into ``OUT/.batch-staging/partial-<token>/``, each one flushed to disk, with ``batch.json`` written
last (the photo, its output folder, the sha256 of every file, the settings hash, run and worker); the folder is
then renamed to ``OUT/<folder>/`` in one step. An existing folder of that name is replaced only when it is this
batch's own earlier commit for the same photo, as it was written: its ``batch.json`` names the photo and it
holds nothing but the files listed there, unchanged. That folder is renamed to ``.batch-staging/old-<token>/``
and deleted once the new one is in place. Anything else in the way (a user's file or folder, a link, a file
added to or changed in an earlier commit) refuses the commit with the reason, and nothing is touched. The rename
is the commit point: a visible folder is always complete, and what a killed run leaves in ``.batch-staging/``
is removed by :func:`remove_leftovers` on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.files import fsync_path, sha256_file
from stylenerf_edit.names import is_safe_name

RECORD_NAME = "batch.json"
STAGING_NAME = ".batch-staging"
_LEFTOVER = re.compile(r"^(partial|old)-[0-9a-f]{12}$")
_RETRY = "move it away, then rerun with --retry-failed"


class CommitRefused(StyleNerfEditError):
    """A photo's output folder cannot be put in place without replacing something the batch did not write."""


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def staging_folder(out_root: Path) -> Path:
    """``OUT/.batch-staging/``, made when missing.

    Raises:
        CommitRefused: a link or a file has that name.
    """
    staging = out_root / STAGING_NAME
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise CommitRefused(f"{staging}: the batch keeps unfinished outputs here, but a link or a file has this "
                            "name; move it away")
    staging.mkdir(exist_ok=True)
    return staging


def read_record(folder: Path) -> dict[str, Any] | None:
    """The ``batch.json`` of a committed folder, or None when there is no readable one."""
    try:
        record = json.loads((folder / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def not_ours(folder: Path, photo: str) -> str | None:
    """Why ``folder`` is not this batch's earlier commit for ``photo`` as it was written; None when it is."""
    if folder.is_symlink():
        return "is a link"
    if not folder.is_dir():
        return "is a file"
    record = read_record(folder)
    if record is None:
        return f"has no readable {RECORD_NAME}: the batch did not write it"
    if record.get("photo") != photo:
        return f"holds the outputs of another photo ({record.get('photo')})"
    files = record.get("files")
    if not isinstance(files, dict):
        return f"has a {RECORD_NAME} that lists no files (an older version's)"
    on_the_way = {str(parent) for name in files for parent in PurePosixPath(name).parents}
    for root, dirs, names in os.walk(folder):      # links are listed, never followed
        for name in sorted([*dirs, *names]):
            entry = Path(root) / name
            rel = entry.relative_to(folder).as_posix()
            if entry.is_symlink():
                return f"holds {rel}, a link the batch did not make"
            if name in dirs and rel not in on_the_way:
                return f"holds {rel}/, which the batch did not write"
            if name in names and rel != RECORD_NAME:
                if rel not in files:
                    return f"holds {rel}, which the batch did not write"
                if sha256_file(entry) != files[rel]:
                    return f"holds {rel}, changed since the batch wrote it"
    return None


def _make_parents(out_root: Path, rel_dir: str) -> list[Path]:
    """Make the folders on the way to ``rel_dir``; returns those made. A link or a file on the way is refused:
    writing through it could land outside the output folder."""
    made, here = [], out_root
    for part in PurePosixPath(rel_dir).parts[:-1]:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            raise CommitRefused(f"{here.relative_to(out_root)} lies on the way to its output folder {rel_dir}/ and "
                                f"is a link or a file the batch did not make; {_RETRY}")
        if not here.exists():
            here.mkdir()
            made.append(here)
    return made


def commit_folder(out_root: Path, rel_dir: str, files: Mapping[str, bytes], record: Mapping[str, Any]) -> list[str]:
    """Write ``files`` (relative POSIX name -> bytes) and ``batch.json`` as ``out_root/rel_dir`` (see the module
    docstring); returns the paths written, relative to ``out_root``.

    Raises:
        CommitRefused: something the batch did not write is in the way; nothing was changed.
    """
    names = [rel_dir, *(f"{rel_dir}/{name}" for name in files)]
    unsafe = next((n for n in names if not all(is_safe_name(part) for part in n.split("/"))), None)
    if unsafe is not None or RECORD_NAME in files:
        raise CommitRefused(f"refused to write {unsafe or RECORD_NAME!r}: not a name this batch writes")
    final = out_root / rel_dir
    replace = final.exists() or final.is_symlink()
    if replace:
        why = not_ours(final, record["photo"])
        if why is not None:
            raise CommitRefused(f"its output folder {rel_dir}/ {why}; the batch never replaces what it did not "
                                f"write: {_RETRY}")
    made = _make_parents(out_root, rel_dir)
    staging = staging_folder(out_root)
    token = uuid.uuid4().hex[:12]
    tmp = staging / f"partial-{token}"
    tmp.mkdir()
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    record = {**record, "out_dir": rel_dir, "files": hashes}
    folders = {tmp}
    for name, data in {**files, RECORD_NAME: json.dumps(record, indent=2).encode() + b"\n"}.items():
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        folders.update(p for p in target.parents if tmp in p.parents or p == tmp)
        _write(target, data)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):   # entries before their parents
        fsync_path(folder)
    old = staging / f"old-{token}"
    if replace:
        final.rename(old)
    tmp.rename(final)
    for folder in {final.parent, staging, *(p.parent for p in made)}:
        fsync_path(folder)
    if replace:
        shutil.rmtree(old)
    return sorted(f"{rel_dir}/{name}" for name in [*files, RECORD_NAME])


def list_outputs(out_root: Path, rel_dir: str) -> list[str]:
    """Every file of a committed folder, relative to ``out_root``."""
    folder = out_root / rel_dir
    return sorted(p.relative_to(out_root).as_posix() for p in folder.rglob("*") if p.is_file())


def remove_leftovers(out_root: Path) -> int:
    """Delete the ``partial-``/``old-`` folders interrupted commits left in ``OUT/.batch-staging/`` (nothing else);
    returns how many."""
    staging = out_root / STAGING_NAME
    if staging.is_symlink() or not staging.is_dir():
        return 0
    removed = 0
    for entry in staging.iterdir():
        if _LEFTOVER.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
            removed += 1
    return removed
