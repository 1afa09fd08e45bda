"""Small helpers shared by operator families."""
from __future__ import annotations

import math
from typing import Any, Tuple

import sympy
import torch


def pair(v) -> Tuple[Any, Any]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair; got {v!r}")
        return tuple(v)
    return (v, v)


def floordiv(a, b):
    """Floor division for ints or sympy expressions."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return sympy.floor(sympy.sympify(a) / b)


def spectral_norm(w: torch.Tensor) -> float:
    """The largest singular value of a matrix (float64, exact via SVD)."""
    w = w.detach().to(torch.float64).reshape(w.shape[0], -1)
    if w.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(w, ord=2))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def windows_per_pixel(k, stride: int = 1, dilation: int = 1) -> int:
    """How many k x k windows of a strided (dilated) convolution one input pixel
    can fall in: ``ceil(k/stride)`` per axis without dilation, ``k`` with it.
    ``sqrt`` of this times the weight matrix's spectral norm bounds a convolution."""
    kh, kw = pair(k)
    if dilation == 1:
        return ceil_div(kh, stride) * ceil_div(kw, stride)
    return kh * kw


def area(size) -> Any:
    return size[0] * size[1]


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


def check_conv_args(op: str, k, stride: int, dilation: int, padding, padding_mode: str) -> None:
    """Validate the hyper-parameters every convolution-like term shares; errors name ``op``."""
    if padding not in ("same", "valid") and not (isinstance(padding, int) and padding >= 0):
        raise ValueError(f"{op} padding must be 'same', 'valid' or a non-negative int; got {padding!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{op} padding_mode must be 'zeros', 'circular', 'reflect' or 'replicate'; "
                         f"got {padding_mode!r}")
    for name, v in (("stride", stride), ("dilation", dilation)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{op} {name} must be a positive int; got {v!r}")
    kh, kw = pair(k)
    if kh < 1 or kw < 1:
        raise ValueError(f"{op} k must be positive; got {k!r}")
