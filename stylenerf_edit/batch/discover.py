"""Which files of a folder tree are photos, and which output folder each one gets.

A photo ``IN/a/b/x.jpg`` is written to ``OUT/a/b/x/``. Hidden files and folders (name starting with ``.``)
are skipped, and so is the output folder when it lies inside the input. Every output name, of the photo's
folder and of each folder on the way, goes through ``names.safe_output_names``: safe (no ``.``/``..``,
separators, leading dots or control characters; bounded length) and unique among its siblings, whatever the
case, independently of the order photos are found in. An input folder keeps its name; photos beside it that
want the same one get their suffix added (``x.jpg`` and ``x.png`` beside a folder ``x/``: ``x_jpg/``,
``x_png/``). A name in use in the output folder by anything but this batch's own output (a user's file or
folder, a link) is never taken. Folders already recorded in the manifest are kept, so adding photos never
moves the outputs of earlier ones.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Callable, Collection, Mapping, Sequence

from stylenerf_edit.names import photo_output_names, safe_output_names

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def discover_photos(input_dir: str | Path, exclude: Sequence[str | Path] = ()) -> list[str]:
    """Photos under ``input_dir`` (recursively, case-insensitive suffixes in :data:`PHOTO_SUFFIXES`) as sorted
    POSIX paths relative to it; hidden entries and the folders in ``exclude`` are skipped."""
    root = Path(input_dir)
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        # Pruning in place stops os.walk from descending; symlinked folders are not followed (no cycles).
        dirs[:] = [d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip]
        found += [(here / f).relative_to(root).as_posix() for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in PHOTO_SUFFIXES and (here / f).is_file()]
    return sorted(found)


PLAIN_FOLDER = ""    # what ``existing`` reports for a folder that is no photo's output (one may write inside)

Existing = Callable[[str], Mapping[str, str | None]]


def _parts(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def assign_output_dirs(photos: Sequence[str], known: Mapping[str, str], reserved: Collection[str] = (),
                       existing: Existing | None = None) -> dict[str, str]:
    """Output folder (relative POSIX path) of every photo (see the module docstring).

    ``known``: photo -> folder recorded earlier, kept; ``reserved``: names the top level may not use;
    ``existing(folder)``: what lies in an output folder already, entry name -> the photo its ``batch.json`` names,
    :data:`PLAIN_FOLDER` for any other folder, None for anything else (a file, a link).
    """
    folder_out = {"": ""}                              # input folder -> its output folder
    used: dict[str, set[str]] = defaultdict(set)       # output folder -> names in use in it
    used[""].update(reserved)
    for photo, out in sorted(known.items()):
        inside, outside = _parts(photo), _parts(out)
        for depth in range(len(outside)):
            used["/".join(outside[:depth])].add(outside[depth])
        if len(inside) == len(outside):
            for depth in range(1, len(inside)):
                folder_out.setdefault("/".join(inside[:depth]), "/".join(outside[:depth]))
    subfolders: dict[str, set[str]] = defaultdict(set)
    for path in [*photos, *known]:
        parts = _parts(path)
        for depth in range(1, len(parts)):
            subfolders["/".join(parts[:depth - 1])].add("/".join(parts[:depth]))
    waiting: dict[str, list[str]] = defaultdict(list)  # input folder -> its new photos
    for photo in photos:
        if photo not in known:
            waiting["/".join(_parts(photo)[:-1])].append(photo)
    ours = set(photos)
    assigned = {p: known[p] for p in photos if p in known}
    for folder in sorted({"", *(s for subs in subfolders.values() for s in subs)}, key=lambda f: len(_parts(f))):
        out = folder_out[folder]                       # parents come first, so every folder has one by now
        fresh = sorted(s for s in subfolders[folder] if s not in folder_out)
        if not fresh and not waiting[folder]:
            continue
        on_disk = existing(out) if existing is not None else {}
        taken = used[out] | {name for name, owner in on_disk.items() if owner != PLAIN_FOLDER}
        for sub, name in zip(fresh, safe_output_names([(s, [_parts(s)[-1]]) for s in fresh], taken, "folder")):
            folder_out[sub] = _join(out, name)
            used[out].add(name)
        taken = used[out] | {name for name, owner in on_disk.items() if owner not in ours}
        here = waiting[folder]
        for photo, name in zip(here, photo_output_names([_parts(p)[-1] for p in here], taken)):
            assigned[photo] = _join(out, name)
            used[out].add(name)
    return {p: assigned[p] for p in photos}
