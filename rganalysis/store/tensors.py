"""Bit-exact conversion between torch tensors and the numpy arrays stored in HDF5."""

from __future__ import annotations

import numpy as np
import torch

from rganalysis.errors import StoreFormatError

__all__ = ["dtype_name", "from_numpy", "stored_dtype", "to_numpy", "torch_dtype"]

# torch dtype -> (numpy dtype stored on disk, how it is stored)
_STORED: dict[torch.dtype, str] = {
    torch.float64: "f8",
    torch.float32: "f4",
    torch.float16: "f2",
    torch.bfloat16: "i2",  # raw bits, restored with .view(torch.bfloat16)
    torch.int64: "i8",
    torch.int32: "i4",
    torch.int16: "i2",
    torch.int8: "i1",
    torch.uint8: "u1",
    torch.bool: "u1",
}
_BY_NAME = {str(k).removeprefix("torch."): k for k in _STORED}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32`` (:class:`StoreFormatError` for an unknown name)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise StoreFormatError(f"unsupported tensor dtype {name!r}") from None


def stored_dtype(dtype: torch.dtype) -> str:
    """The numpy dtype a tensor of ``dtype`` is stored as (bfloat16 as its raw int16 bits)."""
    try:
        return _STORED[dtype]
    except KeyError:
        raise StoreFormatError(
            f"tensors of dtype {dtype} cannot be stored; supported: {sorted(_BY_NAME)}"
        ) from None


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """The array written to disk: same bits as ``t``."""
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy()
    if t.dtype == torch.bool:
        return t.to(torch.uint8).numpy()
    stored_dtype(t.dtype)
    return t.numpy()


def from_numpy(a: np.ndarray, dtype_str: str) -> torch.Tensor:
    """Inverse of :func:`to_numpy`."""
    dtype = torch_dtype(dtype_str)
    a = np.asarray(a)
    if not a.flags.c_contiguous or not a.flags.writeable:
        a = a.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
    t = torch.from_numpy(a)
    if dtype == torch.bfloat16:
        return t.view(torch.bfloat16)
    if dtype == torch.bool:
        return t.bool()
    return t
