"""Hostile checkpoints under a budget: tiny files that used to expand into minutes and gigabytes, and seeded
mutations of the test writer's checkpoints (truncated, spans duplicated, references rewired, huge shapes,
objects shared from many places).

Every file is read once, in one capped child process (``official_pickle_budget``) that reports per file
the outcome, the time, the peak memory and any code that ran. For every file: nothing from it runs, the read
stays under ``SECONDS`` and ``PEAK_MB``, and the reader either refuses it with a one-line CheckpointError
naming it or returns weights: the exact weights the file describes where the test knows them, otherwise only
values that the file's storages hold (a rewired reference can legitimately pick another stored tensor).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import random
import struct
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from official_pickle_budget import Outcome, read_in_child
from official_pickle_writer import TINY_INIT_KWARGS, pickle_parts, tiny_official_state, write_official_pickle

SECONDS = 5.0  # per file; these tiny files read in milliseconds and are refused in well under a second
PEAK_MB = 100.0  # per file, above the child's footprint (torch imported)
CHILD_TIMEOUT_S = 240  # all files together; about 15 s on a slow two-core machine
# Clearly below and clearly above the reader's limits (real generators: under 1000 modules, tensors and
# constructor values; float32 weights at most twice the file's size): the tests hold whatever the exact limits.
SMALL_EXPANSION, HUGE_EXPANSION = 1_000, 1_000_000
SEED = 20240610


@dataclass
class Case:
    """One file to read and what must come of it."""

    path: Path
    expect: str  # "refused", "exact" (these weights), or "stored" (refused, or values the file's storages hold)
    refusal: str = ""  # part of the expected refusal
    state: OrderedDict[str, torch.Tensor] | None = None  # for "exact"
    init_kwargs: dict | None = None  # for "exact"
    stored: torch.Tensor | None = None  # for "stored": every value the unmutated file's storages hold


@dataclass
class Run:
    """All cases, read in one child process."""

    cases: dict[str, list[Case]]
    outcomes: dict[Path, Outcome]
    marker: Path  # written by the embedded module source of the mutated files, should it ever run


class _Anything:
    """Inert stand-in for every non-container global while collecting a trusted file's storages."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


def _stored_values(path: Path) -> torch.Tensor:
    """Every value held by the storages of ``path``, one of our own (trusted) files, as float32."""
    storages: list[torch.storage.TypedStorage] = []

    def load_storage(data: bytes) -> None:
        storages.append(torch.load(io.BytesIO(data), weights_only=True))

    class Collector(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            real = {("collections", "OrderedDict"): OrderedDict, ("collections", "defaultdict"): defaultdict,
                    ("torch.storage", "_load_from_bytes"): load_storage}
            return real.get((module, name), _Anything)

    with path.open("rb") as file:
        Collector(file).load()
    return torch.cat([torch.empty(0, dtype=s.dtype).set_(s._untyped_storage).float() for s in storages])


def _unframed(data: bytes) -> bytes:
    """The pickle without FRAME opcodes (they are optional), so that spliced opcodes stay within one stream."""
    frames = [(pos, pos + 9) for op, _, pos in pickletools.genops(data) if op.name == "FRAME"]
    for start, end in reversed(frames):
        data = data[:start] + data[end:]
    return data


def _span_duplicated(data: bytes, ops: list[tuple[Any, Any, int]], rng: random.Random) -> bytes:
    """A run of up to six whole opcodes (``ops``: ``pickletools.genops(data)``), repeated in place."""
    starts = [pos for _, _, pos in ops][1:-1]  # neither PROTO nor STOP
    first = rng.randrange(len(starts) - 1)
    last = min(first + rng.randint(1, 6), len(starts) - 1)
    return data[:starts[last]] + data[starts[first]:starts[last]] + data[starts[last]:]


def _rewired(data: bytes, ops: list[tuple[Any, Any, int]], rng: random.Random) -> bytes:
    """One memo reference (BINGET / LONG_BINGET) pointed at another object memoised before it."""
    memoised, gets = 0, []
    for op, _, pos in ops:
        if op.name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
            memoised += 1
        elif op.name in ("BINGET", "LONG_BINGET"):
            gets.append((pos, 2 if op.name == "BINGET" else 5, memoised))
    pos, length, available = rng.choice(gets)
    target = rng.randrange(available)
    reference = (pickle.BINGET + bytes([target]) if target < 256
                 else pickle.LONG_BINGET + target.to_bytes(4, "little"))
    return data[:pos] + reference + data[pos + length:]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fan_out(parts: Any, weight: torch.Tensor, depth: int, width: int) -> Any:
    """``depth`` levels of modules, each holding the one module below ``width`` times, over one weight."""
    node = parts.module("FullyConnectedLayer", parameters={"weight": weight})
    for _ in range(depth):
        node = parts.module("SynthesisBlock", modules={f"m{i}": node for i in range(width)})
    return parts.module("Generator", modules={"synthesis": node})


def _fan_out_names(depth: int, width: int) -> list[str]:
    """The state-dict names ``_fan_out`` stands for, in torch's order."""
    names = ["weight"]
    for _ in range(depth):
        names = [f"m{i}.{name}" for i in range(width) for name in names]
    return [f"synthesis.{name}" for name in names]


def _shared_list(depth: int) -> list:
    """A list holding the list below twice, ``depth`` times: 2**depth leaves from a few bytes of pickle."""
    shared: list = [0.5]
    for _ in range(depth):
        shared = [shared, shared]
    return shared


def _blow_up_cases(directory: Path) -> dict[str, list[Case]]:
    """The three expansions that took seconds to minutes and gigabytes before the reader had a budget."""
    with pickle_parts() as parts:
        parts.dump(directory / "module_fan_out.pkl", _fan_out(parts, torch.ones(1), depth=24, width=2))
        parts.dump(directory / "shared_kwargs.pkl", parts.module("Generator", _init_kwargs={"x": _shared_list(24)}))
        storage = torch.zeros(2**18, dtype=torch.float16)._typed_storage()  # 512 KiB, read 256 times
        views = {f"w{i}": parts.view(storage, 0, (2**18,), (1,)) for i in range(256)}
        parts.dump(directory / "storage_views.pkl", parts.module("Generator", parameters=views))
    return {
        "module_fan_out": [Case(directory / "module_fan_out.pkl", "refused", "more than")],
        "shared_kwargs": [Case(directory / "shared_kwargs.pkl", "refused", "more than")],
        "storage_views": [Case(directory / "storage_views.pkl", "refused", "float32 weights over the limit")],
    }


def _mutant_cases(directory: Path, marker: Path, rng: random.Random) -> list[Case]:
    """Byte-level mutants of two writer checkpoints: plain kwargs and float32, omegaconf kwargs and float16."""
    source = f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n"
    state = tiny_official_state()
    cases = []
    for name, omegaconf, dtype in (("plain", False, torch.float32), ("omegaconf", True, torch.float16)):
        base = directory / f"{name}.pkl"
        write_official_pickle(base, TINY_INIT_KWARGS, OrderedDict((k, v.to(dtype)) for k, v in state.items()),
                              use_omegaconf=omegaconf, module_src=source)
        data, stored = base.read_bytes(), _stored_values(base)
        flat = _unframed(data)
        ops = list(pickletools.genops(flat))
        cases.append(Case(_write(directory / f"{name}_twice.pkl", data + data), "exact", state=state,
                          init_kwargs=TINY_INIT_KWARGS))
        cases.append(Case(_write(directory / f"{name}_unframed.pkl", flat), "exact", state=state,
                          init_kwargs=TINY_INIT_KWARGS))
        for i in range(15):
            cut = data[:rng.randrange(1, len(data))]
            cases.append(Case(_write(directory / f"{name}_cut{i}.pkl", cut), "refused"))
        for mutate in (_span_duplicated, _rewired):
            for i in range(50):
                path = _write(directory / f"{name}{mutate.__name__}{i}.pkl", mutate(flat, ops, rng))
                cases.append(Case(path, "stored", stored=stored))
    return cases


def _huge_shape_cases(directory: Path, rng: random.Random) -> list[Case]:
    """One tensor of a writer checkpoint replaced by a view far beyond its 16-element storage."""
    state = tiny_official_state()
    geometries = [(0, (2**40,), (1,)), (0, (10**6, 10**6), (1, 1)), (0, (10**9,), (0,)), (2**62, (1,), (1,)),
                  (0, (2**31, 2**31, 2**31), (0, 0, 0)), (15, (2,), (1,)), (0, (4, 5), (4, 1))]
    cases = []
    for i, (offset, size, stride) in enumerate(geometries):
        storage = torch.zeros(16, dtype=rng.choice([torch.float16, torch.float32]))._typed_storage()
        view = (torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, OrderedDict()))
        path = directory / f"huge_shape{i}.pkl"
        write_official_pickle(path, TINY_INIT_KWARGS, state, extra_globals={rng.choice(list(state)): view})
        cases.append(Case(path, "refused", "reaches past its storage"))

    class DeclaredStorage:
        """A storage whose stream declares far more elements than it holds (torch allocates before reading)."""

        def __init__(self, numel: int) -> None:
            stream = torch.arange(4, dtype=torch.float16)._typed_storage().__reduce__()[1][0]
            declared = stream.index(b"K\x04N")  # BININT1 4 (the element count), then NONE (no view)
            self.stream = stream[:declared] + b"\x8a\x08" + numel.to_bytes(8, "little") + stream[declared + 2:]

        def __reduce__(self) -> tuple:
            return torch.storage._load_from_bytes, (self.stream,)

    for i, numel in enumerate((2**28, 2**40, 2**62)):
        view = (torch._utils._rebuild_tensor_v2, (DeclaredStorage(numel), 0, (4,), (1,), False, OrderedDict()))
        path = directory / f"declared_storage{i}.pkl"
        write_official_pickle(path, TINY_INIT_KWARGS, state, extra_globals={"mapping.w_avg": view})
        cases.append(Case(path, "refused", "corrupt tensor storage"))
    return cases


def _shared_reference_cases(directory: Path) -> list[Case]:
    """Objects referenced from many places: torch semantics where the expansion is small, refusals where huge."""
    weight = torch.arange(3.0)
    cases = []
    with pickle_parts() as parts:
        for depth, width in ((3, 4), (9, 2), (1, 500)):
            assert width**depth <= SMALL_EXPANSION
            path = directory / f"fan_out_{depth}x{width}.pkl"
            parts.dump(path, _fan_out(parts, weight, depth, width))
            state = OrderedDict((name, weight) for name in _fan_out_names(depth, width))
            cases.append(Case(path, "exact", state=state, init_kwargs={}))
        for depth, width in ((20, 2), (4, 40), (2, 1000)):
            assert width**depth >= HUGE_EXPANSION
            path = directory / f"fan_out_{depth}x{width}.pkl"
            parts.dump(path, _fan_out(parts, weight, depth, width))
            cases.append(Case(path, "refused", "more than"))

        path = directory / "long_name.pkl"  # copied into every name below it, on every path
        leaf = parts.module("FullyConnectedLayer", parameters={"weight": weight})
        parts.dump(path, parts.module("Generator", modules={"n" * 100_000: leaf}))
        cases.append(Case(path, "refused", "longer than"))

        path = directory / "kwargs_small.pkl"
        parts.dump(path, parts.module("Generator", _init_kwargs={"x": _shared_list(9)}))
        cases.append(Case(path, "exact", state=OrderedDict(), init_kwargs={"x": _shared_list(9)}))
        path = directory / "kwargs_cycle.pkl"
        cycle: list = []
        cycle.append(cycle)
        parts.dump(path, parts.module("Generator", _init_kwargs={"x": cycle}))
        cases.append(Case(path, "refused", "nested deeper than"))

        storage = torch.arange(2**11, dtype=torch.float16)._typed_storage()  # float16 holds these exactly
        whole = torch.arange(2**11, dtype=torch.float32)
        path = directory / "views_two.pkl"
        parts.dump(path, parts.module("Generator", parameters={
            "a": parts.view(storage, 0, (2**11,), (1,)), "b": parts.view(storage, 0, (32, 64), (64, 1))}))
        cases.append(Case(path, "exact", state=OrderedDict(a=whole, b=whole.reshape(32, 64)), init_kwargs={}))
        path = directory / "views_many.pkl"
        parts.dump(path, parts.module("Generator", parameters={
            f"w{i}": parts.view(storage, 0, (2**11,), (1,)) for i in range(64)}))
        cases.append(Case(path, "refused", "float32 weights over the limit"))
        path = directory / "one_view_many_names.pkl"
        one = parts.view(storage, 0, (2**11,), (1,))
        parts.dump(path, parts.module("Generator", parameters={f"w{i}": one for i in range(500)}))
        cases.append(Case(path, "exact", state=OrderedDict((f"w{i}", whole) for i in range(500)), init_kwargs={}))
    return cases


def _raw(body: bytes) -> bytes:
    """A protocol-4 pickle of ``body``'s opcodes."""
    return pickle.PROTO + bytes([4]) + body + pickle.STOP


def _long(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def _interpreter_cases(directory: Path) -> list[Case]:
    """Files that cost the C unpickler itself quadratic time or many objects, before any budget of the reader."""
    prime = 2**61 - 1  # ints k * prime all share Python's hash 0: a dict of n of them costs n**2 comparisons
    members = [_long(k * prime) for k in range(1, 40_001)]
    colliding = b"".join(member + pickle.NONE for member in members)
    floats = b"".join(pickle.BINFLOAT + struct.pack(">d", x) + pickle.NONE for x in (0.5, 1.5))
    tuples = pickle.MARK + pickle.NONE + pickle.NONE + pickle.TUPLE + pickle.NONE
    files = {
        "colliding_ints": (_raw(pickle.EMPTY_DICT + pickle.MARK + colliding + pickle.SETITEMS), "dict key"),
        "colliding_dict_opcode": (_raw(pickle.MARK + colliding + pickle.DICT), "dict key"),
        "colliding_setitem": (_raw(pickle.EMPTY_DICT + _long(prime) + pickle.NONE + pickle.SETITEM), "dict key"),
        "float_keys": (_raw(pickle.EMPTY_DICT + pickle.MARK + floats + pickle.SETITEMS), "dict key"),
        "tuple_keys": (_raw(pickle.EMPTY_DICT + pickle.MARK + tuples + pickle.SETITEMS), "dict key"),
        "colliding_set": (_raw(pickle.EMPTY_SET + pickle.MARK + b"".join(members) + pickle.ADDITEMS), "set member"),
        "colliding_memo": (_raw(pickle.NONE + b"".join(b"p%d\n" % (k * prime) for k in range(1, 1_000))),
                           "memo index"),
        "dict_from_arguments": (_raw(pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.MARK + pickle.MARK
                                     + b"".join(pickle.MARK + member + pickle.NONE + pickle.TUPLE
                                                for member in members[:100])
                                     + pickle.LIST + pickle.TUPLE + pickle.REDUCE), "built from arguments"),
        "protocol_0_object": (_raw(pickle.MARK + pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.OBJ),
                              "protocol-0"),
        # 1.5 million empty lists from 3 MB: 100 MB of objects (1 GB from 30 MB) before the reader sees any of them.
        "tiny_objects": (_raw(pickle.EMPTY_LIST + (pickle.EMPTY_LIST + pickle.APPEND) * 1_500_000),
                         "pickle operations"),
    }
    return [Case(_write(directory / f"{name}.pkl", data), "refused", refusal)
            for name, (data, refusal) in files.items()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("hostile")
    rng = random.Random(SEED)
    marker = directory / "embedded_source_ran"
    cases = {**_blow_up_cases(directory), "mutants": _mutant_cases(directory, marker, rng),
             "huge_shapes": _huge_shape_cases(directory, rng), "shared_references": _shared_reference_cases(directory),
             "interpreter": _interpreter_cases(directory)}
    warmup = directory / "warmup.pkl"
    write_official_pickle(warmup, TINY_INIT_KWARGS, tiny_official_state())
    paths = [case.path for group in cases.values() for case in group]
    return Run(cases, read_in_child(paths, warmup, directory / "child", CHILD_TIMEOUT_S), marker)


def _check(run: Run, case: Case) -> str:
    """Assert what must hold for ``case``; how it ended: "refused", "identical" (to ``case.state``) or "other"."""
    outcome, name = run.outcomes[case.path], case.path.name
    assert outcome.error is None, f"{name}: {outcome.error}"
    assert outcome.code_events == () and not run.marker.exists(), f"{name}: {outcome.code_events}"
    assert outcome.seconds < SECONDS, f"{name} took {outcome.seconds:.1f} s"
    assert outcome.peak_mb < PEAK_MB, f"{name} took {outcome.peak_mb:.0f} MB"
    if outcome.refused is not None:
        assert "\n" not in outcome.refused and str(case.path) in outcome.refused, outcome.refused
        assert case.expect != "exact" and case.refusal in outcome.refused, f"{name}: {outcome.refused}"
        return "refused"
    assert case.expect != "refused" and outcome.network is not None, f"{name} was read"
    network = outcome.network
    state = network["state_dict"]
    for key, tensor in state.items():
        assert tensor.dtype == torch.float32 and tensor.is_contiguous(), f"{name}: {key}"
        if case.expect == "stored":
            assert torch.isin(tensor, case.stored).all(), f"{name}: {key} holds values the file does not store"
    if case.expect == "stored":
        return "other"
    assert list(state) == list(case.state), name
    assert all(torch.equal(tensor, case.state[key]) for key, tensor in state.items()), name
    assert network["init_kwargs"] == case.init_kwargs, name
    return "identical"


@pytest.mark.parametrize(("name", "max_bytes"), [("module_fan_out", 10_000), ("shared_kwargs", 1_000),
                                                 ("storage_views", 600_000)])
def test_tiny_file_that_expanded_into_minutes_and_gigabytes_is_refused(run: Run, name: str, max_bytes: int) -> None:
    """Before the budget: 2**24 module paths walked, 2**24 list copies made, one 512 KiB storage read 256 times."""
    (case,) = run.cases[name]
    assert case.path.stat().st_size < max_bytes
    assert _check(run, case) == "refused"


def test_mutants_are_refused_or_read_from_stored_values(run: Run) -> None:
    endings = [_check(run, case) for case in run.cases["mutants"]]
    # The mutations both break files and leave readable ones, so both branches of the property are exercised.
    assert endings.count("refused") > 50 and endings.count("identical") + endings.count("other") > 10


def test_huge_declared_shapes_are_refused(run: Run) -> None:
    assert all(_check(run, case) == "refused" for case in run.cases["huge_shapes"])


def test_files_that_exhaust_the_unpickler_itself_are_refused(run: Run) -> None:
    """Before: 40 000 colliding int keys (520 KB) took the C unpickler 20 s (n**2), 1.5 M empty lists 100 MB."""
    for case in run.cases["interpreter"]:
        assert _check(run, case) == "refused"


def test_shared_references_read_as_torch_would_or_are_refused(run: Run) -> None:
    """Small expansions read like torch's state_dict() (a shared module under each name); huge ones are refused."""
    for case in run.cases["shared_references"]:
        assert _check(run, case) == ("identical" if case.expect == "exact" else "refused")
