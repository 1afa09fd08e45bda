"""Point-wise and pooling operators on harmonic fields that keep their rotation orders.

``harmonic_relu``: ``ReLU(|z| + b) z / |z|`` per complex channel (Harmonic
Networks' C-ReLU): it acts on magnitudes only, so it commutes with the phase
``e^{i m theta}`` that a rotation puts on an order-m stream.
``harmonic_pool``: average pooling of the complex values, or max pooling that
keeps the value of largest magnitude in each window; both keep the orders.

Batch norm on magnitudes is ``ops.complex_bn`` and the exit to real,
rotation-invariant features is ``ops.modulus`` (both in ``operators/complex.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .algebra.util import ceil_div, floordiv
from .algebra.field import Field
from .algebra.term import POINTWISE, Cost, Term, op, register_family

__all__ = ["HarmonicReLU", "HarmonicPool", "harmonic_relu", "harmonic_pool"]


def _require_harmonic(term: Term, t: Field, rank2: bool = True) -> Field:
    if not t.is_complex:
        term.reject("a complex field (a harmonic_conv makes one; real fields use ops.relu)", t)
    if rank2 and t.rank != 2:
        term.reject("a rank-2 field", t)
    return t


def _rotations(t: Field):
    """Transforms a magnitude-only point-wise map commutes with on ``t``: the
    pixel permutations (like ``ops.relu``; arbitrary angles commute only up to
    the interpolation of a thresholded field, so they are not claimed)."""
    if t.orders and any(t.orders):
        return frozenset({"shift", "rot90"})  # a flip maps order m to -m
    return POINTWISE


# ----------------------------------------------------------------------------- C-ReLU
class HarmonicReLUModule(nn.Module):
    """``z * relu(r + b) / r`` with ``r = sqrt(|z|^2 + eps^2)``: finite at ``z = 0``."""

    def __init__(self, c: int, bias_init: float, eps: float):
        super().__init__()
        self.bias = nn.Parameter(torch.full((c,), float(bias_init)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c2 = x.shape[:2]
        z = x.reshape(b, c2 // 2, 2, *x.shape[2:])
        r = torch.sqrt(z.square().sum(2, keepdim=True) + self.eps * self.eps)
        bias = self.bias.view(1, -1, 1, *([1] * (x.dim() - 2)))
        return (z * (F.relu(r + bias) / r)).reshape(x.shape)


def _relu_examples(draw):
    from hypothesis import strategies as st
    orders = draw(st.sampled_from([None, (0,), (0, 1), (-1, 2)]))
    c = draw(st.integers(1, 3)) * (len(orders) if orders else 1)
    bias = draw(st.sampled_from([0.0, -0.5, -1.0, 0.3]))
    n = draw(st.integers(4, 12))
    return harmonic_relu(bias_init=bias), Field(c, kind="complex", orders=orders), (n, n)


@register_family("harmonic_relu", examples=_relu_examples)
@dataclass(frozen=True, repr=False)
class HarmonicReLU(Term):
    """``ReLU(|z| + b) z / |z|`` with a learned bias ``b`` per complex channel.

    Lipschitz bound: the map is radial, ``z -> s(r) z``; its Jacobian has the
    eigenvalues ``s`` (tangential) and ``(r s)'`` (radial). With
    ``r = sqrt(|z|^2 + eps^2)`` both lie in ``[0, 1]`` when ``b <= 0`` and are at
    most ``1 + b / eps`` when ``b > 0``: the bound is ``1 + max(0, max b) / eps``.
    """

    bias_init: float = -0.5
    eps: float = 1e-4

    def out_type(self, t):
        return _require_harmonic(self, t, rank2=False)

    def cost(self, t, size):
        return Cost(t.channels, 0)

    def equivariance(self, t):
        return _rotations(t)

    def lipschitz_bound(self, m, size=None):
        return 1.0 + max(0.0, float(m.bias.detach().max())) / m.eps

    def build(self, t):
        return HarmonicReLUModule(t.channels, self.bias_init, self.eps)


@op("harmonic_relu")
def harmonic_relu(bias_init: float = -0.5, eps: float = 1e-4) -> HarmonicReLU:
    """The complex ReLU of Harmonic Networks: ``ReLU(|z| + b) z / |z|`` (phases kept).

    ``bias_init`` (default -0.5): magnitudes below 0.5 are cut at initialisation,
    about 22% of a unit-scale (E|z|^2 = 1) Gaussian field; with ``b = 0`` the
    map is the identity. ``eps`` makes it finite at ``z = 0``.

    >>> from operad import ops, Field
    >>> ops.harmonic_relu().bind(Field(4, kind="complex", orders=(0, 1))).out_type
    Field(4, complex, orders=(0, 1))
    """
    return HarmonicReLU(bias_init, eps)


# ----------------------------------------------------------------------------- pooling
class _MagnitudeMaxPool(nn.Module):
    def __init__(self, k: int, stride: int):
        super().__init__()
        self.k, self.stride = k, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        re, im = x[:, 0::2], x[:, 1::2]
        _, idx = F.max_pool2d(re * re + im * im, self.k, self.stride, return_indices=True)
        flat = idx.flatten(2)
        out_re = re.flatten(2).gather(2, flat)
        out_im = im.flatten(2).gather(2, flat)
        b, c, h, w = idx.shape
        return torch.stack((out_re, out_im), dim=2).reshape(b, 2 * c, h, w)


class _AvgPool(nn.Module):
    def __init__(self, k: int, stride: int):
        super().__init__()
        self.k, self.stride = k, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.k, self.stride)


def _pool_examples(draw):
    from hypothesis import strategies as st
    orders = draw(st.sampled_from([(0,), (0, 1), (-1, 2)]))
    c = draw(st.integers(1, 3)) * len(orders)
    k = draw(st.integers(1, 3))
    stride = draw(st.sampled_from([k, k, max(1, k - 1)]))
    kind = draw(st.sampled_from(["avg", "max"]))
    n = draw(st.integers(k + 2, 12))
    return harmonic_pool(k, stride, kind), Field(c, kind="complex", orders=orders), (n, n)


@register_family("harmonic_pool", examples=_pool_examples)
@dataclass(frozen=True, repr=False)
class HarmonicPool(Term):
    """Pooling of a complex field over k x k windows that keeps its rotation orders.

    ``avg``: the mean of the complex values (linear; ``ceil(k/s)/k``-Lipschitz).
    ``max``: the value of largest magnitude in each window (phases kept; not
    Lipschitz, since the selected value jumps when two magnitudes cross).
    With ``stride == k`` the windows tile the image, so both commute with 90-degree
    rotations (sizes divisible by k) and shifts by multiples of k.
    """

    k: int = 2
    stride: int = 0
    kind: str = "avg"
    _arg_rules = {"stride": "[0, inf)"}  # 0 means k
    _positional = ("k",)

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"harmonic_pool k must be a positive int; got {self.k!r}")
        if self.kind not in ("avg", "max"):
            raise ValueError(f"harmonic_pool kind must be 'avg' or 'max'; got {self.kind!r}")

    @property
    def _s(self) -> int:
        return self.stride or self.k

    @property
    def linear(self):
        return self.kind == "avg"

    def out_type(self, t):
        return _require_harmonic(self, t)

    def out_size(self, t, size):
        return tuple(floordiv(n - self.k, self._s) + 1 for n in size)

    def equivariance(self, t):
        if self._s != self.k:
            return frozenset()
        return frozenset({"shift", "rot90"}) | (frozenset({"flip"}) if not (t.orders and any(t.orders))
                                                 else frozenset())

    def lipschitz_bound(self, m, size=None):
        return ceil_div(self.k, self._s) / self.k if self.kind == "avg" else None

    def build(self, t):
        return (_AvgPool if self.kind == "avg" else _MagnitudeMaxPool)(self.k, self._s)


@op("harmonic_pool")
def harmonic_pool(k: int = 2, stride: int = 0, kind: str = "avg") -> HarmonicPool:
    """Pool a harmonic field over k x k windows (stride defaults to k), keeping its orders.

    >>> from operad import ops, Field
    >>> ops.harmonic_pool(2).out_size(Field(4, kind="complex", orders=(0, 1)), (8, 8))
    (4, 4)
    """
    return HarmonicPool(k, stride, kind)
