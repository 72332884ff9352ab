"""Output folder names: safe on any file system, unique within a run, and chosen deterministically.

Names come from what the user gave (a photo's stem, an input folder, a direction's name) but are never trusted:
:func:`safe_name` removes what could leave the output folder or hide a result (``.`` and ``..``, path
separators, leading dots, control and other invisible characters) and bounds the length, and
:func:`safe_output_names` makes the names of one run unique, comparing them without regard to case or Unicode
normalisation, as macOS and Windows file systems do. Every command that names folders (``invert``, ``batch``,
``edit`` folders, ``demo``) goes through :func:`safe_output_names`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import PurePath
from typing import Iterable, Sequence

MAX_NAME_BYTES = 120     # well under the 255 bytes most file systems allow, leaving room for a _N suffix
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")       # leading dots hide a name; Windows drops trailing dots and spaces
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def _clean(text: str) -> str:
    name = "".join("_" if c in "/\\" or unicodedata.category(c).startswith("C") else c
                   for c in unicodedata.normalize("NFC", text))
    name = _EDGES.sub("", name)
    return f"_{name}" if name.split(".")[0].upper() in _WINDOWS_DEVICES else name


def safe_name(text: str, fallback: str = "output") -> str:
    """``text`` as one folder name: separators and control, format, surrogate and unassigned characters become
    ``_``; leading dots and spaces and trailing dots and spaces are dropped; a Windows device name (``CON``,
    ``NUL``, ...) gets a leading ``_``; a name over :data:`MAX_NAME_BYTES` bytes of UTF-8 is cut and ends in a
    hash of the whole text (so long names stay apart); ``fallback`` when nothing is left."""
    name = _clean(text)
    if len(name.encode()) > MAX_NAME_BYTES:
        tag = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        head = name.encode()[:MAX_NAME_BYTES - len(tag) - 1].decode(errors="ignore")
        name = f"{_EDGES.sub('', head)}-{tag}"
    return name or fallback


def is_safe_name(name: str) -> bool:
    """True when ``name`` is one folder name :func:`safe_name` leaves as it is (a ``_N`` suffix allowed)."""
    return bool(name) and _clean(name) == name and len(name.encode()) <= 255


def _fold(name: str) -> str:
    """Names that case- and normalisation-insensitive file systems take for the same one compare equal."""
    return unicodedata.normalize("NFC", name).casefold()


def safe_output_names(wanted: Sequence[tuple[str, Sequence[str]]], taken: Iterable[str] = (),
                      fallback: str = "output") -> list[str]:
    """One folder name per ``(key, candidates)`` item, each candidate made safe by :func:`safe_name`.

    Names are unique within the result and apart from ``taken``. Every item first asks for its first candidate:
    when several ask for the same name, an item whose candidate was safe as given gets it before one whose
    candidate had to be changed, then the smallest key. The others take their next free candidate, in key
    order, and finally their last candidate with ``_2``, ``_3``, .... The names depend only on the items and
    ``taken``, not on their order, so a rerun on the same inputs gives the same names.
    """
    candidates = [[safe_name(c, fallback) for c in names] for _, names in wanted]
    used = {_fold(t) for t in taken}
    result: list[str | None] = [None] * len(wanted)
    first = sorted(range(len(wanted)), key=lambda i: (candidates[i][0] != wanted[i][1][0], wanted[i][0], i))
    for i in first:
        if _fold(candidates[i][0]) not in used:
            result[i] = candidates[i][0]
            used.add(_fold(candidates[i][0]))
    for i in sorted((i for i in range(len(wanted)) if result[i] is None), key=lambda i: (wanted[i][0], i)):
        name = next((c for c in candidates[i][1:] if _fold(c) not in used), None)
        count = 2
        while name is None or _fold(name) in used:
            name, count = f"{candidates[i][-1]}_{count}", count + 1
        result[i] = name
        used.add(_fold(name))
    return [name for name in result if name is not None]


def photo_output_names(photos: Sequence[str], taken: Iterable[str] = ()) -> list[str]:
    """Output folder names of photo paths (the keys, see :func:`safe_output_names`): the stem, else the stem
    and suffix (``x.png`` beside ``x.jpg`` gets ``x_png``), else numbered; ``photo`` when the stem has nothing
    safe (``..jpg``)."""
    wanted = []
    for photo in photos:
        path = PurePath(photo)
        stem, ext = path.stem, path.suffix[1:].lower()
        wanted.append((photo, [stem, f"{safe_name(stem, 'photo')}_{ext}"] if ext else [stem]))
    return safe_output_names(wanted, taken, fallback="photo")
