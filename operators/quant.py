"""Quantized networks (QNN, Hubara et al. 2016): ``quantize``, ``quant_conv``
and ``quant_linear``.

``ops.quantize(bits)`` rounds activations to ``2**bits`` levels on
``[lo, hi]`` (or to signed powers of two with ``log=True``) with the
straight-through estimator; ``quant_conv``/``quant_linear`` quantize their
weights to ``w_bits`` (symmetric levels scaled by the filter's max ``|W|``;
``w_bits=1`` is BWN's ``alpha * sign(W)``) and their input to ``a_bits``
(``a_bits=32`` leaves it alone), and can round their parameter gradients to
``grad_bits`` in the backward pass (the paper uses 6).

>>> from operad import ops, Field, cost
>>> m = ops.quant_conv(8, w_bits=1, a_bits=2, bias=False).bind(Field(4))
>>> c = cost(m, size=(6, 6))
>>> c.macs, c.bops       # each MAC: 1-bit weight times 2-bit input
(10368, 20736)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from ._quant import grad_quant, log_quant, uniform_quant, weight_quant
from .algebra.field import Channels, Field
from .algebra.term import ALL_TRANSFORMS, POINTWISE, Cost, Term, op, register_family
from .algebra.util import pair, spectral_norm, windows_per_pixel
from .conv import Conv
from .linear import Linear

__all__ = ["Quantize", "QuantConv", "QuantLinear", "quantize", "quant_conv", "quant_linear",
           "QuantConv2d", "QuantLinearModule", "act_quant"]


def act_quant(x: torch.Tensor, bits: int, lo: float, hi: float, log: bool) -> torch.Tensor:
    """Activation quantizer: uniform ``2**bits`` levels on ``[lo, hi]``, or (``log``)
    signed powers of two up to ``hi``; ``bits >= 32`` is the identity."""
    if bits >= 32:
        return x
    return log_quant(x, bits, hi) if log else uniform_quant(x, bits, lo, hi)


def _check_bits(name: str, bits, lo: int = 1) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= 32:
        raise ValueError(f"{name} must be an int in {lo}..32; got {bits!r}")


# ---------------------------------------------------------------------------
# quantize
# ---------------------------------------------------------------------------
class QuantizeModule(nn.Module):
    def __init__(self, bits: int, lo: float, hi: float, log: bool):
        super().__init__()
        self.bits, self.lo, self.hi, self.log = bits, lo, hi, log

    def forward(self, x):
        return act_quant(x, self.bits, self.lo, self.hi, self.log)


def _q_examples(draw):
    from hypothesis import strategies as st
    log = draw(st.booleans())
    bits = draw(st.integers(2 if log else 1, 4))
    rank = draw(st.sampled_from([2, 2, 0]))
    size = (draw(st.integers(3, 9)), draw(st.integers(3, 9))) if rank == 2 else None
    lo = draw(st.sampled_from([-1.0, 0.0]))
    return quantize(bits, lo=lo, hi=1.0, log=log), Field(draw(st.integers(1, 6)), rank=rank), size


@register_family("quantize", examples=_q_examples)
@dataclass(frozen=True, repr=False)
class Quantize(Term):
    """k-bit activations with the straight-through estimator (gradient 1 inside
    the range, 0 outside). No Lipschitz bound (rounding jumps)."""

    bits: int = 2
    lo: float = 0.0
    hi: float = 1.0
    log: bool = False
    _positional = ("bits",)
    keeps_bits = True

    def __post_init__(self):
        _check_bits("quantize bits", self.bits, 2 if self.log else 1)
        if not self.lo < self.hi:
            raise ValueError(f"quantize needs lo < hi; got [{self.lo}, {self.hi}]")

    def out_type(self, t):
        return self.require_real(t, rank=None).with_(bits=min(self.bits, t.bits))

    def equivariance(self, t):
        return ALL_TRANSFORMS if t.rank == 0 else POINTWISE

    def build(self, t):
        return QuantizeModule(self.bits, self.lo, self.hi, self.log)


@op("quantize")
def quantize(bits: int = 2, lo: float = 0.0, hi: float = 1.0, log: bool = False) -> Quantize:
    """Round activations to ``2**bits`` evenly spaced levels on ``[lo, hi]``
    (``log=True``: signed powers of two, QNN's log quantization).

    >>> from operad import ops, Field
    >>> ops.quantize(2).bind(Field(8)).out_type
    Field(8, bits=2)
    """
    return Quantize(bits, lo, hi, log)


# ---------------------------------------------------------------------------
# shared by quant_conv and quant_linear
# ---------------------------------------------------------------------------
class _QuantMixin:
    """Weight, input and gradient quantization, and the widths ``count`` reads."""

    def _setup(self, w_bits, a_bits, in_bits, a_range, log, grad_bits):
        self.w_bits, self.log, self.grad_bits = w_bits, log, grad_bits
        self.a_quant_bits = a_bits
        self.a_bits = min(a_bits, in_bits)
        self.a_lo, self.a_hi = a_range

    def quant_weight(self) -> torch.Tensor:
        return weight_quant(grad_quant(self.weight, self.grad_bits), self.w_bits, self.log)

    def quant_input(self, x):
        return act_quant(x, self.a_quant_bits, self.a_lo, self.a_hi, self.log)

    def _bias(self):
        return None if self.bias is None else grad_quant(self.bias, self.grad_bits)

    def _per_filter_floats(self) -> int:
        # a scale per filter (alpha for 1 bit), none at full precision
        return 0 if self.w_bits >= 32 else self.weight.shape[0]

    def storage_bits(self) -> int:
        b = self.bias.numel() * 32 if self.bias is not None else 0
        return self.weight.numel() * min(self.w_bits, 32) + 32 * self._per_filter_floats() + b

    def bop_bits(self) -> int:
        return min(self.w_bits, 32) * self.a_bits


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """A convolution with k-bit weights and inputs."""

    def __init__(self, *args, w_bits=1, a_bits=2, in_bits=32, a_range=(0.0, 1.0), log=False, grad_bits=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(w_bits, a_bits, in_bits, a_range, log, grad_bits)

    def forward(self, x):
        return self._conv_forward(self.quant_input(x), self.quant_weight(), self._bias())


class QuantLinearModule(_QuantMixin, nn.Linear):
    """A linear layer with k-bit weights and inputs."""

    def __init__(self, cin, out, bias=True, w_bits=1, a_bits=2, in_bits=32, a_range=(0.0, 1.0), log=False,
                 grad_bits=None):
        super().__init__(cin, out, bias=bias)
        self._setup(w_bits, a_bits, in_bits, a_range, log, grad_bits)

    def forward(self, x):
        return F.linear(self.quant_input(x), self.quant_weight(), self._bias())


class _QuantTerm:
    """What quant_conv and quant_linear state alike."""

    def _check(self, name):
        _check_bits(f"{name} w_bits", self.w_bits, 2 if self.log else 1)
        _check_bits(f"{name} a_bits", self.a_bits, 2 if self.log else 1)
        if self.grad_bits is not None:
            _check_bits(f"{name} grad_bits", self.grad_bits, 2)
        if not self.a_range[0] < self.a_range[1]:
            raise ValueError(f"{name} a_range must be (lo, hi) with lo < hi; got {self.a_range}")

    def eff_a_bits(self, t: Field) -> int:
        return min(self.a_bits, t.bits)

    def _quant_cost(self, base: Cost, t: Field, weights, out) -> Cost:
        wb = min(self.w_bits, 32)
        per_filter = 0 if wb >= 32 else out
        bias = out if self.bias else 0
        nbytes = sympy.Rational(wb, 8) * weights + 4 * (per_filter + bias)
        return Cost(base.params, base.macs, base.macs * wb * self.eff_a_bits(t), nbytes)

    def _bound(self, w: torch.Tensor):
        return None if self.a_bits < 32 else w


def _qc_examples(draw):
    from hypothesis import strategies as st
    cin = draw(st.integers(1, 5))
    log = draw(st.booleans())
    lo_bits = 2 if log else 1
    w_bits = draw(st.sampled_from([lo_bits, 2, 3, 8, 32]))
    a_bits = draw(st.sampled_from([lo_bits, 2, 4, 32]))
    k = draw(st.sampled_from([1, 3]))
    term = quant_conv(draw(st.integers(1, 5)), k=k, stride=draw(st.sampled_from([1, 2])), bias=draw(st.booleans()),
                      w_bits=w_bits, a_bits=a_bits, log=log, grad_bits=draw(st.sampled_from([None, 6])),
                      a_range=draw(st.sampled_from([(0.0, 1.0), (-1.0, 1.0)])))
    return term, Field(cin), (draw(st.integers(k + 3, 10)), draw(st.integers(k + 3, 10)))


@register_family("quant_conv", examples=_qc_examples)
@dataclass(frozen=True, repr=False)
class QuantConv(_QuantTerm, Conv):
    """A convolution with ``w_bits`` weights and ``a_bits`` inputs (QNN).

    Cost: each MAC is ``w_bits * a_bits`` bit operations (``a_bits`` no more than
    the input field's); bytes: ``w_bits`` per weight, a float32 scale per filter
    (below 32 bits) and the bias. Lipschitz: with float inputs (``a_bits=32``)
    it is linear in its input and gets the conv bound of its quantized
    weights; otherwise none (rounding jumps).
    """

    w_bits: int = 1
    a_bits: int = 2
    a_range: Tuple[float, float] = (0.0, 1.0)
    log: bool = False
    grad_bits: Optional[int] = None
    linear = False

    def __post_init__(self):
        super().__post_init__()
        self._check("quant_conv")

    def cost(self, t, size):
        base = Conv.cost(self, t, size)
        out = self._out(t)
        return self._quant_cost(base, t, base.params - (out if self.bias else 0), out)

    def equivariance(self, t):
        eq = Conv.equivariance(self, t)  # rounding is point-wise: it keeps grid maps, not interpolated rotations
        return eq - {"rotation"} if self.a_bits < 32 else eq

    def lipschitz_bound(self, m, size=None):
        if self.a_bits < 32:
            return None
        overlap = windows_per_pixel(self.k, self.stride, self.dilation)
        w = m.quant_weight().detach()
        return max(spectral_norm(wg) for wg in w.chunk(m.groups, dim=0)) * math.sqrt(overlap)

    def build(self, t):
        (ph, pw), torch_same = self._pads()
        padding = "same" if torch_same else (ph // 2, pw // 2)
        m = QuantConv2d(t.channels, self._out(t), pair(self.k), stride=self.stride, padding=padding,
                        dilation=self.dilation, groups=self._groups(t), bias=self.bias,
                        padding_mode=self.padding_mode, w_bits=self.w_bits, a_bits=self.a_bits, in_bits=t.bits,
                        a_range=tuple(self.a_range), log=self.log, grad_bits=self.grad_bits)
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return m


@op("quant_conv")
def quant_conv(out: Channels = None, k=3, stride: int = 1, dilation: int = 1, groups: int = 1, bias: bool = True,
               padding="same", padding_mode: str = "zeros", w_bits: int = 1, a_bits: int = 2,
               a_range: Tuple[float, float] = (0.0, 1.0), log: bool = False,
               grad_bits: Optional[int] = None) -> QuantConv:
    """A QNN convolution: ``w_bits`` weights, input rounded to ``a_bits`` levels on
    ``a_range`` (``32`` keeps either at full precision), straight-through
    gradients; ``log=True`` uses powers of two for both; ``grad_bits`` rounds the
    parameter gradients in the backward pass.

    >>> from operad import ops, Field
    >>> ops.quant_conv(16, w_bits=2, a_bits=2).bind(Field(8)).out_type
    Field(16)
    """
    return QuantConv(out=out, k=k, stride=stride, dilation=dilation, groups=groups, bias=bias, padding=padding,
                     padding_mode=padding_mode, w_bits=w_bits, a_bits=a_bits, a_range=tuple(a_range), log=log,
                     grad_bits=grad_bits)


def _ql_examples(draw):
    from hypothesis import strategies as st
    log = draw(st.booleans())
    lo_bits = 2 if log else 1
    term = quant_linear(draw(st.integers(1, 8)), bias=draw(st.booleans()),
                        w_bits=draw(st.sampled_from([lo_bits, 2, 4, 32])), a_bits=draw(st.sampled_from([lo_bits, 2, 32])),
                        log=log, grad_bits=draw(st.sampled_from([None, 6])))
    return term, Field(draw(st.integers(1, 8)), rank=0), None


@register_family("quant_linear", examples=_ql_examples)
@dataclass(frozen=True, repr=False)
class QuantLinear(_QuantTerm, Linear):
    """A fully connected layer with ``w_bits`` weights and ``a_bits`` inputs; see :class:`QuantConv`."""

    w_bits: int = 1
    a_bits: int = 2
    a_range: Tuple[float, float] = (0.0, 1.0)
    log: bool = False
    grad_bits: Optional[int] = None
    linear = False

    def __post_init__(self):
        self._check("quant_linear")

    def cost(self, t, size):
        return self._quant_cost(Linear.cost(self, t, size), t, t.channels * self.out, self.out)

    def equivariance(self, t):
        return ALL_TRANSFORMS if self.a_bits >= 32 else POINTWISE

    def lipschitz_bound(self, m, size=None):
        return None if self.a_bits < 32 else spectral_norm(m.quant_weight().detach())

    def build(self, t):
        return QuantLinearModule(t.channels, self.out, bias=self.bias, w_bits=self.w_bits, a_bits=self.a_bits,
                                 in_bits=t.bits, a_range=tuple(self.a_range), log=self.log, grad_bits=self.grad_bits)


@op("quant_linear")
def quant_linear(out: Channels, bias: bool = True, w_bits: int = 1, a_bits: int = 2,
                 a_range: Tuple[float, float] = (0.0, 1.0), log: bool = False,
                 grad_bits: Optional[int] = None) -> QuantLinear:
    """A QNN fully connected layer; see :func:`quant_conv`.

    >>> from operad import ops, Field
    >>> ops.quant_linear(10, w_bits=2, a_bits=2).bind(Field(64, rank=0)).out_type
    Field(10, rank=0)
    """
    return QuantLinear(out=out, bias=bias, w_bits=w_bits, a_bits=a_bits, a_range=tuple(a_range), log=log,
                       grad_bits=grad_bits)
