"""Atomic file writes (a temporary sibling name, then a rename, so readers never see a partial file), output
files that never replace a user's (:class:`OwnedOutputs`), and ``.npz`` reads under a size budget (nothing is
decompressed before its headers show that it fits)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from stylenerf_edit.errors import StyleNerfEditError


def _temporary(path: Path) -> Path:
    # Hidden, unique per process, and keeping the suffix: writers that pick a format by extension still work.
    return path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a folder's contents (a folder: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it is renamed onto ``path``, on failure removed.

    ``durable`` flushes the file and its folder to disk around the rename, for files that must survive a power
    cut (the batch's commits), at the cost of two fsyncs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        tmp.replace(path)
        if durable:
            fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OutputExistsError(StyleNerfEditError):
    """An output would replace a file the command did not write."""


class OwnedOutputs:
    """The fixed-name files a command writes into a folder the user chose, which may hold the user's files.

    ``folder/record`` lists every file the command wrote there with its SHA-256. A later run may replace those
    files while they are unchanged; any other existing file of the same name (the user's, another command's,
    or one edited since) is refused before anything is written, so no run loses a file it did not make.
    """

    def __init__(self, folder: str | Path, record: str, command: str):
        self.folder, self.record, self.command = Path(folder), record, command

    def _written(self) -> dict[str, str]:
        path = self.folder / self.record
        if not (path.exists() or path.is_symlink()):
            return {}
        try:
            files = json.loads(path.read_text()).get("files") if path.is_file() and not path.is_symlink() else None
        except (OSError, ValueError, AttributeError):
            files = None
        if not isinstance(files, dict):
            raise OutputExistsError(f"{path}: exists but is not the record `stylenerf-edit {self.command}` keeps "
                                    "there; choose another --out or move it away (nothing was written)")
        return files

    def check(self, names: Iterable[str]) -> None:
        """Refuse (:class:`OutputExistsError`, naming the file) when writing ``names`` would replace a file this
        command did not write there, or one changed since it did."""
        written = self._written()
        for name in names:
            path = self.folder / name
            if not (path.exists() or path.is_symlink()):
                continue
            if path.is_symlink() or not path.is_file() or written.get(name) != sha256_file(path):
                raise OutputExistsError(
                    f"{path}: already exists and was not written by `stylenerf-edit {self.command}` (or was changed "
                    "since); choose another --out or move the file away (nothing was written)")

    def discard(self, name: str) -> None:
        """Delete ``name`` when this command wrote it there and it is unchanged: an output of an earlier run that
        this run does not write and that would mislead beside the new ones. Any other file stays."""
        path = self.folder / name
        if path.is_file() and not path.is_symlink() and self._written().get(name) == sha256_file(path):
            path.unlink()

    def save_record(self, paths: Iterable[Path], info: dict[str, Any]) -> Path:
        """Write the record: ``info`` and the SHA-256 of each written file (named relative to the folder)."""
        files = {Path(p).relative_to(self.folder).as_posix(): sha256_file(p) for p in paths}
        return write_text(self.folder / self.record, json.dumps({**info, "files": files}, indent=1) + "\n")


class NpzError(StyleNerfEditError):
    """An ``.npz`` file is unreadable, malformed, or over a limit its reader sets."""


_KIND_NAMES = {"f": "float", "i": "integer", "u": "unsigned integer", "b": "boolean", "U": "string"}
_END_RECORD = struct.Struct("<4s4H2LH")     # zip end of central directory: ..., entries, directory size, ...
_DIRECTORY_BYTES_PER_MEMBER = 512           # a central directory record: 46 bytes, the name and extra fields
_READ_BLOCK = 1 << 20


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


class NpzReader:
    """An ``.npz`` file opened under a budget; use as a context manager.

    ``max_bytes`` bounds the file on disk and the total uncompressed size of the arrays read from it, and
    ``max_members`` its number of entries (checked from the zip's end record, before ``zipfile`` lists them).
    :meth:`read` checks an entry's declared uncompressed size (zip header), then its ``.npy`` header (dtype kind,
    no Python objects, shape, element count) and reads the data only when all fit. Entries never read cost
    nothing. Every refusal is an :class:`NpzError` naming the file and the limit it hit.
    """

    def __init__(self, path: str | Path, max_bytes: int, max_members: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._left = max_bytes
        try:
            size = self.path.stat().st_size
            if size > max_bytes:
                raise NpzError(f"{self.path}: {_size(size)}, over the {_size(max_bytes)} limit for this kind of file")
            self._file = open(self.path, "rb")
        except OSError as e:
            raise NpzError(f"{self.path}: not a readable .npz file ({type(e).__name__})") from None
        try:
            self._check_directory(size, max_members)
            self._zip = zipfile.ZipFile(self._file)
            infos = self._zip.infolist()
        except NpzError:
            self._file.close()
            raise
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            self._file.close()
            raise NpzError(f"{self.path}: not a readable .npz file ({type(e).__name__})") from None
        self._members = {info.filename.removesuffix(".npy"): info for info in infos}
        if len(self._members) != len(infos):
            self.close()
            raise NpzError(f"{self.path}: lists an entry twice; refused")

    def _check_directory(self, size: int, max_members: int) -> None:
        tail_size = min(size, _END_RECORD.size + 0xFFFF)     # the record, then a comment of up to 64 KiB
        self._file.seek(size - tail_size)
        tail = self._file.read(tail_size)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _END_RECORD.size > len(tail):
            raise zipfile.BadZipFile("no end of central directory record")
        entries, directory_size = _END_RECORD.unpack_from(tail, at)[4:6]
        # A zip64 file stores 0xFFFF here: more members than any of ours has, refused as such.
        if entries > max_members or directory_size > max_members * _DIRECTORY_BYTES_PER_MEMBER:
            raise NpzError(f"{self.path}: declares {entries} entries in {_size(directory_size)} of directory, "
                           f"over the limit of {max_members} entries for this kind of file")

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    @property
    def names(self) -> list[str]:
        """Entry names, ``.npy`` suffixes removed, in file order."""
        return list(self._members)

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def read_meta(self, file_format: str, max_version: int, kind: str) -> dict[str, Any]:
        """The JSON object in the ``meta`` entry, checked to be of ``file_format`` at a version this tool reads;
        ``kind`` names the file in messages ("latent", "direction")."""
        if "meta" not in self:
            raise NpzError(f"{self.path}: not a stylenerf-edit {kind} (no 'meta' entry)")
        try:
            meta = json.loads(str(self.read("meta", "U", ())))
        except (ValueError, RecursionError):
            raise NpzError(f"{self.path}: its 'meta' entry is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != file_format:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise NpzError(f"{self.path}: not a stylenerf-edit {kind} (format {found!r})")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > max_version:
            raise NpzError(f"{self.path}: {kind} format version {version!r} is newer than this tool understands "
                           f"({max_version}); upgrade stylenerf-edit")
        return meta

    def read(self, name: str, kinds: str, shape: tuple[int | None, ...] | None = None,
             max_items: int | None = None, finite: bool = False) -> np.ndarray:
        """Entry ``name`` as an array whose dtype kind is one of ``kinds`` (e.g. ``"f"``, ``"U"``).

        ``shape``: the required shape, ``None`` for any length along an axis (``shape=None``: any shape);
        ``max_items``: the most elements it may hold. Both are checked from the headers, before reading.
        ``finite``: refuse NaN and infinite values.
        """
        info = self._members.get(name)
        if info is None:
            raise NpzError(f"{self.path}: no '{name}' entry")
        where = f"{self.path}: '{name}'"
        if info.file_size > self._left:
            raise NpzError(f"{where} declares {_size(info.file_size)} uncompressed, over the {_size(self.max_bytes)} "
                           "limit for this kind of file")
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    found, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    found, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise NpzError(f"{where} is a .npy version {version} array; only versions 1.0 and 2.0 are read")
                self._check_header(where, dtype, found, kinds, shape, max_items)
                count = math.prod(found)
                nbytes = count * dtype.itemsize
                if nbytes > self._left:
                    raise NpzError(f"{where} declares {dtype} {list(found)} ({_size(nbytes)}), over the "
                                   f"{_size(self.max_bytes)} limit for this kind of file")
                if f.tell() + nbytes != info.file_size:
                    raise NpzError(f"{where}: its .npy header ({dtype} {list(found)}, {_size(nbytes)}) and its zip "
                                   f"header ({_size(info.file_size)}) disagree; refused")
                array = np.empty(count, dtype)
                raw = array.view(np.uint8) if nbytes else array
                for start in range(0, nbytes, _READ_BLOCK):     # block by block: no second copy of the data
                    block = f.read(min(_READ_BLOCK, nbytes - start))
                    if len(block) != min(_READ_BLOCK, nbytes - start):
                        raise EOFError
                    raw[start:start + len(block)] = np.frombuffer(block, np.uint8)
        except (OSError, EOFError, ValueError, SyntaxError, RecursionError, NotImplementedError, RuntimeError,
                zipfile.BadZipFile) as e:
            raise NpzError(f"{where} is unreadable or truncated ({type(e).__name__})") from None
        self._left -= info.file_size
        if finite and dtype.kind in "fc" and not np.isfinite(array).all():
            raise NpzError(f"{where} contains NaN or infinite values")
        return array.reshape(found, order="F" if fortran else "C")

    @staticmethod
    def _check_header(where: str, dtype: np.dtype, found: tuple[int, ...], kinds: str,
                      shape: tuple[int | None, ...] | None, max_items: int | None) -> None:
        if any(n < 0 for n in found):
            raise NpzError(f"{where} declares a negative shape {list(found)}; refused")
        if dtype.hasobject:
            raise NpzError(f"{where} holds Python objects ({dtype}); refused, only plain arrays are read")
        if dtype.kind not in kinds or dtype.fields is not None:
            wanted = " or ".join(_KIND_NAMES.get(k, k) for k in kinds)
            raise NpzError(f"{where} is {dtype} {list(found)}, expected a {wanted} array")
        if shape is not None and (len(found) != len(shape)
                                  or any(s is not None and s != n for s, n in zip(shape, found))):
            wanted = "[" + ", ".join("any" if s is None else str(s) for s in shape) + "]"
            raise NpzError(f"{where} is {dtype} {list(found)}, expected shape {wanted}")
        if max_items is not None and math.prod(found) > max_items:
            raise NpzError(f"{where} declares {math.prod(found)} values, over the limit of {max_items}")
