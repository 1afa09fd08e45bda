"""Pooling: ``max_pool``, ``avg_pool`` and ``global_pool``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .algebra.util import ceil_div, check_choice, check_int, floordiv
from .algebra.errors import OpArgError
from .algebra.field import Field
from .algebra.term import ALL_TRANSFORMS, POINTWISE, Cost, Term, op, register_family

__all__ = ["Pool", "GlobalPool", "AvgOrMaxPool", "max_pool", "avg_pool", "global_pool"]


def _examples(draw):
    from hypothesis import strategies as st
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, k))
    padding = draw(st.integers(0, k // 2))
    kind = draw(st.sampled_from(["max", "avg"]))
    c = draw(st.integers(1, 5))
    size = (draw(st.integers(k + 2, 12)), draw(st.integers(k + 2, 12)))
    return Pool(kind, k, stride, padding), Field(c), size


@register_family("pool", examples=_examples)
@dataclass(frozen=True, repr=False)
class Pool(Term):
    """Max or average pooling over k x k windows.

    Lipschitz bounds (l2): a pixel lies in at most ``ceil(k/s)**2`` windows, so
    max pooling is ``ceil(k/s)``-Lipschitz and average pooling ``ceil(k/s)/k``.
    With ``k == stride`` and no padding the windows tile the image, and the
    pool commutes with shifts by multiples of k, 90-degree rotations and flips
    on sizes divisible by k.
    """

    kind: str = "max"
    k: int = 2
    stride: Optional[int] = None
    padding: int = 0
    _positional = ("k",)
    keeps_nonnegative = True

    def __post_init__(self):
        check_choice("pool", "kind", self.kind, ("max", "avg"))
        op = f"{self.kind}_pool"
        check_int(op, "k", self.k)
        check_int(op, "stride", self.stride, none_ok=True)  # None means k; 0 is an error, not k
        check_int(op, "padding", self.padding, lo=0)
        if self.padding > self.k // 2:
            raise OpArgError(f"{op} padding must be at most k // 2 = {self.k // 2}; got {self.padding}")

    @property
    def family(self):
        return f"{self.kind}_pool"

    @property
    def linear(self):
        return self.kind == "avg"

    @property
    def _s(self):
        return self.stride or self.k

    def out_type(self, t):
        if self.kind == "max":
            return self.require_real(t)
        if t.rank != 2:
            self.reject("a rank-2 field", t)
        return t

    def out_size(self, t, size):
        return tuple(floordiv(n + 2 * self.padding - self.k, self._s) + 1 for n in size)

    def equivariance(self, t):
        if self.k == self._s and self.padding == 0 and not t.orders:
            return POINTWISE
        return frozenset()

    def lipschitz_bound(self, m, size=None):
        overlap = ceil_div(self.k, self._s)
        return float(overlap) if self.kind == "max" else overlap / self.k

    def build(self, t):
        if self.kind == "max":
            return nn.MaxPool2d(self.k, self._s, self.padding)
        return nn.AvgPool2d(self.k, self._s, self.padding)

    def __repr__(self):
        args = [str(self.k)]
        if self.stride is not None and self.stride != self.k:
            args.append(f"stride={self.stride}")
        if self.padding:
            args.append(f"padding={self.padding}")
        return f"{self.family}({', '.join(args)})"


@op("max_pool")
def max_pool(k: int = 2, stride: Optional[int] = None, padding: int = 0) -> Pool:
    """Max pooling over k x k windows (stride defaults to k).

    >>> from operad import ops, Field
    >>> ops.max_pool(2).out_size(Field(4), (32, 32))
    (16, 16)
    """
    return Pool("max", k, stride, padding)


@op("avg_pool")
def avg_pool(k: int = 2, stride: Optional[int] = None, padding: int = 0) -> Pool:
    """Average pooling over k x k windows (stride defaults to k).

    >>> from operad import ops, Field
    >>> ops.avg_pool(2).out_size(Field(4), (8, 6))
    (4, 3)
    """
    return Pool("avg", k, stride, padding)


class _GlobalAvg(nn.Module):
    def forward(self, x):
        return x.mean(dim=(-2, -1))


class _GlobalMax(nn.Module):
    def forward(self, x):
        return x.amax(dim=(-2, -1))


def _gexamples(draw):
    from hypothesis import strategies as st
    return (GlobalPool(draw(st.sampled_from(["avg", "max"]))), Field(draw(st.integers(1, 6))),
            (draw(st.integers(2, 10)), draw(st.integers(2, 10))))


class AvgOrMaxPool:
    """What average-or-max pools over a whole rank-2 field share (``kind`` is the field)."""

    keeps_nonnegative = True

    def _check_kind(self, name: str) -> None:
        if self.kind not in ("avg", "max"):
            raise ValueError(f"{name} kind must be 'avg' or 'max'; got {self.kind!r}")

    @property
    def linear(self):
        return self.kind == "avg"

    def _pooled(self, t: Field) -> Field:
        """``t`` checked: a rank-2 field, and real for max pooling."""
        if t.rank != 2:
            self.reject("a rank-2 field", t)
        if self.kind == "max" and t.is_complex:
            self.reject("a real field for max pooling", t)
        return t


@register_family("global_pool", examples=_gexamples)
@dataclass(frozen=True, repr=False)
class GlobalPool(AvgOrMaxPool, Term):
    """Global average (or max) pooling: a rank-2 field becomes rank 0.

    The average over N pixels is ``1/sqrt(N)``-Lipschitz in l2; the max is 1-Lipschitz.
    """

    kind: str = "avg"
    _positional = ()

    def __post_init__(self):
        self._check_kind("global_pool")

    def out_type(self, t):
        return self._pooled(t).with_(rank=0)

    def out_size(self, t, size):
        return None

    def equivariance(self, t):
        return frozenset() if t.orders and any(t.orders) else POINTWISE

    def lipschitz_bound(self, m, size=None):
        if self.kind == "max" or size is None:
            return 1.0
        return 1.0 / math.sqrt(size[0] * size[1])

    def build(self, t):
        return _GlobalAvg() if self.kind == "avg" else _GlobalMax()

    def __repr__(self):
        return "global_pool()" if self.kind == "avg" else f"global_pool({self.kind!r})"


@op("global_pool")
def global_pool(kind: str = "avg") -> GlobalPool:
    """Global average (or ``"max"``) pooling to a rank-0 field.

    >>> from operad import ops, Field
    >>> ops.global_pool().out_type(Field(8))
    Field(8, rank=0)
    """
    return GlobalPool(kind)
