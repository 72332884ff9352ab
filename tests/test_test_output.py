"""The suite's own output: a clone without the official fixtures gets one line per skip reason, not dozens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_skips_for_missing_fixtures_are_summarised_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["STYLENERF_FIXTURES"] = str(tmp_path / "none")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cli.py",
                          "-k", "render"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = out.stdout.splitlines()
    summary = [line for line in lines if "fixtures not found" in line]
    assert len(summary) == 1 and summary[0].startswith("skipped "), out.stdout
    assert not any(line.startswith("SKIPPED") for line in lines), out.stdout
