"""Shared test fixtures: the official parity fixtures and a generator built from their weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

# Under pytest-xdist (the README's `-n 2`) each worker gets one of the cores: one torch thread here and in every
# command a test starts (two 2-thread processes on 2 cores slow each other several times over).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("STYLENERF_EDIT_THREADS", "1")

import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = REPO.parent / "shared" / "reference" / "fixtures"


# Parity tests run on the CPU; STYLENERF_TEST_DEVICE=cuda repeats them on a GPU.
DEVICE = torch.device(os.environ.get("STYLENERF_TEST_DEVICE", "cpu"))


def fixtures_dir() -> Path:
    return Path(os.environ.get("STYLENERF_FIXTURES", DEFAULT_FIXTURES))


def require_fixtures() -> Path:
    """The fixtures directory; skipped when absent locally, a failure under CI (``CI`` set)."""
    d = fixtures_dir()
    if not (d / "g_state_fp16exact.npz").is_file():
        message = f"official StyleNeRF fixtures not found in {d} (set STYLENERF_FIXTURES)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return d


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return require_fixtures()


@pytest.fixture(scope="session")
def official_state(fixture_dir: Path) -> dict[str, torch.Tensor]:
    """The fixture generator's state dict, official names, float32 (values are float16-exact)."""
    with np.load(fixture_dir / "g_state_fp16exact.npz") as z:
        return {k: torch.from_numpy(z[k].astype(np.float32)) for k in z.files}


@pytest.fixture(scope="session")
def official_kwargs(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "g_init_kwargs.json").read_text())["init_kwargs"]


@pytest.fixture(scope="session")
def fixture_generator(official_kwargs: dict, official_state: dict):
    from stylenerf_edit.generator import generator_from_official

    return generator_from_official(official_kwargs, official_state).to(DEVICE)


@pytest.fixture(scope="session")
def fixture_pickle(tmp_path_factory: pytest.TempPathFactory, official_kwargs: dict, official_state: dict) -> Path:
    """A synthetic official-format pickle (omegaconf kwargs) of the fixture weights; its embedded source raises."""
    from official_pickle_writer import write_official_pickle

    path = tmp_path_factory.mktemp("pkl") / "fixture_128.pkl"
    write_official_pickle(path, official_kwargs, official_state, use_omegaconf=True)
    return path


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Skips in one line per reason (``-r`` without ``s`` lists each skipped test, dozens for missing fixtures)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"skipped {n}: {reason}")
