"""Tests of the safe reader for official StyleNeRF checkpoints, on synthetic official-format pickles.

They need no official data (a tiny generator state with official names stands in), so they always run;
only the round trip of the fixture generator is skipped without the parity fixtures.
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from official_pickle_writer import TINY_INIT_KWARGS, tiny_official_state, write_official_pickle

from stylenerf_edit.errors import CheckpointError
from stylenerf_edit.generator.official_pickle import OfficialNetwork, is_official_pickle, read_official_pickle

REPO_ROOT = Path(__file__).resolve().parents[1]

# Spec d.5: every global a released checkpoint references.
OFFICIAL_GLOBALS = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "int"), ("collections", "OrderedDict"),
    ("collections", "defaultdict"), ("typing", "Any"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch.storage", "_load_from_bytes"), ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.container", "ModuleList"), ("torch_utils.persistence", "_reconstruct_persistent_obj"),
    ("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig"), ("omegaconf.nodes", "AnyNode"),
    ("omegaconf.base", "Metadata"), ("omegaconf.base", "ContainerMetadata"),
}
GENERATOR_CLASSES = {
    "Generator", "MappingNetwork", "NeRFSynthesisNetwork", "NeRFBlock", "Style2Layer", "SynthesisBlock",
    "SynthesisLayer", "ToRGBLayer", "Conv2dLayer", "FullyConnectedLayer",
}


@pytest.fixture
def init_kwargs() -> dict:
    return copy.deepcopy(TINY_INIT_KWARGS)


@pytest.fixture(scope="module")
def ordered_state() -> OrderedDict[str, torch.Tensor]:
    """A tiny generator state in official order with official names: every official class, no official data."""
    return tiny_official_state()


@pytest.fixture(scope="module")
def tiny_pickle(tmp_path_factory: pytest.TempPathFactory, ordered_state: OrderedDict[str, torch.Tensor]) -> Path:
    """A synthetic official-format pickle (omegaconf kwargs) of the tiny state; its embedded source raises."""
    path = tmp_path_factory.mktemp("pkl") / "tiny.pkl"
    write_official_pickle(path, TINY_INIT_KWARGS, ordered_state, use_omegaconf=True)
    return path


def _globals_in(path: Path) -> set[tuple[str, str]]:
    """Every global a pickle references, found by unpickling it with inert stand-ins (containers stay real)."""
    class Anything:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __setstate__(self, state: object) -> None:
            pass

    found: set[tuple[str, str]] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> type:
            found.add((module, name))
            containers = {("collections", "OrderedDict"): OrderedDict, ("collections", "defaultdict"): defaultdict}
            return containers.get((module, name), Anything)

    with path.open("rb") as file:
        Recorder(file).load()
    return found


def _refusal(path: Path, **kwargs: object) -> str:
    with pytest.raises(CheckpointError) as caught:
        read_official_pickle(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def _assert_same_state(read: OrderedDict[str, torch.Tensor], expected: OrderedDict[str, torch.Tensor]) -> None:
    assert list(read) == list(expected)
    for key, tensor in read.items():
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu" and tensor.is_contiguous(), key
        assert torch.equal(tensor, expected[key]), key


@pytest.mark.parametrize("use_omegaconf", [False, True], ids=["plain_dict", "omegaconf"])
def test_round_trip_returns_the_written_generator(tmp_path: Path, init_kwargs: dict,
                                                  ordered_state: OrderedDict[str, torch.Tensor],
                                                  use_omegaconf: bool) -> None:
    path = tmp_path / "ffhq.pkl"
    source = "raise SystemExit('not to be run')  # training/networks.py"
    write_official_pickle(path, init_kwargs, ordered_state, use_omegaconf=use_omegaconf,
                          module_src=source)

    network = read_official_pickle(path)

    assert isinstance(network, OfficialNetwork)
    assert network.class_name == "Generator"
    assert network.init_args == ()
    assert network.init_kwargs == init_kwargs
    assert type(network.init_kwargs["synthesis_kwargs"]["camera_kwargs"]["range_v"]) is list
    assert len(network.state_dict) == len(ordered_state)
    _assert_same_state(network.state_dict, ordered_state)
    assert network.module_src_sha256 == dict.fromkeys(GENERATOR_CLASSES, hashlib.sha256(source.encode()).hexdigest())


def test_written_pickle_references_exactly_the_official_globals(tiny_pickle: Path, tmp_path: Path,
                                                                init_kwargs: dict,
                                                                ordered_state: OrderedDict[str, torch.Tensor]) -> None:
    """The synthetic file must look like a released one, or the other tests prove little."""
    assert _globals_in(tiny_pickle) == OFFICIAL_GLOBALS
    names = ("torch_utils", "torch_utils.persistence", "numpy.core", "numpy.core.multiarray")
    modules_before = {name: sys.modules.get(name) for name in names}
    plain = tmp_path / "plain.pkl"
    write_official_pickle(plain, init_kwargs, ordered_state)
    assert ("numpy.core.multiarray", "scalar") in _globals_in(plain) < OFFICIAL_GLOBALS
    assert {name: sys.modules.get(name) for name in names} == modules_before  # stand-in modules removed again


def test_key_g_returns_the_training_weights(tmp_path: Path, init_kwargs: dict,
                                            ordered_state: OrderedDict[str, torch.Tensor]) -> None:
    training = OrderedDict((key, tensor * 2 + 1) for key, tensor in ordered_state.items())
    path = tmp_path / "ffhq.pkl"
    write_official_pickle(path, init_kwargs, ordered_state, training_state_dict=training)

    _assert_same_state(read_official_pickle(path, key="G").state_dict, training)
    _assert_same_state(read_official_pickle(path).state_dict, ordered_state)


def test_numpy_scalars_in_kwargs_become_python_numbers(tmp_path: Path,
                                                       ordered_state: OrderedDict[str, torch.Tensor]) -> None:
    """Plain numpy scalars pickle under the running numpy's name (``numpy._core`` since numpy 2); both are read."""
    path = tmp_path / "ffhq.pkl"
    write_official_pickle(path, {"z_dim": np.int64(512), "gain": np.float64(0.25)}, ordered_state)
    assert (np.float64(0).__reduce__()[0].__module__, "scalar") in _globals_in(path)

    kwargs = read_official_pickle(path).init_kwargs

    assert kwargs == {"z_dim": 512, "gain": 0.25}
    assert type(kwargs["z_dim"]) is int and type(kwargs["gain"]) is float


def test_embedded_source_is_never_executed(tmp_path: Path, init_kwargs: dict,
                                           ordered_state: OrderedDict[str, torch.Tensor]) -> None:
    marker = tmp_path / "source_was_executed"
    source = (f"import pathlib; pathlib.Path({str(marker)!r}).write_text('executed')\n"
              "raise SystemExit('embedded module source must never be executed')\n")
    path = tmp_path / "ffhq.pkl"
    write_official_pickle(path, init_kwargs, ordered_state, use_omegaconf=True, module_src=source)

    network = read_official_pickle(path)

    assert not marker.exists()
    assert network.module_src_sha256["Generator"] == hashlib.sha256(source.encode()).hexdigest()


def test_reader_imports_no_official_or_config_modules(tiny_pickle: Path,
                                                     ordered_state: OrderedDict[str, torch.Tensor]) -> None:
    """In a fresh interpreter, reading must not import torch_utils, training, dnnlib or omegaconf."""
    script = """
import importlib.util, json, sys
import stylenerf_edit.generator
before = set(sys.modules)
from stylenerf_edit.generator.official_pickle import read_official_pickle
network = read_official_pickle(sys.argv[1])
official = [m for m in sys.modules
            if m.split('.')[0] in {'torch_utils', 'training', 'dnnlib'} or m.startswith('_imported_module_')]
config = [m for m in set(sys.modules) - before if m.split('.')[0] == 'omegaconf']
print(json.dumps({'entries': len(network.state_dict), 'official': official, 'config': config,
                  'omegaconf_importable': importlib.util.find_spec('omegaconf') is not None}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", script, str(tiny_pickle)], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"entries": len(ordered_state), "official": [], "config": [], "omegaconf_importable": True}


@pytest.mark.parametrize("function", [os.system, builtins.eval], ids=["os.system", "builtins.eval"])
def test_forbidden_global_is_refused(tmp_path: Path, init_kwargs: dict,
                                     ordered_state: OrderedDict[str, torch.Tensor], function) -> None:
    marker = tmp_path / "payload_ran"
    argument = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "ffhq.pkl"
    write_official_pickle(path, init_kwargs, ordered_state,
                          extra_globals={"payload": (function, (argument,))})
    pickled_name = f"{function.__module__}.{function.__qualname__}"  # os.system pickles as posix.system

    message = _refusal(path)

    assert f"refusing to load global '{pickled_name}'" in message
    assert "only load checkpoints from sources you trust" in message
    assert not marker.exists()


@pytest.mark.parametrize(("offset", "size", "stride"), [(2, (4,), (1,)), (0, (10**9,), (0,))],
                         ids=["past_the_end", "zero_stride_expansion"])
def test_tensor_reaching_past_its_storage_is_refused(tmp_path: Path, init_kwargs: dict,
                                                     ordered_state: OrderedDict[str, torch.Tensor],
                                                     offset: int, size: tuple, stride: tuple) -> None:
    """torch's own set_ would silently grow the storage (uninitialised memory) or expand it into a huge copy."""
    storage = torch.zeros(4)._typed_storage()
    bad_view = (torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, OrderedDict()))
    path = tmp_path / "ffhq.pkl"
    write_official_pickle(path, init_kwargs, ordered_state,
                          extra_globals={"synthesis.fg_nerf.fc_in.bias": bad_view})

    assert f"synthesis.fg_nerf.fc_in.bias of size {list(size)} reaches past its storage of 4 elements" in _refusal(path)


def test_state_applied_to_a_rebuilt_tensor_is_refused(tmp_path: Path, init_kwargs: dict,
                                                      ordered_state: OrderedDict[str, torch.Tensor]) -> None:
    """pickle BUILD on a real tensor would reach Tensor.__setstate__, whose set_ skips every check."""
    storage = torch.zeros(4)._typed_storage()
    regrown = (torch._utils._rebuild_tensor_v2, (storage, 0, (4,), (1,), False, OrderedDict()),
               (storage, 0, (100_000,), (1,)))
    path = tmp_path / "ffhq.pkl"
    write_official_pickle(path, init_kwargs, ordered_state,
                          extra_globals={"synthesis.alpha": regrown})

    assert "pickled state applied to a rebuilt tensor" in _refusal(path)


def test_corrupt_storage_bytes_are_reported(tmp_path: Path, init_kwargs: dict,
                                            ordered_state: OrderedDict[str, torch.Tensor]) -> None:
    class LegacyStorage:
        """Pickles like a storage, but with bytes that are no torch.save stream."""

        def __reduce__(self) -> tuple:
            return torch.storage._load_from_bytes, (b"\x80\x02K\x07.not a torch stream",)

    corrupt = (torch._utils._rebuild_tensor_v2, (LegacyStorage(), 0, (), (), False, OrderedDict()))
    path = tmp_path / "ffhq.pkl"
    write_official_pickle(path, init_kwargs, ordered_state, extra_globals={"synthesis.alpha": corrupt})

    message = _refusal(path)
    assert "corrupt tensor storage" in message and "download it again" in message


def test_persistent_id_is_refused(tmp_path: Path) -> None:
    class WithPersistentId(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return "external-storage" if obj == "G_ema-payload" else None

    buffer = io.BytesIO()
    WithPersistentId(buffer, protocol=4).dump({"G_ema": "G_ema-payload"})
    path = tmp_path / "ffhq.pkl"
    path.write_bytes(buffer.getvalue())

    assert "refusing persistent id 'external-storage'" in _refusal(path)


def test_missing_file(tmp_path: Path) -> None:
    message = _refusal(tmp_path / "ffhq_256.pkl")
    assert "no such file" in message and "stylenerf-edit download" in message


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(64), b"just some text\n", b""],
                         ids=["png", "text", "empty"])
def test_non_pickle_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ffhq.pkl"
    path.write_bytes(content)

    assert not is_official_pickle(path)
    message = _refusal(path)
    assert ("the file is empty" if not content else "not a pickle file") in message


def test_truncated_pickle(tmp_path: Path, tiny_pickle: Path) -> None:
    data = tiny_pickle.read_bytes()
    path = tmp_path / "ffhq.pkl"
    path.write_bytes(data[: len(data) // 2])

    assert is_official_pickle(path)
    message = _refusal(path)
    assert "truncated or corrupt" in message and "download it again" in message


def test_missing_key_lists_the_entries(tiny_pickle: Path) -> None:
    message = _refusal(tiny_pickle, key="G_ema_fp16")
    assert "has no 'G_ema_fp16' entry" in message
    assert "'training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe'" in message


def test_other_persistence_version_is_refused(tmp_path: Path, init_kwargs: dict,
                                              ordered_state: OrderedDict[str, torch.Tensor]) -> None:
    path = tmp_path / "ffhq.pkl"
    write_official_pickle(path, init_kwargs, ordered_state, persistence_version=5)

    message = _refusal(path)
    assert "torch_utils.persistence version 5" in message and "version 6" in message


@pytest.mark.parametrize(("content", "expected"), [
    ([1, 2, 3], "holds a list, not the dict of networks"),
    ({"G_ema": {"weight": [1.0]}}, "entry 'G_ema' is a dict, not a persistent network"),
], ids=["top_level_list", "plain_g_ema"])
def test_wrong_structure(tmp_path: Path, content: object, expected: str) -> None:
    path = tmp_path / "ffhq.pkl"
    path.write_bytes(pickle.dumps(content, protocol=4))

    assert expected in _refusal(path)


def test_sniff_accepts_official_pickles(tiny_pickle: Path, tmp_path: Path) -> None:
    assert is_official_pickle(tiny_pickle)
    assert not is_official_pickle(tmp_path / "missing.pkl")


def test_fixture_generator_reads_back_in_official_order(fixture_pickle: Path, fixture_dir: Path,
                                                        official_state: dict[str, torch.Tensor]) -> None:
    """The parity fixture's generator (134 tensors, official kwargs) round-trips through the writer and reader."""
    info = json.loads((fixture_dir / "g_init_kwargs.json").read_text())

    network = read_official_pickle(fixture_pickle)

    assert network.init_kwargs == info["init_kwargs"]
    assert len(info["state_dict_keys"]) == 134
    _assert_same_state(network.state_dict, OrderedDict((key, official_state[key]) for key in info["state_dict_keys"]))
