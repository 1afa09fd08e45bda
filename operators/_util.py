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


def area(size) -> Any:
    return size[0] * size[1]


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
