"""Adaptive pooling: ``adaptive_pool((6, 6))`` pools any input to a fixed output size.

Output cell ``i`` of an axis with ``n`` inputs and ``o`` outputs averages (or maxes) the
window ``[floor(i n / o), ceil((i + 1) n / o))``, as ``nn.AdaptiveAvgPool2d`` does. Windows
mirror under reversal, so the pool commutes with flips, and with 90-degree rotations when
the output is square.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple, Union

import torch
from torch import nn

from .algebra.field import Field
from .pooling import AvgOrMaxPool
from .algebra.term import Term, op, register_family

__all__ = ["AdaptivePool", "adaptive_pool", "adaptive_windows"]


def adaptive_windows(n: int, o: int):
    """The ``o`` half-open windows ``(start, stop)`` adaptive pooling uses on an axis of ``n``.

    >>> adaptive_windows(5, 3)
    [(0, 2), (1, 4), (3, 5)]
    """
    return [((i * n) // o, -((-(i + 1) * n) // o)) for i in range(o)]


def _axis_norm(n: int, o: int, kind: str) -> float:
    """The l2 norm of one axis of the pool: the averaging matrix's spectral norm, or for max
    pooling the square root of the most windows any input lies in."""
    wins = adaptive_windows(n, o)
    if kind == "max":
        return math.sqrt(max(sum(a <= j < b for a, b in wins) for j in range(n)))
    a = torch.zeros(o, n, dtype=torch.float64)
    for i, (lo, hi) in enumerate(wins):
        a[i, lo:hi] = 1.0 / (hi - lo)
    return float(torch.linalg.matrix_norm(a, ord=2))


def _examples(draw):
    from hypothesis import strategies as st
    out = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    term = AdaptivePool(out, draw(st.sampled_from(["avg", "max"])))
    return term, Field(draw(st.integers(1, 5))), (draw(st.integers(2, 12)), draw(st.integers(2, 12)))


@register_family("adaptive_pool", examples=_examples)
@dataclass(frozen=True, repr=False)
class AdaptivePool(AvgOrMaxPool, Term):
    """Average or max pooling of any input size to ``size = (H', W')``.

    The Lipschitz bound at a known input size is exact for the average (the product of the
    two axes' spectral norms) and for the max a bound by window overlap; without a size none
    is stated (an output larger than the input repeats pixels arbitrarily often).
    """

    size: Tuple[int, int] = (1, 1)
    kind: str = "avg"
    _positional = ("size",)

    def __post_init__(self):
        self._check_kind("adaptive_pool")
        ok = (isinstance(self.size, tuple) and len(self.size) == 2
              and all(isinstance(v, int) and v >= 1 for v in self.size))
        if not ok:
            raise ValueError(f"adaptive_pool size must be two positive ints (H, W); got {self.size!r}")

    def out_type(self, t):
        return self._pooled(t)

    def out_size(self, t, size):
        return self.size

    def equivariance(self, t):
        if t.orders and any(t.orders):
            return frozenset()
        return frozenset({"flip", "rot90"}) if self.size[0] == self.size[1] else frozenset({"flip"})

    def lipschitz_bound(self, m, size=None):
        if size is None or not all(isinstance(v, int) for v in size):
            return None
        return _axis_norm(size[0], self.size[0], self.kind) * _axis_norm(size[1], self.size[1], self.kind)

    def build(self, t):
        return nn.AdaptiveAvgPool2d(self.size) if self.kind == "avg" else nn.AdaptiveMaxPool2d(self.size)

    def __repr__(self):
        kind = "" if self.kind == "avg" else f", {self.kind!r}"
        return f"adaptive_pool({self.size}{kind})"


@op("adaptive_pool")
def adaptive_pool(size: Union[int, Tuple[int, int]], kind: str = "avg") -> AdaptivePool:
    """Pool any input to ``size`` (an int for a square output), like torchvision's AlexNet
    and VGG heads.

    >>> from operad import ops, Field
    >>> ops.adaptive_pool(6).out_size(Field(256), (13, 9))
    (6, 6)
    """
    return AdaptivePool(tuple(size) if isinstance(size, (tuple, list)) else (size, size), kind)
