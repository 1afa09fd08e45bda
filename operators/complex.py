"""Complex fields: ``complex_conv``, ``modulus`` and ``complex_bn``.

A complex field is a real tensor with interleaved channels (``2j`` = Re,
``2j + 1`` = Im, see :mod:`operad.operators.field`). Real-only operators
(conv, bn, activations) reject complex fields at bind time; these three are
the complex world's convolution, its exit (the modulus) and its batch norm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .algebra.util import floordiv, spectral_norm, windows_per_pixel
from .algebra.field import Channels, Field
from .algebra.term import ALL_TRANSFORMS, Cost, Term, op, register_family

__all__ = ["ComplexConv", "Modulus", "ComplexBatchNorm", "complex_conv", "modulus", "complex_bn"]


def _require_complex(term: Term, t: Field) -> Field:
    if not t.is_complex or t.rank != 2:
        term.reject("a rank-2 complex field (ops.dtcwpt or ops.complex_conv make one)", t)
    return t


# ----------------------------------------------------------------------------- complex conv
class ComplexConv2d(nn.Module):
    """``z -> W * z (+ b)`` with complex ``W = weight_re + i weight_im`` on interleaved fields."""

    def __init__(self, cin: int, out: int, k: int, stride: int, padding_mode: str, bias: bool):
        super().__init__()
        std = math.sqrt(1.0 / (cin * k * k))
        self.weight_re = nn.Parameter(torch.randn(out, cin, k, k) * std)
        self.weight_im = nn.Parameter(torch.randn(out, cin, k, k) * std)
        self.bias = nn.Parameter(torch.zeros(2 * out)) if bias else None
        self.stride, self.padding, self.padding_mode = stride, k // 2, padding_mode

    def real_weight(self) -> torch.Tensor:
        """The equivalent real kernel (2 out, 2 cin, k, k) on interleaved channels."""
        wr, wi = self.weight_re, self.weight_im
        o, c, kh, kw = wr.shape
        top = torch.stack([wr, -wi], dim=2)  # Re out = Wr Re - Wi Im
        bot = torch.stack([wi, wr], dim=2)  # Im out = Wi Re + Wr Im
        return torch.stack([top, bot], dim=1).reshape(2 * o, 2 * c, kh, kw)

    def forward(self, x):
        w = self.real_weight()
        if self.padding and self.padding_mode == "circular":
            p = self.padding
            x = F.pad(x, (p, p, p, p), mode="circular")
            return F.conv2d(x, w, self.bias, self.stride)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def _cconv_examples(draw):
    from hypothesis import strategies as st
    k = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.sampled_from([1, 1, 2]))
    mode = draw(st.sampled_from(["zeros", "circular"]))
    size = (draw(st.integers(k + 3, 12)), draw(st.integers(k + 3, 12)))
    return (complex_conv(draw(st.integers(1, 4)), k=k, stride=stride, bias=draw(st.booleans()), padding_mode=mode),
            Field(draw(st.integers(1, 4)), kind="complex"), size)


def _ordered(t: Field) -> bool:
    return bool(t.orders) and any(t.orders)


@register_family("complex_conv", examples=_cconv_examples)
@dataclass(frozen=True, repr=False)
class ComplexConv(Term):
    """A complex 2-D convolution from a complex field to ``out`` complex channels
    (odd ``k``, 'same' padding). Parameters: ``2 out cin k**2`` (+ ``2 out`` bias);
    it runs as one real convolution with ``2 out x 2 cin`` channels."""

    out: Channels = 1
    k: int = 3
    stride: int = 1
    bias: bool = False
    padding_mode: str = "zeros"
    _positional = ("out",)
    linear = True

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1 or self.k % 2 == 0:
            raise ValueError(f"complex_conv k must be a positive odd int; got {self.k!r}")
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"complex_conv stride must be a positive int; got {self.stride!r}")
        if self.padding_mode not in ("zeros", "circular"):
            raise ValueError(f"complex_conv padding_mode must be 'zeros' or 'circular'; got {self.padding_mode!r}")

    def out_type(self, t):
        _require_complex(self, t)
        return Field(self.out, kind="complex")

    def out_size(self, t, size):
        p = self.k // 2
        return tuple(floordiv(n + 2 * p - self.k, self.stride) + 1 for n in size)

    def cost(self, t, size):
        ho, wo = self.out_size(t, size)
        per = t.channels * self.k * self.k
        params = 2 * self.out * per + (2 * self.out if self.bias else 0)
        return Cost(params, 4 * self.out * per * ho * wo)

    def equivariance(self, t):
        if self.k == 1 and self.stride == 1:
            # mixing channels of different rotation orders breaks the rotation actions
            return frozenset({"shift"}) if _ordered(t) else ALL_TRANSFORMS
        return frozenset({"shift"}) if self.padding_mode == "circular" else frozenset()

    def lipschitz_bound(self, m, size=None):
        overlap = windows_per_pixel(self.k, self.stride)
        return spectral_norm(m.real_weight()) * math.sqrt(overlap)

    def build(self, t):
        return ComplexConv2d(t.channels, self.out, self.k, self.stride, self.padding_mode, self.bias)


@op("complex_conv")
def complex_conv(out: Channels, k: int = 3, stride: int = 1, bias: bool = False,
                 padding_mode: str = "zeros") -> ComplexConv:
    """A complex convolution to ``out`` complex channels.

    >>> from operad import ops, Field
    >>> ops.complex_conv(4, k=3).bind(Field(2, kind="complex")).out_type
    Field(4, complex)
    """
    return ComplexConv(out, k, stride, bias, padding_mode)


# ----------------------------------------------------------------------------- modulus
class ModulusModule(nn.Module):
    """``sqrt(re**2 + im**2 + 1e-24)``: |z| to within 1e-12, with a zero (not NaN) gradient at z = 0."""

    def forward(self, x):
        b, c2, h, w = x.shape
        # square, then add the (Re, Im) planes: no strided selects, whose backward copies
        return torch.sqrt((x * x).reshape(b, c2 // 2, 2, h, w).sum(2) + 1e-24)


def _mod_examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 6))
    return modulus(), Field(c, kind="complex"), (draw(st.integers(3, 12)), draw(st.integers(3, 12)))


@register_family("modulus", examples=_mod_examples)
@dataclass(frozen=True, repr=False)
class Modulus(Term):
    """``|z|`` per complex channel: a complex field to a real one, 1-Lipschitz,
    commuting with every spatial transform and with phase rotations."""

    def out_type(self, t):
        _require_complex(self, t)
        return Field(t.channels)

    def nonnegative(self, t, input_nonnegative=False):
        return True

    def equivariance(self, t):
        # a flip maps order m to -m, an action operad does not define on ordered fields
        return ALL_TRANSFORMS - {"flip"} if _ordered(t) else ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return ModulusModule()


@op("modulus")
def modulus() -> Modulus:
    """The modulus of each complex channel (complex to real).

    >>> from operad import ops, Field
    >>> ops.modulus().bind(Field(3, kind="complex")).out_type
    Field(3)
    """
    return Modulus()


# ----------------------------------------------------------------------------- complex batch norm
class ComplexBatchNorm2d(nn.Module):
    """Scale each complex channel by ``gamma / sqrt(E|z|^2 + eps)`` (phase kept, no centering)."""

    def __init__(self, c: int, eps: float, momentum: float, affine: bool):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(c)) if affine else None
        self.register_buffer("running_ms", torch.ones(c))

    def forward(self, x):
        b, c2, h, w = x.shape
        z = x.reshape(b, c2 // 2, 2, h, w)
        if self.training:
            ms = z.square().sum(2).mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_ms.mul_(1 - self.momentum).add_(self.momentum * ms.detach())
        else:
            ms = self.running_ms
        scale = torch.rsqrt(ms + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        return (z * scale.view(1, -1, 1, 1, 1)).reshape(b, c2, h, w)


def _cbn_examples(draw):
    from hypothesis import strategies as st
    return (complex_bn(affine=draw(st.booleans())), Field(draw(st.integers(1, 6)), kind="complex"),
            (draw(st.integers(3, 10)), draw(st.integers(3, 10))))


@register_family("complex_bn", examples=_cbn_examples)
@dataclass(frozen=True, repr=False)
class ComplexBatchNorm(Term):
    """Batch norm on magnitudes: each complex channel is divided by the root mean
    square of its modulus (batch statistics in training, running ones in eval)
    and scaled by a real ``gamma``; phases are kept, so a following modulus sees
    normalised magnitudes. Lipschitz bound (eval): ``max |gamma| / sqrt(ms + eps)``."""

    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True
    linear = True

    def out_type(self, t):
        return _require_complex(self, t)

    def cost(self, t, size):
        return Cost(t.channels if self.affine else 0, 0)

    def equivariance(self, t):
        return ALL_TRANSFORMS - {"flip"} if _ordered(t) else ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        s = (m.running_ms.detach().double() + m.eps).rsqrt()
        if m.weight is not None:
            s = s * m.weight.detach().double().abs()
        return float(s.max())

    def build(self, t):
        return ComplexBatchNorm2d(t.channels, self.eps, self.momentum, self.affine)


@op("complex_bn")
def complex_bn(eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> ComplexBatchNorm:
    """Batch normalisation of complex channels on their magnitudes.

    >>> from operad import ops, Field
    >>> ops.complex_bn().bind(Field(4, kind="complex")).weight.shape
    torch.Size([4])
    """
    return ComplexBatchNorm(eps, momentum, affine)
