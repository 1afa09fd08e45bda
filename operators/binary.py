"""Binary networks: ``sign``, ``binary_conv`` and ``binary_linear``
(Binary-Weight-Networks and XNOR-Net, Rastegari et al. 2016; BinaryNet, Hubara et al. 2016).

``scheme="bwn"`` binarizes the weights only: ``W ~ alpha * sign(W)``, ``alpha``
the mean ``|W|`` of each output filter. ``scheme="xnor"`` also binarizes the
input, so the layer computes ``sign(I) (*) sign(W)`` times ``alpha``: the
binary products that :mod:`operad.operators.rewrites.pack` runs with
xor/popcount. Types carry the widths (``Field(C, bits=1)`` after ``sign``) and
costs count bit operations (``bops``) and storage (``bytes``) exactly.

>>> from operad import ops, Field, cost
>>> m = (ops.sign() >> ops.binary_conv(8, bias=False)).bind(Field(4))
>>> m[0].out_type
Field(4, bits=1)
>>> c = cost(m, size=(6, 6))
>>> c.macs, c.bops, c.bytes    # 8*4*9*36 binary MACs; 288 one-bit weights + 8 alphas
(10368, 10368, 68)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from ._quant import binary_alpha, binary_weight, sign_ste
from .algebra.field import Channels, Field
from .algebra.term import ALL_TRANSFORMS, POINTWISE, Cost, Term, op, register_family
from .algebra.util import pair, spectral_norm, windows_per_pixel
from .conv import Conv
from .linear import Linear

__all__ = ["Sign", "BinaryConv", "BinaryLinear", "sign", "binary_conv", "binary_linear",
           "BinaryConv2d", "BinaryLinearModule", "InputScale", "SCHEMES"]

SCHEMES = ("bwn", "xnor")


# ---------------------------------------------------------------------------
# sign
# ---------------------------------------------------------------------------
class SignModule(nn.Module):
    def forward(self, x):
        return sign_ste(x)


def _sign_examples(draw):
    from hypothesis import strategies as st
    rank = draw(st.sampled_from([2, 2, 0]))
    size = (draw(st.integers(3, 9)), draw(st.integers(3, 9))) if rank == 2 else None
    return sign(), Field(draw(st.integers(1, 6)), rank=rank), size


@register_family("sign", examples=_sign_examples)
@dataclass(frozen=True, repr=False)
class Sign(Term):
    """Binary activation: ``+1`` where ``x >= 0``, else ``-1``; straight-through
    gradient ``1`` where ``|x| <= 1``. No Lipschitz bound (a jump at 0)."""

    keeps_bits = True

    def out_type(self, t):
        return self.require_real(t, rank=None).with_(bits=1)

    def equivariance(self, t):
        return ALL_TRANSFORMS if t.rank == 0 else POINTWISE

    def build(self, t):
        return SignModule()


@op("sign")
def sign() -> Sign:
    """Binary activation ``sign(x)`` (``sign(0) = +1``) with the straight-through estimator.

    >>> from operad import ops, Field
    >>> ops.sign().bind(Field(3)).out_type
    Field(3, bits=1)
    """
    return Sign()


# ---------------------------------------------------------------------------
# binary_conv
# ---------------------------------------------------------------------------
def _signs(w: torch.Tensor, center: bool) -> torch.Tensor:
    """``sign(W)`` (after centring, as :func:`binary_weight`) with its straight-through gradient.

    XNOR layers compute ``alpha * (sign(I) (*) sign(W))`` in this order: the
    +-1 sums are integers, exact in float32 (and bf16 up to 256), so the result,
    and the sign the next layer takes of it, is the same in PyTorch, onnxruntime
    or on a GPU. ``(alpha * sign(W)) (*) sign(I)`` rounds each product, and a
    sum that is exactly 0 comes out as +-1e-7, whose sign then flips by runtime.
    """
    if center:
        w = (w - w.mean(dim=tuple(range(1, w.dim())), keepdim=True)).clamp(-1.0, 1.0)
    return sign_ste(w)


class InputScale(nn.Module):
    """XNOR-Net's ``K``: the channel mean of ``|I|`` filtered by a ``k x k`` box
    of the convolution's geometry (a one-channel convolution, counted as MACs)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.k, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation
        self.padding, self.padding_mode = conv.padding, conv.padding_mode
        self.pad4 = tuple(conv._reversed_padding_repeated_twice)

    def forward(self, x):
        a = x.abs().mean(1, keepdim=True)
        box = torch.full((1, 1) + tuple(self.k), 1.0 / (self.k[0] * self.k[1]), dtype=x.dtype, device=x.device)
        if self.padding_mode != "zeros":
            return F.conv2d(F.pad(a, self.pad4, mode=self.padding_mode), box, None, self.stride, 0, self.dilation)
        return F.conv2d(a, box, None, self.stride, self.padding, self.dilation)


class BinaryConv2d(nn.Conv2d):
    """A convolution with ``alpha * sign(W)`` weights (and, for XNOR, ``sign(I)`` inputs).

    ``storage_bits`` and ``bop_bits`` tell :func:`operad.count` its widths.
    """

    def __init__(self, *args, scheme: str = "bwn", center: bool = False, scale_input: bool = False,
                 a_bits: int = 32, **kwargs):
        super().__init__(*args, **kwargs)
        self.scheme, self.center, self.a_bits = scheme, center, 1 if scheme == "xnor" else a_bits
        self.scale = InputScale(self) if scale_input else None

    def binary_weight(self) -> torch.Tensor:
        return binary_weight(self.weight, self.center)

    def alpha(self) -> torch.Tensor:
        return binary_alpha(self.weight, self.center)

    def forward(self, x):
        k = self.scale(x) if self.scale is not None else None
        if self.scheme == "xnor":  # integer sums of +-1 products, then alpha: exact in every runtime
            y = self._conv_forward(sign_ste(x), _signs(self.weight, self.center), None)
            y = y * self.alpha().view(1, -1, 1, 1)
        else:
            y = self._conv_forward(x, self.binary_weight(), None)
        if k is not None:
            y = y * k
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def storage_bits(self) -> int:
        return self.weight.numel() + 32 * self.out_channels + (32 * self.bias.numel() if self.bias is not None else 0)

    def bop_bits(self) -> int:
        return self.a_bits


def _conv_examples(draw):
    from hypothesis import strategies as st
    cin = draw(st.integers(1, 6))
    k = draw(st.sampled_from([1, 2, 3]))
    stride = draw(st.sampled_from([1, 1, 2]))
    groups = draw(st.sampled_from([1, 1, cin]))
    out = groups * draw(st.integers(1, 3)) if groups > 1 else draw(st.integers(1, 6))
    padding = draw(st.sampled_from(["same", "valid", 1]))
    mode = draw(st.sampled_from(["zeros", "circular"])) if padding == "same" else "zeros"
    scheme = draw(st.sampled_from(SCHEMES))
    scale_input = scheme == "xnor" and draw(st.booleans())
    term = binary_conv(out, k=k, stride=stride, groups=groups, bias=draw(st.booleans()), padding=padding,
                       padding_mode=mode, scheme=scheme, center=draw(st.booleans()), scale_input=scale_input)
    pre_sign = draw(st.booleans())
    h, w = draw(st.integers(k + 3, 12)), draw(st.integers(k + 3, 12))
    if pre_sign:  # BinaryNet's order: the input is already binary
        return sign() >> term, Field(cin), (h, w)
    return term, Field(cin), (h, w)


def _bytes(weights, per_filter_floats) -> sympy.Expr:
    return sympy.Rational(1, 8) * weights + 4 * per_filter_floats


@register_family("binary_conv", examples=_conv_examples)
@dataclass(frozen=True, repr=False)
class BinaryConv(Conv):
    """A convolution with binary weights ``alpha * sign(W)`` (``scheme="bwn"``), or
    binary weights and inputs (``scheme="xnor"``).

    Cost: the MACs of the convolution, each ``1 * a_bits`` bit operations
    (``a_bits`` = 1 for XNOR, the input field's bits for BWN), plus, with
    ``scale_input``, the one-channel box filter of ``K`` at full precision.
    Bytes: one bit per weight, a float32 ``alpha`` per filter, the bias.
    Lipschitz: BWN is linear in its input, bounded by the conv bound of
    ``alpha * sign(W)``; XNOR has no bound (``sign`` jumps).
    """

    scheme: str = "bwn"
    center: bool = False
    scale_input: bool = False
    linear = False  # not an nn.Conv2d weight: fusion passes must leave it alone

    def __post_init__(self):
        super().__post_init__()
        if self.scheme not in SCHEMES:
            raise ValueError(f"binary_conv scheme must be 'bwn' or 'xnor'; got {self.scheme!r}")
        if self.scale_input and self.scheme != "xnor":
            raise ValueError("binary_conv scale_input=True needs scheme='xnor' (K scales a binarized input)")

    def a_bits(self, t: Field) -> int:
        return 1 if self.scheme == "xnor" else t.bits

    def cost(self, t, size):
        base = super().cost(t, size)
        out = self._out(t)
        weights = base.params - (out if self.bias else 0)
        bops = base.macs * self.a_bits(t)
        macs = base.macs
        if self.scale_input:
            kh, kw = pair(self.k)
            ho, wo = self.out_size(t, size)
            macs = macs + kh * kw * ho * wo
            bops = bops + 1024 * kh * kw * ho * wo
        return Cost(base.params, macs, bops, _bytes(weights, out + (out if self.bias else 0)))

    def equivariance(self, t):
        eq = super().equivariance(t)  # sign is point-wise: it keeps grid maps, not interpolated rotations
        return eq - {"rotation"} if self.scheme == "xnor" else eq

    def lipschitz_bound(self, m, size=None):
        if self.scheme == "xnor":
            return None
        overlap = windows_per_pixel(self.k, self.stride, self.dilation)
        w = m.binary_weight().detach()
        return max(spectral_norm(wg) for wg in w.chunk(m.groups, dim=0)) * math.sqrt(overlap)

    def build(self, t):
        (ph, pw), torch_same = self._pads()
        padding = "same" if torch_same else (ph // 2, pw // 2)
        m = BinaryConv2d(t.channels, self._out(t), pair(self.k), stride=self.stride, padding=padding,
                         dilation=self.dilation, groups=self._groups(t), bias=self.bias,
                         padding_mode=self.padding_mode, scheme=self.scheme, center=self.center,
                         scale_input=self.scale_input, a_bits=t.bits)
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return m


@op("binary_conv")
def binary_conv(out: Channels = None, k=3, stride: int = 1, dilation: int = 1, groups: int = 1,
                bias: bool = True, padding="same", padding_mode: str = "zeros", scheme: str = "bwn",
                center: bool = False, scale_input: bool = False) -> BinaryConv:
    """A binary convolution: weights ``alpha * sign(W)``, ``alpha = mean |W|`` per output filter.

    ``scheme="xnor"`` also binarizes the input (``sign``, straight-through
    gradient), so the products are XNORs; ``scale_input=True`` multiplies by the
    paper's ``K`` (the channel mean of ``|I|`` convolved with a ``k x k`` box),
    which the reference implementations omit. ``center=True`` mean-centres and
    clips each filter to [-1, 1] before binarizing, as the reference code does to
    its stored weights (the paper does not).

    >>> from operad import ops, Field
    >>> ops.binary_conv(16, scheme="xnor").bind(Field(8)).out_type
    Field(16)
    """
    return BinaryConv(out=out, k=k, stride=stride, dilation=dilation, groups=groups, bias=bias, padding=padding,
                      padding_mode=padding_mode, scheme=scheme, center=center, scale_input=scale_input)


# ---------------------------------------------------------------------------
# binary_linear
# ---------------------------------------------------------------------------
class BinaryLinearModule(nn.Linear):
    """A linear layer with ``alpha * sign(W)`` weights (XNOR: and ``sign(x)`` inputs)."""

    def __init__(self, cin: int, out: int, bias: bool = True, scheme: str = "bwn", center: bool = False,
                 a_bits: int = 32):
        super().__init__(cin, out, bias=bias)
        self.scheme, self.center, self.a_bits = scheme, center, 1 if scheme == "xnor" else a_bits

    def binary_weight(self) -> torch.Tensor:
        return binary_weight(self.weight, self.center)

    def alpha(self) -> torch.Tensor:
        return binary_alpha(self.weight, self.center)

    def forward(self, x):
        if self.scheme == "xnor":  # as BinaryConv2d: the integer sum first, then alpha
            y = F.linear(sign_ste(x), _signs(self.weight, self.center)) * self.alpha()
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.binary_weight(), self.bias)

    def storage_bits(self) -> int:
        return self.weight.numel() + 32 * self.out_features + (32 * self.bias.numel() if self.bias is not None else 0)

    def bop_bits(self) -> int:
        return self.a_bits


def _linear_examples(draw):
    from hypothesis import strategies as st
    term = binary_linear(draw(st.integers(1, 8)), bias=draw(st.booleans()), scheme=draw(st.sampled_from(SCHEMES)),
                         center=draw(st.booleans()))
    return term, Field(draw(st.integers(1, 8)), rank=0), None


@register_family("binary_linear", examples=_linear_examples)
@dataclass(frozen=True, repr=False)
class BinaryLinear(Linear):
    """A fully connected layer with binary weights (and, for XNOR, inputs); costs
    and bounds as :class:`BinaryConv`."""

    scheme: str = "bwn"
    center: bool = False
    linear = False

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"binary_linear scheme must be 'bwn' or 'xnor'; got {self.scheme!r}")

    def cost(self, t, size):
        base = super().cost(t, size)
        a_bits = 1 if self.scheme == "xnor" else t.bits
        return Cost(base.params, base.macs, base.macs * a_bits,
                    _bytes(t.channels * self.out, self.out + (self.out if self.bias else 0)))

    def lipschitz_bound(self, m, size=None):
        return None if self.scheme == "xnor" else spectral_norm(m.binary_weight().detach())

    def build(self, t):
        return BinaryLinearModule(t.channels, self.out, bias=self.bias, scheme=self.scheme, center=self.center,
                                  a_bits=t.bits)


@op("binary_linear")
def binary_linear(out: Channels, bias: bool = True, scheme: str = "bwn", center: bool = False) -> BinaryLinear:
    """A fully connected layer with weights ``alpha * sign(W)`` (``scheme="xnor"``:
    binary inputs too); see :func:`binary_conv`.

    >>> from operad import ops, Field
    >>> ops.binary_linear(10, scheme="xnor").bind(Field(64, rank=0)).out_type
    Field(10, rank=0)
    """
    return BinaryLinear(out=out, bias=bias, scheme=scheme, center=center)
