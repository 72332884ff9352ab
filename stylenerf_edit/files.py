"""Atomic file writes: a temporary sibling name, then a rename, so readers never see a partial file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz``, atomically."""
    path = Path(path)
    tmp = _temporary(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``, atomically."""
    path = Path(path)
    tmp = _temporary(path)
    tmp.write_text(text)
    tmp.replace(path)
    return path
