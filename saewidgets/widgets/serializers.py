"""Binary transport of arrays between Python and the widgets' JavaScript.

Arrays travel as raw little-endian bytes in ``traitlets.Bytes`` traits (ipywidgets sends ``bytes`` as binary
websocket buffers; anywidget hands them to JS as a ``DataView``), with the shape in a separate ``List`` trait.
JSON lists would cost ~10 s per 100 MB and hit the server's 10 MiB message limit; bytes do neither.
Small, mixed records (feature cards, attribution rows) go as JSON after :func:`jsonable`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["array_to_bytes", "bytes_to_array", "as_array", "jsonable"]


def as_array(values: Any, dtype: type, ndim: int, name: str) -> np.ndarray:
    """``values`` as a C-contiguous array of ``dtype`` with ``ndim`` dimensions, or a clear ``ValueError``."""
    arr = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}.")
    return np.ascontiguousarray(arr, dtype=dtype)


def array_to_bytes(values: Any, dtype: type = np.float32) -> bytes:
    """Little-endian bytes of ``values`` cast to ``dtype`` (float32 or int32 in practice), row-major."""
    arr = np.ascontiguousarray(np.asarray(values), dtype=np.dtype(dtype).newbyteorder("<"))
    return arr.tobytes()


def bytes_to_array(data: bytes | memoryview, dtype: type, shape: tuple[int, ...] | list[int]) -> np.ndarray:
    """Inverse of :func:`array_to_bytes`: a (copied) array of ``dtype`` reshaped to ``shape``."""
    arr: np.ndarray = np.frombuffer(bytes(data), dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    return arr.reshape(tuple(shape))


def jsonable(obj: Any, digits: int | None = None) -> Any:
    """A JSON-safe copy of ``obj``: numpy scalars/arrays to Python numbers/lists, tuples to lists, NaN/inf to None;
    with ``digits``, every float rounded to that many significant digits (static pages embed thousands of feature
    cards; activations need no more precision than a colour and a label show), in the same pass."""
    return _jsonable(obj, None if digits is None else f".{digits}g")


_PLAIN = frozenset({str, int, bool, type(None)})  # JSON-safe as they are
_FLOAT = frozenset({float})


def _jsonable(obj: Any, spec: str | None) -> Any:
    kind = type(obj)  # exact types first: a static page converts millions of plain values
    if kind is float:
        if not math.isfinite(obj):
            return None
        return obj if spec is None else float(format(obj, spec))
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is list or kind is tuple:
        kinds = set(map(type, obj))  # a card's lists are mostly all strings (tokens) or all floats (activations)
        if kinds <= _PLAIN:
            return list(obj)
        if kinds == _FLOAT:
            if spec is None:
                return [v if math.isfinite(v) else None for v in obj]
            return [float(format(v, spec)) if math.isfinite(v) else None for v in obj]
        return [_jsonable(v, spec) for v in obj]
    if kind is dict:  # before the Mapping check, which is slow (an ABC)
        return {str(k): _jsonable(v, spec) for k, v in obj.items()}
    if isinstance(obj, Mapping):  # analysis results (which read as mappings), other mappings
        return {str(k): _jsonable(v, spec) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, spec) for v in obj]
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensors
        return _jsonable(obj.detach().cpu().tolist(), spec)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), spec)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return _jsonable(float(obj), spec)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
