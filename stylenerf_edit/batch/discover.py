"""Which files of a folder tree are photos, and which output folder each one gets.

A photo ``IN/a/b/x.jpg`` is written to ``OUT/a/b/x/``. Hidden files and folders (name starting with ``.``)
are skipped, and so is the output folder when it lies inside the input. A name is given to one photo only:
when ``x.jpg`` and ``x.png`` sit side by side, or a folder ``x/`` beside ``x.jpg`` holds photos of its own,
the later photo in sorted order gets ``x_png/`` (then ``x_png_2/``, ...). Folders already recorded in the
manifest are kept, so adding photos never moves the outputs of earlier ones.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Collection, Mapping, Sequence

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


def assign_output_dirs(photos: Sequence[str], known: Mapping[str, str],
                       reserved: Collection[str] = ()) -> dict[str, str]:
    """Output folder (relative POSIX path) of every photo: ``known`` ones keep theirs, new ones get their stem
    unless a sibling photo, a sibling folder of photos, another assignment or ``reserved`` holds the name."""
    taken = set(known.values()) | set(reserved)
    for path in [*photos, *known]:     # every folder on the way to a photo is an input folder, not an output
        taken.update(str(parent) for parent in PurePosixPath(path).parents if str(parent) != ".")
    assigned = {}
    for photo in photos:
        if photo in known:
            assigned[photo] = known[photo]
            continue
        p = PurePosixPath(photo)
        candidates = [p.stem, f"{p.stem}_{p.suffix[1:].lower()}"]
        name = next((c for c in candidates if str(p.parent / c) not in taken), None)
        count = 2
        while name is None or str(p.parent / name) in taken:
            name, count = f"{candidates[1]}_{count}", count + 1
        assigned[photo] = str(p.parent / name)
        taken.add(assigned[photo])
    return assigned
