"""Test dependencies installed with ``--no-deps`` (model files and photos from registry packages): a test that
needs a missing one is skipped on a developer's machine and fails under CI (``CI`` set), where the README's test
command installs them all."""

from __future__ import annotations

import importlib.util
import os

import pytest


def require(*modules: str, install: str) -> None:
    """Skip (or, under CI, fail) the calling test unless every one of ``modules`` is importable."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        message = f"needs {', '.join(missing)}: {install}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
