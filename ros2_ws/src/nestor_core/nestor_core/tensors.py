"""Conversion between numpy arrays and the `nestor.v1.Tensor` message (raw bytes + dtype + shape)."""

import math

import numpy as np

from nestor_core import nestor_pb2

ALLOWED_DTYPES = frozenset({"float32", "float64", "int64"})
# More dimensions than any nestor tensor has (2); numpy itself stops at 64.
MAX_NDIM = 8


class TensorError(ValueError):
    """A Tensor message that does not describe a valid array."""


def to_tensor(array: np.ndarray) -> nestor_pb2.Tensor:
    """Pack an array as little-endian raw bytes in C order."""
    array = np.ascontiguousarray(array).reshape(np.shape(array))  # keeps 0-d arrays 0-d
    if array.dtype.name not in ALLOWED_DTYPES:
        raise TensorError(f"dtype {array.dtype.name} is not one of {sorted(ALLOWED_DTYPES)}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return nestor_pb2.Tensor(dtype=array.dtype.name, shape=list(array.shape), data=little.tobytes())


def from_tensor(tensor: nestor_pb2.Tensor, name: str = "tensor") -> np.ndarray:
    """Unpack a Tensor, checking dtype, shape and byte length; `name` prefixes errors."""
    if tensor.dtype not in ALLOWED_DTYPES:
        raise TensorError(f"{name}: dtype {tensor.dtype!r} is not one of {sorted(ALLOWED_DTYPES)}")
    if len(tensor.shape) > MAX_NDIM:
        raise TensorError(f"{name}: {len(tensor.shape)} dimensions, at most {MAX_NDIM}")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"{name}: negative dimension in shape {shape}")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    # Python integers: a shape such as [2**62, 4] must not wrap around to a small byte count.
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(tensor.data):
        raise TensorError(f"{name}: shape {shape} needs {expected} bytes of {tensor.dtype}, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(tensor.dtype, copy=False)
