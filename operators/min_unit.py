"""Min units (Grüning and Barth, "Bio-inspired Min-Nets improve the performance
and robustness of deep networks", NeurIPS SVRHM workshop 2021).

End-stopped cortical cells respond to a feature only where two (or more)
filters respond together; the simplest AND of two non-negative filter
responses is their minimum. Three families:

``min_filters(k=3, n=2)``
    the minimum of n learned depthwise k x k filters, each followed by a norm
    (InstanceNorm by default) and a ReLU: the AND of n features per channel,
    width-preserving. ``substitute(net, ops.relu, ops.min_filters())`` turns
    every ReLU of a network into such an AND unit.
``min_unit(out, k=3, q=2, n=2, stride=1)``
    the Min unit of the reference block: 1x1 conv to ``q * out`` + BN + ReLU,
    ``min_filters`` on those channels (stride in the depthwise filters), 1x1
    conv to ``out`` + BN + ReLU.
``min_block(out, k=3, q=2, n=2, stride=1)``
    the reference Min block: ``shortcut(x) + min_unit(x)`` with no ReLU after
    the addition; the shortcut is the identity when the shape is kept, else
    2x2 average pooling and zero channels (:func:`min_shortcut`).

Cost of ``min_unit(out, k, q, n)`` on C input channels, hidden ``h = q out``
(BN/IN affine parameters included; no conv biases)::

    params = h C + n h k^2 + out h + 2 h + 2 n h + 2 out
    macs   = h C H W + (n h k^2 + out h) H' W'      (H', W' after the stride)

Lipschitz: 1x1 convs and BN are bounded as usual, the minimum by the
quadrature sum of its branches (:class:`~operad.operators.combinators.Minimum`);
InstanceNorm has no global bound, so units with ``norm="instance"`` report
None, and ``norm="bn"`` or ``norm=None`` give a finite bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch.nn.functional as F
from torch import nn

from .algebra.macro import Macro
from .algebra.util import ceil_div
from .activation import Activation
from .algebra.combinators import Minimum, Residual
from .conv import Conv
from .algebra.field import Channels, Field
from .instance_norm import InstanceNorm
from .norm import BatchNorm
from .algebra.term import ALL_TRANSFORMS, POINTWISE, Term, op, register_family

__all__ = ["MinFilters", "MinUnit", "MinBlock", "MinShortcut", "min_filters", "min_unit", "min_block",
           "min_shortcut"]

_NORMS = ("instance", "bn", None)


def _norm(kind: Optional[str]) -> Optional[Term]:
    if kind == "instance":
        return InstanceNorm()
    if kind == "bn":
        return BatchNorm()
    return None


def _check(k: int, n: int, stride: int, norm, padding_mode: str, name: str):
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"{name} needs n >= 2 filter branches (a minimum of one filter is that filter); got {n!r}")
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"{name} k must be a positive odd int (centred filters); got {k!r}")
    if stride not in (1, 2):
        raise ValueError(f"{name} stride must be 1 or 2; got {stride!r}")
    if norm not in _NORMS:
        raise ValueError(f"{name} norm must be 'instance', 'bn' or None; got {norm!r}")
    if padding_mode not in ("zeros", "circular"):
        raise ValueError(f"{name} padding_mode must be 'zeros' or 'circular'; got {padding_mode!r}")


# ---------------------------------------------------------------------------
# min_filters: the AND of n depthwise filters
# ---------------------------------------------------------------------------
def _fexamples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 6))
    stride = draw(st.sampled_from([1, 1, 2]))
    term = min_filters(k=draw(st.sampled_from([1, 3])), n=draw(st.integers(2, 3)), stride=stride,
                       norm=draw(st.sampled_from(list(_NORMS))),
                       padding_mode=draw(st.sampled_from(["zeros", "circular"])))
    return term, Field(c), (draw(st.integers(4, 10)), draw(st.integers(4, 10)))


@register_family("min_filters", examples=_fexamples)
@dataclass(frozen=True, repr=False)
class MinFilters(Macro):
    """``minimum(*(depthwise(k, stride) >> norm >> relu for each of n branches))``:
    per channel, the AND of n learned filters. Keeps the width."""

    k: int = 3
    n: int = 2
    stride: int = 1
    norm: Optional[str] = "instance"
    padding_mode: str = "zeros"

    def __post_init__(self):
        _check(self.k, self.n, self.stride, self.norm, self.padding_mode, "min_filters")

    def branch(self) -> Term:
        t = Conv(None, self.k, self.stride, 1, 0, False, "same", self.padding_mode)
        nm = _norm(self.norm)
        if nm is not None:
            t = t >> nm
        return t >> Activation("relu")

    def expand(self, t):
        if t.rank != 2:
            raise ValueError("min_filters acts on rank-2 fields (apply it before global_pool)")
        return Minimum(tuple(self.branch() for _ in range(self.n)))


@op("min_filters")
def min_filters(k: int = 3, n: int = 2, stride: int = 1, norm: Optional[str] = "instance",
                padding_mode: str = "zeros") -> MinFilters:
    """The minimum of ``n`` depthwise ``k x k`` filters, each + norm + ReLU (an AND unit).

    >>> from operad import ops, Field
    >>> ops.min_filters().bind(Field(8)).out_type
    Field(8)
    """
    return MinFilters(k, n, stride, norm, padding_mode)


# ---------------------------------------------------------------------------
# min_unit: expand, AND, project
# ---------------------------------------------------------------------------
def _uexamples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 4))
    out = draw(st.integers(1, 4))
    term = min_unit(out, k=draw(st.sampled_from([1, 3])), q=draw(st.sampled_from([1, 2])), n=draw(st.integers(2, 3)),
                    stride=draw(st.sampled_from([1, 2])), norm=draw(st.sampled_from(list(_NORMS))),
                    padding_mode=draw(st.sampled_from(["zeros", "circular"])))
    return term, Field(c), (draw(st.integers(4, 10)), draw(st.integers(4, 10)))


@register_family("min_unit", examples=_uexamples)
@dataclass(frozen=True, repr=False)
class MinUnit(Macro):
    """``pointwise(q*out) >> bn >> relu >> min_filters(k, n, stride) >> pointwise(out) >> bn >> relu``."""

    out: Optional[Channels] = None
    k: int = 3
    q: int = 2
    n: int = 2
    stride: int = 1
    norm: Optional[str] = "instance"
    padding_mode: str = "zeros"
    _positional = ("out",)

    def __post_init__(self):
        _check(self.k, self.n, self.stride, self.norm, self.padding_mode, "min_unit")
        if not isinstance(self.q, int) or self.q < 1:
            raise ValueError(f"min_unit q (the expansion factor) must be a positive int; got {self.q!r}")

    def width(self, t: Field) -> Channels:
        return t.channels if self.out is None else self.out

    def expand(self, t):
        out = self.width(t)
        return (Conv(self.q * out, 1, bias=False) >> BatchNorm() >> Activation("relu")
                >> MinFilters(self.k, self.n, self.stride, self.norm, self.padding_mode)
                >> Conv(out, 1, bias=False) >> BatchNorm() >> Activation("relu"))


@op("min_unit")
def min_unit(out: Optional[Channels] = None, k: int = 3, q: int = 2, n: int = 2, stride: int = 1,
             norm: Optional[str] = "instance", padding_mode: str = "zeros") -> MinUnit:
    """The Min unit: 1x1 conv to ``q*out`` + BN + ReLU, the minimum of ``n`` depthwise
    ``k x k`` filters (each + InstanceNorm + ReLU), 1x1 conv to ``out`` + BN + ReLU.

    >>> from operad import ops, Field
    >>> ops.min_unit(32, stride=2).bind(Field(16)).out_type
    Field(32)
    """
    return MinUnit(out, k, q, n, stride, norm, padding_mode)


# ---------------------------------------------------------------------------
# The shortcut: 2x2 average pooling and zero channels
# ---------------------------------------------------------------------------
class _ShortcutModule(nn.Module):
    def __init__(self, stride: int, before: int, after: int):
        super().__init__()
        self.stride, self.before, self.after = stride, before, after

    def forward(self, x):
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.before or self.after:
            x = F.pad(x, (0, 0, 0, 0, self.before, self.after))
        return x


def _sexamples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 5))
    return (min_shortcut(c + draw(st.integers(0, 3)), stride=draw(st.sampled_from([1, 2]))), Field(c),
            (draw(st.integers(3, 10)), draw(st.integers(3, 10))))


@register_family("min_shortcut", examples=_sexamples)
@dataclass(frozen=True, repr=False)
class MinShortcut(Term):
    """``stride x stride`` average pooling (a trailing odd row or column is averaged on
    its own, so the size is ``ceil(n / stride)`` like a 'same' strided conv), then zero
    channels before and after up to ``out``. Linear; each pixel lies in exactly one
    window, so the l2 bound is ``1 / stride`` on sizes divisible by the stride (windows
    of stride^2 pixels), and 1 otherwise (a window may hold a single pixel)."""

    out: Optional[Channels] = None
    stride: int = 2
    _positional = ("out",)
    linear = True

    def __post_init__(self):
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"min_shortcut stride must be a positive int; got {self.stride!r}")

    def _pad(self, t: Field):
        out = t.channels if self.out is None else self.out
        d = out - t.channels
        return d // 2, d - d // 2

    def out_type(self, t):
        self.require_real(t)
        out = t.channels if self.out is None else self.out
        if isinstance(out, int) and isinstance(t.channels, int) and out < t.channels:
            self.reject(f"at most {out} channels (the shortcut only adds zero channels)", t)
        return t.with_(channels=out)

    def out_size(self, t, size):
        if self.stride == 1:
            return size
        return tuple(_ceil(n, self.stride) for n in size)

    def equivariance(self, t):
        return ALL_TRANSFORMS if self.stride == 1 else POINTWISE

    def lipschitz_bound(self, m, size=None):
        if self.stride == 1:
            return 1.0
        if size is not None and all(isinstance(n, int) and n % self.stride == 0 for n in size):
            return 1.0 / self.stride
        return 1.0

    def build(self, t):
        return _ShortcutModule(self.stride, *self._pad(t))


def _ceil(n, s):
    if isinstance(n, int):
        return ceil_div(n, s)
    import sympy
    return sympy.ceiling(sympy.sympify(n) / s)


@op("min_shortcut")
def min_shortcut(out: Optional[Channels] = None, stride: int = 2) -> MinShortcut:
    """2x2 (``stride``) average pooling and zero channels up to ``out``: the Min block's shortcut.

    >>> from operad import ops, Field
    >>> ops.min_shortcut(32).bind(Field(16)).out_type
    Field(32)
    """
    return MinShortcut(out, stride)


# ---------------------------------------------------------------------------
# min_block: the reference block
# ---------------------------------------------------------------------------
def _bexamples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 4))
    stride = draw(st.sampled_from([1, 2]))
    out = c + draw(st.integers(0, 3))
    term = min_block(out, k=draw(st.sampled_from([1, 3])), q=draw(st.sampled_from([1, 2])), stride=stride,
                     norm=draw(st.sampled_from(list(_NORMS))))
    return term, Field(c), (draw(st.integers(4, 10)), draw(st.integers(4, 10)))


@register_family("min_block", examples=_bexamples)
@dataclass(frozen=True, repr=False)
class MinBlock(Macro):
    """``residual(min_unit(out, k, q, n, stride), shortcut)`` with no ReLU after the
    addition; the shortcut is :func:`min_shortcut` when the shape changes."""

    out: Optional[Channels] = None
    k: int = 3
    q: int = 2
    n: int = 2
    stride: int = 1
    norm: Optional[str] = "instance"
    padding_mode: str = "zeros"
    _positional = ("out",)

    def __post_init__(self):
        MinUnit(self.out, self.k, self.q, self.n, self.stride, self.norm, self.padding_mode)

    def expand(self, t):
        out = t.channels if self.out is None else self.out
        body = MinUnit(out, self.k, self.q, self.n, self.stride, self.norm, self.padding_mode)
        if self.stride == 1 and out == t.channels:
            return Residual(body)
        return Residual(body, MinShortcut(out, self.stride))


@op("min_block")
def min_block(out: Optional[Channels] = None, k: int = 3, q: int = 2, n: int = 2, stride: int = 1,
              norm: Optional[str] = "instance", padding_mode: str = "zeros") -> MinBlock:
    """The reference Min block: ``shortcut(x) + min_unit(x)``, no ReLU after the sum.

    >>> from operad import ops, Field
    >>> ops.min_block(32, stride=2).bind(Field(16)).out_type
    Field(32)
    """
    return MinBlock(out, k, q, n, stride, norm, padding_mode)
