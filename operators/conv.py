"""Convolutions: ``conv``, ``depthwise`` and ``pointwise``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import nn

from .algebra.util import (check_channels, check_choice, check_conv_args, check_int, floordiv, is_int, pair,
                           spectral_norm, windows_per_pixel)
from .algebra.errors import OpArgError
from .algebra.field import Channels, Field
from .algebra.term import ALL_TRANSFORMS, Cost, Term, op, register_family

__all__ = ["Conv", "conv", "depthwise", "pointwise", "conv_out_size", "circular_spectral_norm", "INITS"]

#: weight initialisations of ``conv``: He normal (fan out), or "dirac": PyTorch's
#: default uniform init with the first filters of each group set to the identity
#: (an implicit residual; the speed recipe's convolutions start this way), or
#: "small": normal with std 0.03 (torchvision's SSDLite prediction layers: a
#: narrow 1x1 conv under He init would start its box offsets and logits at
#: several units, far from any target)
INITS = ("kaiming", "dirac", "small")


def conv_out_size(n, k: int, stride: int, dilation: int, pad_total):
    """Output length of a convolution along one axis (ints or sympy)."""
    return floordiv(n + pad_total - dilation * (k - 1) - 1, stride) + 1


def circular_spectral_norm(weight: torch.Tensor, size: Tuple[int, int], groups: int = 1, dilation: int = 1,
                           pad_before: Tuple[int, int] = None) -> float:
    """The exact l2 operator norm of a stride-1 circular convolution on an ``size`` grid.

    A circular convolution is diagonalised by the 2-D DFT: at each frequency it acts as the
    ``C_out x C_in`` matrix ``K(f) = sum_t w[:, :, t] e^{-2 pi i <f, t>}`` (taps ``t`` wrapped
    onto the grid, so kernels larger than the grid alias correctly), and its singular values
    are those of the ``K(f)``. The norm is the largest over frequencies and groups.
    ``pad_before`` is the circular padding before the first row / column (default: half the
    dilated kernel); it only shifts the output, which changes no singular value.

    >>> w = torch.zeros(1, 1, 3, 3); w[0, 0, 1, :] = 1.0      # a horizontal box filter
    >>> round(circular_spectral_norm(w, (8, 8)), 6)           # |1 + 2 cos(2 pi f / 8)| peaks at 3
    3.0
    """
    h, wd = size
    out, cin_g, kh, kw = weight.shape
    w = weight.detach().to(torch.float64).reshape(groups, out // groups, cin_g, kh, kw)
    grid = w.new_zeros(groups, out // groups, cin_g, h, wd)
    for u in range(kh):
        for v in range(kw):
            grid[..., (u * dilation) % h, (v * dilation) % wd] += w[..., u, v]
    k = torch.fft.fft2(grid).permute(0, 3, 4, 1, 2)          # groups, H, W, out/g, in/g
    return float(torch.linalg.svdvals(k).amax()) if k.numel() else 0.0


def _examples(draw):
    from hypothesis import strategies as st
    cin = draw(st.integers(1, 6))
    k = draw(st.sampled_from([1, 2, 3, 5]))
    stride = draw(st.sampled_from([1, 1, 2]))
    dilation = draw(st.sampled_from([1, 1, 2])) if k > 1 and stride == 1 else 1
    depthwise_ = draw(st.booleans())
    groups = cin if depthwise_ else 1
    out = cin * draw(st.integers(1, 2)) if depthwise_ else draw(st.integers(1, 6))
    padding = draw(st.sampled_from(["same", "valid", 1]))
    mode = draw(st.sampled_from(["zeros", "circular"])) if padding == "same" else "zeros"
    bias = draw(st.booleans())
    h = draw(st.integers(max(8, dilation * k + 1), 14))
    w = draw(st.integers(max(8, dilation * k + 1), 14))
    init = draw(st.sampled_from(INITS))
    term = conv(out, k=k, stride=stride, dilation=dilation, groups=groups, bias=bias,
                padding=padding, padding_mode=mode, init=init)
    return term, Field(cin), (h, w)


@register_family("conv", examples=_examples)
@dataclass(frozen=True, repr=False)
class Conv(Term):
    """A 2-D convolution. ``out=None`` keeps the input width; ``groups=0`` means
    one group per input channel (depthwise). ``init`` is one of :data:`INITS`."""

    out: Optional[Channels] = None
    k: Union[int, Tuple[int, int]] = 3
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    padding: Union[str, int] = "same"
    padding_mode: str = "zeros"
    init: str = "kaiming"
    _positional = ("out",)
    linear = True

    def __post_init__(self):
        check_conv_args("conv", self.k, self.stride, self.dilation, self.padding, self.padding_mode)
        check_channels("conv", "out", self.out, none_ok=True)
        check_int("conv", "groups", self.groups, lo=0)
        if is_int(self.out) and self.groups > 0 and self.out % self.groups:
            raise OpArgError(f"conv out={self.out} must be divisible by groups={self.groups}")
        check_choice("conv", "init", self.init, INITS)

    # -- shape -----------------------------------------------------------------
    def _groups(self, t: Field):
        return t.channels if self.groups == 0 else self.groups

    def _out(self, t: Field):
        if self.out is None:
            return t.channels
        return self.out

    def _pads(self):
        """Total padding per axis (top+bottom, left+right) and whether torch's 'same' is used."""
        kh, kw = pair(self.k)
        if self.padding == "valid":
            return (0, 0), False
        if isinstance(self.padding, int):
            return (2 * self.padding, 2 * self.padding), False
        if self.stride == 1 and ((kh - 1) * self.dilation % 2 or (kw - 1) * self.dilation % 2):
            return ((kh - 1) * self.dilation, (kw - 1) * self.dilation), True
        return (2 * (self.dilation * (kh - 1) // 2), 2 * (self.dilation * (kw - 1) // 2)), False

    def out_type(self, t):
        self.require_real(t)
        g, out = self._groups(t), self._out(t)
        if isinstance(t.channels, int) and t.channels % g:
            self.reject(f"input channels divisible by groups={g}", t)
        if isinstance(out, int) and isinstance(g, int) and out % g:
            self.reject(f"out channels divisible by groups={g} (out={out})", t)
        return Field(out)

    def out_size(self, t, size):
        (ph, pw), _ = self._pads()
        kh, kw = pair(self.k)
        return (conv_out_size(size[0], kh, self.stride, self.dilation, ph),
                conv_out_size(size[1], kw, self.stride, self.dilation, pw))

    def cost(self, t, size):
        kh, kw = pair(self.k)
        out, g = self._out(t), self._groups(t)
        cin = t.channels
        per_group = cin // g if isinstance(cin, int) and isinstance(g, int) else cin / g
        per_out = per_group * kh * kw
        params = out * per_out + (out if self.bias else 0)
        ho, wo = self.out_size(t, size)
        return Cost(params, out * per_out * ho * wo)

    # -- properties ---------------------------------------------------------------
    def _pointwise(self) -> bool:
        return pair(self.k) == (1, 1) and self.stride == 1 and self.padding in ("same", "valid", 0)

    def equivariance(self, t):
        if self._pointwise():
            return ALL_TRANSFORMS
        if self.padding == "same" and self.padding_mode == "circular" and not self._pads()[1]:
            return frozenset({"shift"})
        return frozenset()

    def _circular(self, size) -> bool:
        """Whether the bound module is a circular convolution (strided: subsampled) on ``size``:
        circular padding of exactly the dilated kernel's extent, and a concrete size."""
        if self.padding_mode != "circular" or size is None or not all(isinstance(n, int) for n in size):
            return False
        (ph, pw), _ = self._pads()
        kh, kw = pair(self.k)
        return (ph, pw) == (self.dilation * (kh - 1), self.dilation * (kw - 1)) and (ph + 1) // 2 <= size[0] \
            and (pw + 1) // 2 <= size[1]

    def lipschitz_bound(self, m, size=None):
        """``sqrt(windows per pixel) * ||W||_2`` in general; with circular padding and a known
        size the exact norm from the FFT (:func:`circular_spectral_norm`; a stride subsamples
        the output, so it bounds the strided convolution too), whichever is smaller."""
        overlap = windows_per_pixel(self.k, self.stride, self.dilation)
        w = m.weight
        g = m.groups
        norms = [spectral_norm(wg) for wg in w.chunk(g, dim=0)]
        bound = max(norms) * math.sqrt(overlap)
        if self._circular(size):
            bound = min(bound, circular_spectral_norm(w, size, g, self.dilation))
        return bound

    def build(self, t):
        (ph, pw), torch_same = self._pads()
        padding = "same" if torch_same else (ph // 2, pw // 2)
        m = nn.Conv2d(t.channels, self._out(t), pair(self.k), stride=self.stride, padding=padding,
                      dilation=self.dilation, groups=self._groups(t), bias=self.bias,
                      padding_mode=self.padding_mode)
        if self.init == "dirac":
            _dirac_(m.weight, m.groups)
        elif self.init == "small":
            nn.init.normal_(m.weight, 0.0, 0.03)
        else:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return m


@torch.no_grad()
def _dirac_(w: torch.Tensor, groups: int) -> None:
    """Keep PyTorch's default init, but make the first ``min(out, in) / groups``
    filters of every group identity maps (impulses at the kernel centre)."""
    for wg in w.chunk(groups, dim=0):
        n = min(wg.shape[0], wg.shape[1])
        nn.init.dirac_(wg[:n])


@op("conv")
def conv(out: Optional[Channels] = None, k=3, stride: int = 1, dilation: int = 1, groups: int = 1,
         bias: bool = True, padding: Union[str, int] = "same", padding_mode: str = "zeros",
         init: str = "kaiming") -> Conv:
    """A 2-D convolution to ``out`` channels.

    ``padding="same"`` keeps the size at stride 1 (and gives ``ceil(H/stride)``
    for odd kernels at larger strides); ``padding_mode="circular"`` makes it
    commute with circular shifts. ``init="dirac"`` starts the first filters
    as identity maps, ``init="small"`` near zero (see :data:`INITS`).

    >>> from operad import ops, Field
    >>> ops.conv(16, k=3, stride=2).bind(Field(3)).out_type
    Field(16)
    """
    return Conv(out, k, stride, dilation, groups, bias, padding, padding_mode, init)


@op("conv")
def depthwise(k=3, stride: int = 1, multiplier: int = 1, dilation: int = 1, bias: bool = True,
              padding: Union[str, int] = "same", padding_mode: str = "zeros") -> Conv:
    """A depthwise convolution: one k x k filter per channel (``multiplier`` per channel).

    >>> from operad import ops, Field
    >>> ops.depthwise(3).bind(Field(8)).weight.shape
    torch.Size([8, 1, 3, 3])
    """
    check_int("depthwise", "multiplier", multiplier)
    if multiplier == 1:
        return Conv(None, k, stride, dilation, 0, bias, padding, padding_mode)
    return _DepthwiseMultiplier(k, stride, multiplier, dilation, bias, padding, padding_mode)


@op("conv")
def pointwise(out: Optional[Channels] = None, bias: bool = True, groups: int = 1) -> Conv:
    """A 1x1 convolution (channel mixing at every pixel).

    >>> from operad import ops, Field
    >>> ops.pointwise(4).bind(Field(8)).weight.shape
    torch.Size([4, 8, 1, 1])
    """
    return Conv(out, 1, 1, 1, groups, bias, "same", "zeros")


@dataclass(frozen=True, repr=False)
class _DepthwiseMultiplier(Conv):
    """Depthwise convolution with ``multiplier`` filters per input channel."""

    multiplier: int = 1

    def __init__(self, k, stride, multiplier, dilation, bias, padding, padding_mode):
        check_int("depthwise", "multiplier", multiplier)
        object.__setattr__(self, "multiplier", multiplier)
        Conv.__init__(self, None, k, stride, dilation, 0, bias, padding, padding_mode)

    def _out(self, t):
        return t.channels * self.multiplier
