"""Test helper: read checkpoints in a capped child process and report, per file, what happened and its cost.

The hostile-checkpoint tests need the time and peak memory of each read and proof that nothing from the file
ran. A child process gives all three without risking the test run: its address space is capped (a reader
that blows up fails the test, not the machine), its peak resident memory is reset before each file
(``/proc/self/clear_refs``), and an audit hook records any attempt to run code that is not a module on disk.
Run as a script it is the child: ``python official_pickle_budget.py MANIFEST``.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_ADDRESS_SPACE_HEADROOM = 4 << 30  # what a read may map beyond the child's footprint after importing torch
# Audit events that only occur when something starts a program or loads native code.
_PROCESS_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                   "subprocess.Popen", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function")


@dataclass
class Outcome:
    """What reading one file did."""

    path: str
    refused: str | None = None  # the CheckpointError message
    error: str | None = None  # any other exception: a reader bug (bad files must get a CheckpointError)
    seconds: float = 0.0
    peak_mb: float = 0.0  # peak resident memory above what the child held before this file
    code_events: tuple[str, ...] = ()  # audit events showing that code from the file ran
    network: dict[str, Any] | None = None  # what was read: state_dict, init_args, init_kwargs


def read_in_child(paths: list[Path], warmup: Path, out_dir: Path, timeout: float) -> dict[Path, Outcome]:
    """Read every file of ``paths`` in one capped child process (after one untimed read of ``warmup``)."""
    import torch

    import stylenerf_edit

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.json"
    manifest.write_text(json.dumps({"warmup": str(warmup), "paths": [str(path) for path in paths],
                                    "out_dir": str(out_dir)}))
    package_root = Path(stylenerf_edit.__file__).resolve().parents[1]  # the package these tests import
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
    process = subprocess.run([sys.executable, __file__, str(manifest)], capture_output=True, text=True, env=env,
                             timeout=timeout, check=False)
    if process.returncode != 0:
        raise AssertionError(f"reader child failed ({process.returncode}): {process.stderr[-3000:]}")
    reports = json.loads((out_dir / "outcomes.json").read_text())
    networks = torch.load(out_dir / "networks.pt", weights_only=True)  # plain data, or the reader leaked objects
    return {Path(report["path"]): Outcome(**{**report, "code_events": tuple(report["code_events"]),
                                             "network": networks.get(report["path"])})
            for report in reports}


def _status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (Linux), or None elsewhere."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak() -> bool:
    """Reset the peak resident memory to the current one (Linux >= 4.0); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        return False
    return True


def _cap_address_space() -> None:
    size_kb = _status_kb("VmSize")
    if size_kb is not None:
        limit = size_kb * 1024 + _ADDRESS_SPACE_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _watch_for_code(events: list[str]) -> None:
    """Record code compiled or executed from anything but a file on disk, and every process or native call."""
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in ("exec", "compile"):
            origin = getattr(args[0], "co_filename", None) if event == "exec" else args[1]
            if not (isinstance(origin, str) and os.path.isfile(origin)):
                events.append(f"{event} {origin!r:.80}")
        elif event.startswith(_PROCESS_EVENTS):
            events.append(event)

    sys.addaudithook(hook)


def _read(path: str, events: list[str], networks: dict[str, dict[str, Any]]) -> Outcome:
    from stylenerf_edit.errors import CheckpointError
    from stylenerf_edit.generator.official_pickle import read_official_pickle

    outcome = Outcome(path)
    exact_peak = _reset_peak()
    before_kb = _status_kb("VmRSS") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del events[:]
    network = None
    start = time.perf_counter()
    try:
        network = read_official_pickle(path)
    except CheckpointError as error:
        outcome.refused = str(error)
    except BaseException as error:  # noqa: BLE001 - reported: every other exception is a reader bug
        outcome.error = f"{type(error).__name__}: {error!s:.500}"
    outcome.seconds = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome.peak_mb = max(0, (peak_kb or 0) - (before_kb or 0)) / 1024
    outcome.code_events = tuple(events)
    if network is not None:
        networks[path] = {"state_dict": network.state_dict, "init_args": network.init_args,
                          "init_kwargs": network.init_kwargs}
    return outcome


def _child(manifest_path: str) -> None:
    import torch

    from stylenerf_edit.generator.official_pickle import read_official_pickle

    manifest = json.loads(Path(manifest_path).read_text())
    out_dir = Path(manifest["out_dir"])
    read_official_pickle(manifest["warmup"])  # lazy imports and first-call costs, outside any measurement
    events: list[str] = []
    _watch_for_code(events)
    exec(compile("0", "<probe>", "eval"))  # the hook must see code that comes from no file
    if not events:
        raise RuntimeError("the audit hook does not report code execution")
    _cap_address_space()
    networks: dict[str, dict[str, Any]] = {}
    outcomes = [asdict(_read(path, events, networks)) for path in manifest["paths"]]  # network stays None
    torch.save(networks, out_dir / "networks.pt")
    (out_dir / "outcomes.json").write_text(json.dumps(outcomes))


if __name__ == "__main__":
    _child(sys.argv[1])
