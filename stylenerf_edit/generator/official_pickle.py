"""Safe reader for official StyleNeRF ``.pkl`` checkpoints.

Official checkpoints rebuild their networks by executing Python source embedded in the file
(``torch_utils.persistence``), so loading them the official way runs arbitrary code and needs the
official repository importable. This reader allows only the globals that real checkpoints reference,
maps each to an inert local stand-in, never runs or compiles the embedded source, and returns what is
needed to build our own generator: its constructor arguments and its state dict. A pickle can reference one
object from many places, so the reader also bounds what a file may expand into: the modules, tensors and
constructor values visited, the length of names, and the float32 bytes materialised (each tensor once).
Unpickling itself is bounded too: the operations of a file are counted, and keys whose hashes a file could
make collide (big ints, floats, tuples) are refused before they enter a dict.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import math
import os
import pickle
import struct
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from stylenerf_edit.errors import CheckpointError

__all__ = ["OfficialNetwork", "is_official_pickle", "read_official_pickle"]

_PERSISTENCE_VERSION = 6  # torch_utils.persistence format of every released StyleNeRF checkpoint
_MAX_MODULE_DEPTH = 32  # real generators nest 5 deep; the bound keeps hostile files from recursing forever
_MAX_ARGUMENT_DEPTH = 64  # real constructor arguments nest about 12 objects deep (omegaconf nodes included)
# Modules, tensors and argument values one read may visit: real generators have under 1000. A few bytes of
# pickle can reference one object from many places, so without a count a tiny file expands exponentially.
_MAX_NODES = 50_000
# Pickle operations of one file; each makes at most one small object. A 128-px generator with G and G_ema
# takes 36 000, a 1024-px checkpoint (G, D, G_ema) a few times that.
_MAX_OPCODES = 1_000_000
_MAX_NAME_CHARS = 512  # of a dotted state-dict name; real ones have under 60, and every shared path copies them
# The float32 weights of a real file take at most 2x its size (float16 storages); 4x admits 8-bit floats.
# Views of one storage pickle it once, so without this bound a small file could expand into gigabytes.
_FLOAT32_BYTES_PER_FILE_BYTE = 4
_REDOWNLOAD = "delete it and download it again (e.g. `stylenerf-edit download ffhq_256`)"
_NOT_OFFICIAL = f"it is not an official StyleNeRF checkpoint or it is damaged: {_REDOWNLOAD}"
_DECODE_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
    AttributeError, RuntimeError, struct.error, OverflowError, MemoryError,
)


@dataclass
class OfficialNetwork:
    """One network of an official checkpoint, as plain data (no official classes involved)."""

    class_name: str
    init_args: tuple
    init_kwargs: dict
    state_dict: OrderedDict[str, torch.Tensor]
    module_src_sha256: dict[str, str]


class _Malformed(Exception):
    """Internal: what is wrong with the file, phrased for the user; the reader prefixes the path."""


class _Sealed:
    """Base of the reader's own records: pickle BUILD on them is refused.

    Without this a file could apply state to a rebuilt object; on a real tensor that reaches
    ``Tensor.__setstate__`` and an unchecked ``set_``.
    """

    def __setstate__(self, state: Any) -> None:
        raise _Malformed("pickled state applied to a rebuilt tensor, storage or persistent object "
                         f"(official checkpoints never do that); {_NOT_OFFICIAL}")


@dataclass
class _PersistentRecord(_Sealed):
    """Stand-in for a ``torch_utils.persistence`` object: class name and pickled state, source only hashed."""

    class_name: str
    state: Any
    module_src_sha256: str


class _Stub:
    """Inert stand-in for an allowed class: created without arguments, it only keeps the pickled state."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _TorchContainer(_Stub):
    """Stand-in for a non-persistent torch container module; its state is an ``nn.Module.__dict__``."""

    class_name = ""


class _Sequential(_TorchContainer):
    class_name = "Sequential"


class _ModuleList(_TorchContainer):
    class_name = "ModuleList"


class _DictConfig(_Stub):
    """omegaconf DictConfig: the values are the nodes in ``state['_content']``."""


class _ListConfig(_Stub):
    """omegaconf ListConfig: the items are the nodes in ``state['_content']``."""


class _AnyNode(_Stub):
    """omegaconf AnyNode: the value is ``state['_val']``."""


class _OmegaconfMetadata(_Stub):
    """omegaconf Metadata/ContainerMetadata: typing information the reader ignores."""


class _TypingAny:
    """Placeholder for ``typing.Any``, which only occurs inside omegaconf metadata."""


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = True) -> np.dtype:
    """Rebuild a numpy dtype, accepting only the string form that numpy itself pickles."""
    if not isinstance(spec, str):
        raise _Malformed(f"malformed numpy dtype {spec!r:.60}; {_NOT_OFFICIAL}")
    return np.dtype(spec, bool(align), bool(copy))


def _numpy_scalar(dtype: Any, raw: Any) -> np.generic:
    """Rebuild a numeric numpy scalar from its raw bytes; object dtypes would mean arbitrary objects."""
    if not (isinstance(dtype, np.dtype) and dtype.kind in "biufc" and isinstance(raw, bytes)
            and len(raw) == dtype.itemsize):
        raise _Malformed(f"malformed numpy scalar ({dtype!r:.40}, {raw!r:.40}); {_NOT_OFFICIAL}")
    return np.frombuffer(raw, dtype=dtype)[0]


class _StorageBytes(_Sealed):
    """One storage as pickled: a legacy (non-zip) ``torch.save`` stream, parsed only when a tensor needs it."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @functools.cached_property
    def storage(self) -> torch.storage.TypedStorage:
        """The storage, parsed with torch's restricted (weights-only) loader."""
        try:
            storage = torch.load(io.BytesIO(self._data), map_location="cpu", weights_only=True)
        except _DECODE_ERRORS as error:
            detail = f"{type(error).__name__}: {error!s:.200}"
            raise _Malformed(f"corrupt tensor storage ({detail}); {_REDOWNLOAD}") from error
        if not isinstance(storage, torch.storage.TypedStorage):
            raise _Malformed(f"malformed tensor storage (decoded to {type(storage).__name__}); {_NOT_OFFICIAL}")
        return storage


class _TensorRef(_Sealed):
    """A pickled tensor: storage and view geometry, materialised only for the requested network."""

    def __init__(self, storage: _StorageBytes, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def view(self, name: str) -> torch.Tensor:
        """A view of the storage (nothing copied), bounds checked first: ``Tensor.set_`` grows short storages."""
        storage = self.storage.storage
        if not storage.dtype.is_floating_point:
            raise _Malformed(f"{name} is a {storage.dtype} tensor, not a floating-point one; {_NOT_OFFICIAL}")
        tensor = torch.empty((0,), dtype=storage.dtype)
        available = storage._untyped_storage.nbytes() // tensor.element_size()  # TypedStorage.size() warns
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if 0 not in self.size and (last >= available or math.prod(self.size) > available):
            # The element count bound also stops zero strides from expanding a few bytes into a huge copy.
            raise _Malformed(f"{name} of size {list(self.size)} reaches past its storage of {available} elements; "
                             f"{_NOT_OFFICIAL}")
        return tensor.set_(storage._untyped_storage, self.offset, self.size, self.stride)


@dataclass
class _Reading:
    """What reading one network may still spend, and each pickled tensor materialised once."""

    bytes_limit: int
    nodes_left: int = _MAX_NODES
    bytes_left: int = field(init=False)
    tensors: dict[_TensorRef, torch.Tensor] = field(default_factory=dict)  # keyed by identity

    def __post_init__(self) -> None:
        self.bytes_left = self.bytes_limit

    def visit(self, where: str, count: int = 1) -> None:
        """Count ``count`` modules, tensors or constructor values; refuse the file past the limit."""
        self.nodes_left -= count
        if self.nodes_left < 0:
            raise _Malformed(f"more than {_MAX_NODES} modules, tensors and constructor values (limit reached at "
                             f"{where}: the same objects referenced over and over); {_NOT_OFFICIAL}")

    def tensor(self, ref: _TensorRef, name: str) -> torch.Tensor:
        """``ref`` as float32, materialised only the first time, checked against the byte budget first."""
        if ref not in self.tensors:
            view = ref.view(name)
            nbytes = 4 * view.numel()
            if nbytes > self.bytes_left:
                raise _Malformed(f"float32 weights over the limit of {self.bytes_limit} bytes "
                                 f"({_FLOAT32_BYTES_PER_FILE_BYTE}x the file's size) at {name} "
                                 f"(views of one storage repeated?); {_NOT_OFFICIAL}")
            self.tensors[ref] = view.to(torch.float32).contiguous()
            self.bytes_left -= nbytes
        return self.tensors[ref]


def _load_storage(data: Any) -> _StorageBytes:
    if not isinstance(data, bytes):
        raise _Malformed(f"malformed tensor storage (expected bytes, got {type(data).__name__}); {_NOT_OFFICIAL}")
    return _StorageBytes(data)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> _TensorRef:
    """Record a tensor; ``requires_grad``, hooks and metadata do not matter for reading weights."""
    geometry_ok = (
        isinstance(storage, _StorageBytes)
        and isinstance(storage_offset, int) and storage_offset >= 0
        and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
        and all(isinstance(n, int) and n >= 0 for n in size + stride)
    )
    if not geometry_ok:
        raise _Malformed(f"malformed tensor ({storage_offset!r:.20}, {size!r:.40}, {stride!r:.40}); {_NOT_OFFICIAL}")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> _TensorRef:
    """Parameters only matter for their values, so the tensor stands in for the Parameter."""
    if not isinstance(data, _TensorRef):
        raise _Malformed(f"malformed parameter ({type(data).__name__} instead of a tensor); {_NOT_OFFICIAL}")
    return data


# The globals of an official checkpoint (spec d.5) and their inert stand-ins. numpy >= 2 names the scalar
# constructor ``numpy._core.multiarray.scalar``; the old name is what released checkpoints contain.
_PERSISTENT_GLOBAL = ("torch_utils.persistence", "_reconstruct_persistent_obj")
_SAFE_GLOBALS = MappingProxyType({
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "int"): int,
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "defaultdict"): defaultdict,
    ("typing", "Any"): _TypingAny,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch.nn.modules.container", "Sequential"): _Sequential,
    ("torch.nn.modules.container", "ModuleList"): _ModuleList,
    ("omegaconf.dictconfig", "DictConfig"): _DictConfig,
    ("omegaconf.listconfig", "ListConfig"): _ListConfig,
    ("omegaconf.nodes", "AnyNode"): _AnyNode,
    ("omegaconf.base", "Metadata"): _OmegaconfMetadata,
    ("omegaconf.base", "ContainerMetadata"): _OmegaconfMetadata,
})


_HASHED_INT_LIMIT = 2 ** 61 - 1  # Python hashes an int modulo this prime: smaller ints never share a hash
_HASHING_CONTAINERS = (dict, OrderedDict, defaultdict)


def _check_hashed(key: Any) -> None:
    """Refuse a dict key or set member whose hash a file could choose to collide with others'.

    Checkpoints key their dicts with strings (hashed with the process's random key). Big ints, floats and
    tuples can be crafted to share one hash, which makes building a dict of N of them cost N^2.
    """
    if type(key) is str or key is None or type(key) is bool:
        return
    if type(key) is int and -_HASHED_INT_LIMIT < key < _HASHED_INT_LIMIT:
        return
    if type(key).__hash__ is object.__hash__ or isinstance(key, type):  # identity hashes cannot be chosen
        return
    raise _Malformed(f"a dict key or set member of type {type(key).__name__} (official checkpoints key them "
                     f"with strings); {_NOT_OFFICIAL}")


def _check_call(func: Any, args: Any, kwargs: Any = None) -> None:
    """Dicts are rebuilt empty and filled item by item (so that every key is checked), or from a factory."""
    if isinstance(func, type) and issubclass(func, _HASHING_CONTAINERS):
        factory_only = func is defaultdict and len(args) == 1 and (args[0] is None or callable(args[0]))
        if (args and not factory_only) or kwargs:
            raise _Malformed(f"{func.__name__} built from arguments (official checkpoints fill containers item by "
                             f"item); {_NOT_OFFICIAL}")


def _checked_op(op: Callable[["_SafeUnpickler"], None]) -> Callable[["_SafeUnpickler"], None]:
    """An opcode handler that first counts the opcode against the file's budget."""
    @functools.wraps(op)
    def counted(self: "_SafeUnpickler") -> None:
        self.ops_left -= 1
        if self.ops_left < 0:
            raise _Malformed(f"more than {_MAX_OPCODES} pickle operations (official checkpoints need far fewer: "
                             f"a file of many tiny objects); {_NOT_OFFICIAL}")
        op(self)
    return counted


class _SafeUnpickler(pickle._Unpickler):
    """Unpickler that resolves only the allow-listed globals and turns persistent objects into records.

    It runs Python's reference unpickler, with every operation counted and every operation that hashes
    a key or calls a constructor checked first, which the C unpickler does not allow.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.ops_left = _MAX_OPCODES
        self._sha256_by_src: dict[str, str] = {}  # the same source string backs many records

    def _pop_items(self) -> list:
        items = self.pop_mark()
        for key in items:
            _check_hashed(key)
        return items

    def _load_dict(self) -> None:
        items = self.pop_mark()
        for key in items[::2]:
            _check_hashed(key)
        self.append(dict(zip(items[::2], items[1::2])))

    def _load_setitem(self) -> None:
        _check_hashed(self.stack[-2])
        value, key = self.stack.pop(), self.stack.pop()
        self.stack[-1][key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        for key in items[::2]:
            _check_hashed(key)
        target = self.stack[-1]
        for key, value in zip(items[::2], items[1::2]):
            target[key] = value

    def _load_additems(self) -> None:
        items, target = self._pop_items(), self.stack[-1]
        if not isinstance(target, set):
            raise _Malformed(f"set items added to a {type(target).__name__}; {_NOT_OFFICIAL}")
        target.update(items)

    def _load_frozenset(self) -> None:
        self.append(frozenset(self._pop_items()))

    def _load_put(self) -> None:
        index = int(self.readline()[:-1])
        if not 0 <= index < 2 ** 32:  # the memo is a dict: huge indices could be made to collide
            raise _Malformed(f"memo index {str(index):.60} out of range; {_NOT_OFFICIAL}")
        self.memo[index] = self.stack[-1]

    def _load_reduce(self) -> None:
        _check_call(self.stack[-2], self.stack[-1])
        pickle._Unpickler.load_reduce(self)

    def _load_newobj(self) -> None:
        _check_call(self.stack[-2], self.stack[-1])
        pickle._Unpickler.load_newobj(self)

    def _load_newobj_ex(self) -> None:
        _check_call(self.stack[-3], self.stack[-2], self.stack[-1])
        pickle._Unpickler.load_newobj_ex(self)

    def _refuse_protocol_0_object(self) -> None:
        raise _Malformed(f"a protocol-0 object construction (official checkpoints use protocol 2 or newer); "
                         f"{_NOT_OFFICIAL}")

    for _opcode, _handler in ((pickle.DICT, _load_dict), (pickle.SETITEM, _load_setitem),
                              (pickle.SETITEMS, _load_setitems), (pickle.ADDITEMS, _load_additems),
                              (pickle.FROZENSET, _load_frozenset), (pickle.PUT, _load_put),
                              (pickle.REDUCE, _load_reduce), (pickle.NEWOBJ, _load_newobj),
                              (pickle.NEWOBJ_EX, _load_newobj_ex), (pickle.OBJ, _refuse_protocol_0_object),
                              (pickle.INST, _refuse_protocol_0_object)):
        dispatch[_opcode[0]] = _handler
    dispatch = {opcode: _checked_op(handler) for opcode, handler in dispatch.items()}
    del _opcode, _handler

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _PERSISTENT_GLOBAL:
            return self._reconstruct_persistent
        try:
            return _SAFE_GLOBALS[module, name]
        except KeyError:
            raise _Malformed(
                f"refusing to load global '{module}.{name}' (not part of an official StyleNeRF checkpoint); "
                "only load checkpoints from sources you trust"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Malformed(f"refusing persistent id {pid!r:.60} (official StyleNeRF checkpoints use none); "
                         "only load checkpoints from sources you trust")

    def _reconstruct_persistent(self, meta: Any) -> _PersistentRecord:
        """Record a persistent object instead of executing its embedded module source."""
        if not isinstance(meta, dict):
            raise _Malformed(f"malformed persistent object ({type(meta).__name__} metadata); {_NOT_OFFICIAL}")
        class_name, version, source = meta.get("class_name"), meta.get("version"), meta.get("module_src")
        if meta.get("type") != "class" or version != _PERSISTENCE_VERSION:
            raise _Malformed(
                f"persistent object {class_name!r:.60} has type {meta.get('type')!r:.20} and "
                f"torch_utils.persistence version {version!r:.20}, but this reader understands only "
                f"type 'class' version {_PERSISTENCE_VERSION} (the format of the released StyleNeRF checkpoints); "
                f"use an official checkpoint (e.g. `stylenerf-edit download ffhq_256`)"
            )
        if not isinstance(class_name, str) or not isinstance(source, str):
            raise _Malformed(f"persistent object without class name or module source; {_NOT_OFFICIAL}")
        if source not in self._sha256_by_src:
            self._sha256_by_src[source] = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        return _PersistentRecord(class_name, meta.get("state"), self._sha256_by_src[source])


def _has_pickle_header(head: bytes) -> bool:
    """Official checkpoints are binary pickles: PROTO opcode followed by protocol 2 or newer."""
    return len(head) >= 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def is_official_pickle(path: str | Path) -> bool:
    """Cheap sniff (two bytes) for a binary pickle, to tell official ``.pkl`` files from other formats."""
    try:
        with Path(path).open("rb") as file:
            return _has_pickle_header(file.read(2))
    except OSError:
        return False


def _unpickle(path: Path) -> tuple[Any, int]:
    """The unpickled file (stand-ins instead of official objects) and its size in bytes."""
    try:
        with path.open("rb") as file:
            head = file.read(8)
            if not head:
                raise _Malformed(f"the file is empty; {_REDOWNLOAD}")
            if not _has_pickle_header(head):
                raise _Malformed(f"not a pickle file (it starts with {head!r}); pass an official StyleNeRF "
                                 "checkpoint such as ffhq_256.pkl (`stylenerf-edit download ffhq_256`)")
            file.seek(0)
            return _SafeUnpickler(file).load(), os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        raise _Malformed("no such file; download a checkpoint with `stylenerf-edit download ffhq_256` "
                         "or pass the path of an existing .pkl") from None
    except OSError as error:
        raise _Malformed(f"cannot be read ({error.strerror or error}); check the path and its permissions") from error
    except _DECODE_ERRORS as error:
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise _Malformed(f"truncated or corrupt pickle ({detail:.200}); {_REDOWNLOAD}") from error


def _name(prefix: str, name: str) -> str:
    """``prefix + name``, refused when long: hostile names would be copied into every path of a shared module."""
    if len(prefix) + len(name) > _MAX_NAME_CHARS:
        raise _Malformed(f"a parameter or module name under {prefix[:60]!r} is longer than {_MAX_NAME_CHARS} "
                         f"characters; {_NOT_OFFICIAL}")
    return prefix + name


def _collect_state(node: _PersistentRecord | _TorchContainer, prefix: str, depth: int, reading: _Reading,
                   state_dict: OrderedDict[str, torch.Tensor], hashes: dict[str, str]) -> None:
    """Gather parameters and persistent buffers in ``nn.Module.state_dict()`` order (own tensors, then children).

    A module referenced from several places appears under each of its names, as in torch; ``reading``
    bounds how many names that may add up to and materialises each shared tensor once.
    """
    where = prefix.rstrip(".") or "the network"
    if depth > _MAX_MODULE_DEPTH:
        raise _Malformed(f"modules nested deeper than {_MAX_MODULE_DEPTH} levels at {where}; {_NOT_OFFICIAL}")
    state = node.state
    groups = [state.get(group) if isinstance(state, dict) else None
              for group in ("_parameters", "_buffers", "_modules")]
    if not all(isinstance(group, dict) for group in groups):
        raise _Malformed(f"{where} ({node.class_name:.60}) does not hold a torch module state; {_NOT_OFFICIAL}")
    reading.visit(where, 1 + sum(len(group) for group in groups))  # every entry is looked at on every path
    parameters, buffers, modules = groups
    if isinstance(node, _PersistentRecord):
        hashes.setdefault(node.class_name, node.module_src_sha256)
    non_persistent = state.get("_non_persistent_buffers_set", set())
    if not isinstance(non_persistent, (set, frozenset)) or not all(isinstance(name, str) for group in groups
                                                                   for name in group):
        raise _Malformed(f"{where} ({node.class_name:.60}) has a malformed module state; {_NOT_OFFICIAL}")
    persistent_buffers = {name: value for name, value in buffers.items() if name not in non_persistent}
    for name, tensor in [*parameters.items(), *persistent_buffers.items()]:
        if tensor is None:
            continue
        key = _name(prefix, name)
        if not isinstance(tensor, _TensorRef):
            raise _Malformed(f"{key} is a {type(tensor).__name__}, not a tensor; {_NOT_OFFICIAL}")
        state_dict[key] = reading.tensor(tensor, key)
    for name, child in modules.items():
        if child is None:
            continue
        key = _name(prefix, name)
        if not isinstance(child, (_PersistentRecord, _TorchContainer)):
            raise _Malformed(f"submodule {key} is a {type(child).__name__}, not a persistent module; {_NOT_OFFICIAL}")
        _collect_state(child, key + ".", depth + 1, reading, state_dict, hashes)


def _plain(value: Any, reading: _Reading, depth: int = 0) -> Any:
    """Turn omegaconf stand-ins and numpy scalars into the plain Python values they represent.

    Shared references become copies (callers expect a plain tree), so ``reading`` counts every copied value.
    """
    reading.visit("the constructor arguments")
    if depth > _MAX_ARGUMENT_DEPTH:
        raise _Malformed(f"constructor arguments nested deeper than {_MAX_ARGUMENT_DEPTH} levels (or cyclic); "
                         f"{_NOT_OFFICIAL}")

    def plain(item: Any) -> Any:
        return _plain(item, reading, depth + 1)

    if isinstance(value, (_DictConfig, _ListConfig)):
        content = value.state.get("_content") if isinstance(value.state, dict) else None
        if isinstance(value, _DictConfig) and isinstance(content, dict):
            return {key: plain(item) for key, item in content.items()}
        if isinstance(value, _ListConfig) and isinstance(content, list):
            return [plain(item) for item in content]
        if content is None:
            return None
        raise _Malformed(f"unsupported omegaconf value {content!r:.60} in the constructor arguments; {_NOT_OFFICIAL}")
    if isinstance(value, _AnyNode):
        if not isinstance(value.state, dict):
            raise _Malformed(f"malformed omegaconf node in the constructor arguments; {_NOT_OFFICIAL}")
        return plain(value.state.get("_val"))
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (_Stub, _Sealed, type)):
        raise _Malformed(f"unexpected {type(value).__name__} in the constructor arguments; {_NOT_OFFICIAL}")
    return value


def _network(data: Any, key: str, reading: _Reading) -> OfficialNetwork:
    if not isinstance(data, dict):
        raise _Malformed(f"holds a {type(data).__name__}, not the dict of networks an official checkpoint holds; "
                         f"{_NOT_OFFICIAL}")
    if key not in data:
        names = [f"{name!r:.40}" for name in itertools.islice(data, 10)]  # a hostile file may hold millions
        available = ", ".join(names + ["..."] * (len(data) > 10)) or "none"
        raise _Malformed(f"has no {key!r} entry (entries: {available}); ask for one of those "
                         "(the generator is 'G_ema')")
    record = data[key]
    if not isinstance(record, _PersistentRecord):
        raise _Malformed(f"entry {key!r} is a {type(record).__name__}, not a persistent network; {_NOT_OFFICIAL}")
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    hashes: dict[str, str] = {}
    _collect_state(record, "", 0, reading, state_dict, hashes)
    init_args = _plain(record.state.get("_init_args", ()), reading)
    init_kwargs = _plain(record.state.get("_init_kwargs", {}), reading)
    if not isinstance(init_args, (tuple, list)) or not isinstance(init_kwargs, dict):
        raise _Malformed(f"entry {key!r} has malformed constructor arguments; {_NOT_OFFICIAL}")
    return OfficialNetwork(record.class_name, tuple(init_args), init_kwargs, state_dict, hashes)


def read_official_pickle(path: str | Path, key: str = "G_ema") -> OfficialNetwork:
    """Read network ``key`` of an official StyleNeRF checkpoint without executing anything from the file.

    ``G_ema`` is the generator every official app uses; ``G`` holds the raw training weights.
    Raises CheckpointError (one line, naming the file and what to do) for every kind of bad file, including
    files whose shared references would expand beyond the limits on visited objects and float32 bytes.
    """
    path = Path(path)
    try:
        data, size = _unpickle(path)
        return _network(data, key, _Reading(_FLOAT32_BYTES_PER_FILE_BYTE * size))
    except _Malformed as error:
        message = " ".join(f"{path}: {error}".split())
        raise CheckpointError(message) from error.__cause__
