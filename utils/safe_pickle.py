"""Loading pickles from the internet without running their code.

A pickle names the globals (functions, classes) it needs and the unpickler imports and calls
them: ``pickle.load`` on an untrusted file can run anything (``os.system``...).  The dataset
annotations we read (SLRT / Phoenix-2014T / CSL-Daily ``*.train`` files, ``gloss2ids.pkl``)
only hold plain containers, strings, numbers and placeholder tensors, so `load_pickle`
admits exactly those globals and refuses every other one *before* it could be called.

Admitted globals:
  * ``builtins`` scalar and container types (``set``, ``frozenset``, ``complex`` ...;
    ``dict``/``list``/``tuple``/``str``/``int``/``float`` usually need no global at all),
    ``collections.OrderedDict`` (a tensor's empty backward-hook dict), and
    ``_codecs.encode(str, 'latin1')`` and ``bytes()``, the way protocols 0-2 spell bytes;
  * torch's tensor rebuild functions ``torch._utils._rebuild_tensor_v2`` and
    ``torch._utils._rebuild_tensor`` (wrapped: a tensor may not bring backward hooks);
  * torch storage types and dtypes (``torch.FloatStorage``, ``torch.float32`` ...);
  * ``torch.storage._load_from_bytes``, replaced by a version that reads the embedded
    ``torch.save`` bytes with ``torch.load(..., weights_only=True)``;
  * ``torch.zeros`` / ``torch.empty``, wrapped to accept only a small shape: the demo corpora
    of ``dataset.synthetic`` pickle their empty ``sign`` tensor as ``torch.zeros((0,))``,
    which pickle spells ``builtins.getattr(torch._C._VariableFunctionsClass, 'zeros')``;
    ``getattr`` is admitted only in that spelling (the class resolves to a stand-in and
    ``getattr`` of anything else is refused).

Anything else raises one `DataError` naming the file and the refused global; a truncated,
corrupt or non-pickle file raises one `DataError` naming the file.
"""
from __future__ import annotations

import builtins
import collections
import gzip
import io
import os
import pickle
import warnings
import zlib
from typing import Any, Callable

from utils.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
MAX_PLACEHOLDER_NUMEL = 1 << 20  # torch.zeros / torch.empty from a pickle: at most 1 Mi elements

_BUILTINS = frozenset({  # no bytes/bytearray/range: bytes(10**12) would exhaust the memory
    "set", "frozenset", "complex", "dict", "list", "tuple", "str", "int", "float", "bool",
})
_TORCH_DTYPE_NAMES = frozenset({
    "float32", "float64", "float16", "bfloat16", "complex64", "complex128", "uint8", "int8",
    "int16", "int32", "int64", "bool", "float", "double", "half", "long", "int", "short",
})


def _torch() -> Any:
    import torch  # imported lazily: plain pickles (gloss2ids.pkl) do not need it

    return torch


def _safe_load_from_bytes(b: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: the storage bytes are a ``torch.save``
    payload, read with torch's own restricted (weights-only) unpickler."""
    if not isinstance(b, (bytes, bytearray)):
        raise pickle.UnpicklingError("tensor storage payload is not bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _torch().load(io.BytesIO(bytes(b)), weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise pickle.UnpicklingError(f"tensor storage is not plain tensor data: {first}"
                                     ) from None


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any, backward_hooks: Any, metadata: Any = None) -> Any:
    from torch import _utils

    if backward_hooks:  # hooks are callables: refuse them rather than attach them
        raise pickle.UnpicklingError("a tensor with backward hooks")
    return _utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                     collections.OrderedDict(), metadata)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> Any:
    from torch import _utils

    return _utils._rebuild_tensor(storage, storage_offset, size, stride)


def _small_shape(args: tuple[Any, ...]) -> tuple[int, ...]:
    shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    if not all(type(d) is int and d >= 0 for d in shape):
        raise pickle.UnpicklingError(f"placeholder tensor with shape {shape!r}")
    numel = 1
    for d in shape:
        numel *= d
    if numel > MAX_PLACEHOLDER_NUMEL:
        raise pickle.UnpicklingError(f"placeholder tensor of {numel} elements")
    return tuple(shape)


def _safe_zeros(*args: Any) -> Any:
    return _torch().zeros(_small_shape(args))


def _safe_empty(*args: Any) -> Any:
    return _torch().zeros(_small_shape(args))  # zeros, not uninitialised memory


def _safe_codecs_encode(text: Any, encoding: Any = "utf-8", *rest: Any) -> bytes:
    """``_codecs.encode(str, 'latin1')``: how protocol 0-2 pickles spell ``bytes``."""
    if rest or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _safe_bytes(*args: Any) -> bytes:
    """``bytes()``: how protocol 0-2 pickles spell ``b''`` (bytes(n) would allocate n)."""
    if args:
        raise pickle.UnpicklingError("builtins.bytes with arguments")
    return b""


class _TorchFunctionsStandIn:
    """What ``torch._C._VariableFunctionsClass`` resolves to: only its ``zeros``/``empty``."""

    attributes = {"zeros": _safe_zeros, "empty": _safe_empty}


def _safe_getattr(obj: Any, name: Any, *default: Any) -> Any:
    if obj is _TorchFunctionsStandIn and not default and name in obj.attributes:
        return obj.attributes[name]
    where = "torch._C._VariableFunctionsClass" if obj is _TorchFunctionsStandIn else \
        type(obj).__name__
    raise _Refused(f"builtins.getattr({where}, {name!r})")


_TORCH_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _safe_load_from_bytes,
    ("torch", "zeros"): _safe_zeros,
    ("torch", "empty"): _safe_empty,
    ("torch._C", "_VariableFunctionsClass"): _TorchFunctionsStandIn,
}


def _torch_class(module: str, name: str) -> Any | None:
    """Storage types and dtypes, or None."""
    if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPE_NAMES):
        torch = _torch()
        obj = getattr(torch, name, None)
        if isinstance(obj, torch.dtype):
            return obj
        if isinstance(obj, type) and (issubclass(obj, torch.storage.TypedStorage)
                                      or obj is torch.UntypedStorage):
            return obj
    if module == "torch.storage" and name in ("TypedStorage", "UntypedStorage"):
        return getattr(_torch().storage, name)
    return None


class PickleRefused(DataError):
    """A pickle asked for a global outside the admitted list."""


class PickleUnreadable(DataError):
    """Not a pickle, or a truncated or corrupt one."""


class _Refused(pickle.UnpicklingError):
    def __init__(self, qualified: str) -> None:
        super().__init__(qualified)
        self.qualified = qualified


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the globals listed in the module docstring."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return getattr(builtins, name)
        if module in ("builtins", "__builtin__") and name == "getattr":
            return _safe_getattr
        if module in ("builtins", "__builtin__") and name == "bytes":
            return _safe_bytes
        if module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if (module, name) in _TORCH_FUNCTIONS:
            return _TORCH_FUNCTIONS[(module, name)]
        if module.split(".")[0] == "torch":
            found = _torch_class(module, name)
            if found is not None:
                return found
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids (a torch.save file, not a plain pickle)")


def read_maybe_gzip(path: str | os.PathLike[str], what: str = "annotation file") -> bytes:
    """The bytes of ``path``, gunzipped when they start with the gzip magic bytes."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{what} {path}: cannot read: {e.strerror or e}") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{what} {path}: corrupt or truncated gzip data ({e})") from None
    return raw


def loads_pickle(raw: bytes, path: str | os.PathLike[str], what: str = "annotation file") -> Any:
    """Unpickle ``raw`` (already decompressed) with the restricted unpickler; ``path`` and
    ``what`` only name the source in errors."""
    if not raw:
        raise DataError(f"{what} {path}: is empty")
    try:
        return RestrictedUnpickler(io.BytesIO(raw)).load()
    except _Refused as e:
        raise PickleRefused(f"{what} {path}: refused to load {e.qualified!r}: only plain "
                            "data and tensors are allowed") from None
    except DataError:
        raise
    except RecursionError:
        problem = "nested too deeply"
    except (pickle.UnpicklingError, EOFError) as e:
        problem = f"or truncated: {e}"
    except Exception as e:  # a corrupt pickle can make any admitted constructor fail
        problem = f"{type(e).__name__}: {e}"
    problem = " ".join(problem.split())  # one line
    problem = problem if len(problem) <= 200 else problem[:197] + "..."
    raise PickleUnreadable(f"{what} {path}: not a readable pickle ({problem})")


def load_pickle(path: str | os.PathLike[str], what: str = "annotation file") -> Any:
    """Read a plain or gzip-compressed (detected by its magic bytes) pickle safely.

    Raises `DataError` ("<what> <path>: ...") for refused globals and for unreadable,
    truncated or corrupt files; no global outside the admitted list is ever called.
    """
    return loads_pickle(read_maybe_gzip(path, what), path, what)
