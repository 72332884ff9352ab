"""Official StyleNeRF FFHQ checkpoints: names, download through the Hugging Face cache, manual placement.

A checkpoint named ``ffhq_256`` is found, in order, as ``<models_dir>/ffhq_256.pkl`` (where a manually
downloaded file goes) or in the Hugging Face hub cache. ``models_dir()`` is ``$STYLENERF_EDIT_HOME/models``,
by default ``~/.cache/stylenerf-edit/models``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from stylenerf_edit.errors import DownloadError

REPO_ID = "facebook/stylenerf-ffhq-config-basic"
MODELS = {"ffhq_256": "ffhq_256.pkl", "ffhq_512": "ffhq_512.pkl", "ffhq_1024": "ffhq_1024.pkl"}

__all__ = ["REPO_ID", "MODELS", "models_dir", "find_downloaded", "download"]


def models_dir() -> Path:
    home = os.environ.get("STYLENERF_EDIT_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "stylenerf-edit") / "models"


def find_downloaded(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """Path of an already available checkpoint, without touching the network; None if absent."""
    filename = MODELS[name]
    manual = models_dir() / filename
    if manual.is_file():
        return manual
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(REPO_ID, filename, cache_dir=None if cache_dir is None else str(cache_dir))
    return Path(cached) if isinstance(cached, str) else None


def _manual_hint(filename: str) -> str:
    return (f"download https://huggingface.co/{REPO_ID}/resolve/main/{filename} by hand and place it at "
            f"{models_dir() / filename}")


def _hub_reachable() -> bool:
    """DNS check of the hub host, so an offline machine fails at once instead of after the hub's retries."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def download(name: str, cache_dir: str | Path | None = None) -> Path:
    """Fetch an official checkpoint into the Hugging Face cache (or find it already there) and return its path."""
    if name not in MODELS:
        raise DownloadError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    found = find_downloaded(name, cache_dir)
    if found is not None:
        return found
    filename = MODELS[name]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        reason = "HF_HUB_OFFLINE is set" if offline else "huggingface.co is unreachable"
        raise DownloadError(f"cannot download {filename} ({reason}): {_manual_hint(filename)}")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(REPO_ID, filename, cache_dir=None if cache_dir is None else str(cache_dir)))
    except Exception as e:  # the hub raises many types (HTTP, OS, its own); all mean "not downloaded"
        raise DownloadError(f"downloading {filename} from {REPO_ID} failed ({type(e).__name__}): "
                            f"{_manual_hint(filename)}") from None
