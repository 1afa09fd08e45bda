"""The pack rewrite: a trained binary or quantized network in its deployment form.

``pack(model)`` returns a copy of a bound module (in eval mode) in which every
``binary_conv``/``binary_linear`` stores its weights as sign bits (``uint8``,
eight to a byte) and a float32 ``alpha`` per filter, and every
``quant_conv``/``quant_linear`` stores integer levels (``int8``; codes of signed
powers of two for ``log``) and a float32 scale per filter. Everything else
(the float first and last layers, batch norms) is kept as it is.

The packed model computes the trained model's eval function: BWN and k-bit
layers rebuild exactly the weights the trained layer uses; XNOR layers compute
``sign(I) (*) sign(W)`` with xor and popcount on 64-channel words (exact
integers, :func:`operad.operators._bitpack.xnor_conv2d`) and scale by
``alpha`` afterwards, which differs from the float simulation only by float
rounding. The state dict holds only tensors, so it loads with
``torch.load(..., weights_only=True)`` into ``pack(fresh_model)``.

>>> import torch
>>> from operad import ops, Field
>>> m = (ops.conv(8) >> ops.bn() >> ops.binary_conv(64, scheme="xnor") >> ops.conv(4)).bind(Field(3)).eval()
>>> p = pack(m)
>>> p[2].bits.dtype, tuple(p[2].bits.shape)     # 64 filters of 8*3*3 = 72 bits: 9 bytes each
(torch.uint8, (64, 9))
>>> x = torch.randn(2, 3, 8, 8)
>>> torch.allclose(p(x), m(x), atol=1e-4)
True
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._bitpack import _mismatches, _pack_channels, correction_kernel, pack_signs, pack_words, unpack_signs, xnor_conv2d
from .._quant import weight_levels, weight_scale
from ..binary import BinaryConv2d, BinaryLinearModule, InputScale
from ..quant import QuantConv2d, QuantLinearModule, act_quant as act_quant_fn

__all__ = ["pack", "PackedConv2d", "PackedLinear"]


def _centered(w: torch.Tensor, center: bool) -> torch.Tensor:
    if center:
        dims = tuple(range(1, w.dim()))
        w = (w - w.mean(dim=dims, keepdim=True)).clamp(-1.0, 1.0)
    return w


class _Packed(nn.Module):
    """Weight storage and reconstruction shared by packed convs and linears.

    ``kind``: ``"binary"`` (``bits``, ``alpha``), ``"int"`` (``q``, ``scale``),
    ``"log"`` (``code``, ``scale``) or ``"float"`` (``weight``).
    """

    def _store(self, m: nn.Module, w_bits: int, log: bool, center: bool = False) -> None:
        w = m.weight.detach()  # float32 for deployment; a float64 model packs in float64 (for tests)
        self.shape = tuple(w.shape)
        self.bias_on = m.bias is not None
        if w_bits == 1:
            self.kind = "binary"
            wc = _centered(w, center)
            self.register_buffer("bits", pack_signs(wc >= 0))
            self.register_buffer("alpha", wc.abs().mean(dim=tuple(range(1, w.dim()))))
        elif w_bits >= 32:
            self.kind = "float"
            self.register_buffer("weight", w.clone())
        else:
            self.kind = "log" if log else "int"
            scale = weight_scale(w)
            if log:
                top, bottom = 0.0, -(2 ** (w_bits - 1) - 2)
                a = (w / scale).abs().clamp(max=1.0)
                e = torch.round(torch.log2(a.clamp(min=1e-30))).clamp(bottom, top)
                mag = torch.where(a < 2.0 ** (bottom - 1), torch.zeros_like(a), e - bottom + 1)
                code = torch.where(w >= 0, mag, -mag)
                self.register_buffer("code", code.to(torch.int8))
            else:
                self.levels = weight_levels(w_bits)
                self.register_buffer("q", torch.round(w / scale * self.levels).to(torch.int8 if w_bits <= 8 else torch.int32))
            self.log_bottom = -(2 ** (w_bits - 1) - 2)
            self.register_buffer("scale", scale.reshape(-1))
        if self.bias_on:
            self.register_buffer("bias", m.bias.detach().clone())
        else:
            self.bias = None

    def signs(self) -> torch.Tensor:
        """``sign(W)`` as +-1 floats (binary kind)."""
        return unpack_signs(self.bits, self.shape).to(self.alpha.dtype) * 2 - 1

    def weight_value(self) -> torch.Tensor:
        """The weights the trained layer computes with, rebuilt from storage."""
        view = (-1,) + (1,) * (len(self.shape) - 1)
        if self.kind == "binary":
            return self.alpha.view(view) * self.signs()
        if self.kind == "float":
            return self.weight
        s = self.scale.view(view)
        if self.kind == "int":
            return s * (self.q.to(s.dtype) / self.levels)
        c = self.code.to(s.dtype)
        mag = torch.where(c == 0, torch.zeros_like(c), torch.exp2(c.abs() - 1 + self.log_bottom))
        return s * torch.where(c >= 0, mag, -mag)

    def storage_bytes(self) -> int:
        """Bytes of this layer's state tensors."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())


class PackedConv2d(_Packed):
    """The deployment form of a ``BinaryConv2d`` or ``QuantConv2d``."""

    def __init__(self, m: nn.Conv2d):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = m.stride, m.padding, m.dilation, m.groups
        self.padding_mode, self.pad4 = m.padding_mode, tuple(m._reversed_padding_repeated_twice)
        self.in_channels = m.in_channels
        if isinstance(m, BinaryConv2d):
            self.scheme, self.act = m.scheme, None
            self._store(m, 1, False, m.center)
            self.scale_in = InputScale(m) if m.scale is not None else None
        else:
            self.scheme, self.scale_in = "quant", None
            self.act = (m.a_quant_bits, m.a_lo, m.a_hi, m.log)
            self._store(m, m.w_bits, m.log)
        self._derive()

    def _derive(self) -> None:
        """The xor/popcount operands, derived from ``bits`` (not saved)."""
        words = wsum = None
        if self.scheme == "xnor" and self.groups == 1:
            words = pack_words(unpack_signs(self.bits, self.shape))
            wsum = correction_kernel(words, self.in_channels)
        self.register_buffer("words", words, persistent=False)
        self.register_buffer("wsum", wsum, persistent=False)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._derive()

    def _conv(self, x, w):
        if self.padding_mode != "zeros":
            return F.conv2d(F.pad(x, self.pad4, mode=self.padding_mode), w, None, self.stride, 0, self.dilation,
                            self.groups)
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def _xnor_dot(self, x):
        """``sign(x) (*) sign(W)`` as exact integers."""
        if self.words is not None and not isinstance(self.padding, str) and self.stride[0] == self.stride[1] \
                and self.dilation[0] == self.dilation[1]:
            return xnor_conv2d(x, self.words, self.in_channels, self.stride[0], tuple(self.padding),
                               self.dilation[0], self.padding_mode, wsum=self.wsum)
        return self._conv(torch.where(x >= 0, 1.0, -1.0).to(x.dtype), self.signs().to(x.dtype))

    def forward(self, x):
        if self.scheme == "xnor":
            k = self.scale_in(x) if self.scale_in is not None else None
            y = self._xnor_dot(x) * self.alpha.to(x.dtype).view(1, -1, 1, 1)
            if k is not None:
                y = y * k
        else:
            if self.act is not None:
                x = act_quant_fn(x, *self.act)
            y = self._conv(x, self.weight_value().to(x.dtype))
        return y if self.bias is None else y + self.bias.to(x.dtype).view(1, -1, 1, 1)


class PackedLinear(_Packed):
    """The deployment form of a ``BinaryLinearModule`` or ``QuantLinearModule``."""

    def __init__(self, m: nn.Linear):
        super().__init__()
        self.in_features = m.in_features
        if isinstance(m, BinaryLinearModule):
            self.scheme, self.act = m.scheme, None
            self._store(m, 1, False, m.center)
        else:
            self.scheme, self.act = "quant", (m.a_quant_bits, m.a_lo, m.a_hi, m.log)
            self._store(m, m.w_bits, m.log)
        self.register_buffer("words", self._words(), persistent=False)

    def _words(self):
        return _pack_channels(unpack_signs(self.bits, self.shape)) if self.scheme == "xnor" else None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.words = self._words()

    def forward(self, x):
        if self.scheme == "xnor":
            a = _pack_channels(x >= 0)
            dot = (self.in_features - 2 * _mismatches(a, self.words, max(1, (1 << 22) // max(1, a.numel())))).to(x.dtype)
            y = dot * self.alpha.to(x.dtype)
        else:
            if self.act is not None:
                x = act_quant_fn(x, *self.act)
            y = F.linear(x, self.weight_value().to(x.dtype))
        return y if self.bias is None else y + self.bias.to(x.dtype)


_PACKERS = {BinaryConv2d: PackedConv2d, QuantConv2d: PackedConv2d,
            BinaryLinearModule: PackedLinear, QuantLinearModule: PackedLinear}


def _packed(m: nn.Module) -> nn.Module:
    new = _PACKERS[type(m)](m)
    for attr in ("term", "in_type", "out_type", "path"):
        if hasattr(m, attr):
            setattr(new, attr, getattr(m, attr))
    return new


def _swap(parent: nn.Module) -> None:
    for name, child in list(parent.named_children()):
        if type(child) in _PACKERS:
            setattr(parent, name, _packed(child))
        else:
            _swap(child)


def pack(model: nn.Module) -> nn.Module:
    """The deployment form of a trained binary/quantized model (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"pack takes a bound module (a trained network); got {type(model).__name__}")
    new = copy.deepcopy(model).eval()
    if type(new) in _PACKERS:
        return _packed(new)
    _swap(new)
    return new
