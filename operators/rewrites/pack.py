"""The pack rewrite: a trained binary or quantized network in its deployment form.

``pack(model)`` returns a copy of a bound module (in eval mode) in which every
``binary_conv``/``binary_linear`` stores its weights as sign bits (eight to a
byte) and a float ``alpha`` per filter, and every ``quant_conv``/``quant_linear``
with ``w_bits = k`` stores its integer levels (codes of signed powers of two for
``log``) as true ``k``-bit integers (two's complement, ``8 / k`` to a byte for
``k = 2, 4``; across byte boundaries for other ``k``) and a float scale per
filter. The bits of all packed layers lie end to end in one ``uint8`` buffer
and their alphas, scales and biases in one float buffer, both on the model's
root (``packed_bits``, ``packed_floats``); each layer reads views of them by
offset, so the saved state dict does not pay ``torch.save``'s per-tensor bytes
per layer. Everything else (the float first and last layers, batch norms) is
kept as it is.

The packed model computes the trained model's eval function: BWN and k-bit
layers rebuild exactly the weights the trained layer uses; XNOR layers compute
``sign(I) (*) sign(W)`` with xor and popcount on 64-channel words (exact
integers, :func:`operad.operators._bitpack.xnor_conv2d`) and scale by
``alpha`` afterwards, which differs from the float simulation only by float
rounding. The state dict holds only tensors, so it loads with
``torch.load(..., weights_only=True)`` into ``pack(fresh_model)``. Saved with
``torch.save``, the binarized layers of ``resnet20_xnor`` take 28.3x fewer bytes
than in float (``nin_cifar_xnor`` 30.3x, ``bnn_vgg_cifar`` 31.7x; measured by
``python -m operad.experiments.bench.binary --sizes-only``); 2-bit weights 15.1x.

>>> import torch
>>> from operad import ops, Field
>>> m = (ops.conv(8) >> ops.bn() >> ops.binary_conv(64, scheme="xnor") >> ops.conv(4)).bind(Field(3)).eval()
>>> p = pack(m)
>>> p[2].bits.dtype, tuple(p[2].bits.shape)     # 64 filters of 8*3*3 = 72 bits: 576 bytes
(torch.uint8, (576,))
>>> p.packed_bits.numel(), p.packed_floats.numel()   # the bits; 64 alphas and 64 biases
(576, 128)
>>> x = torch.randn(2, 3, 8, 8)
>>> torch.allclose(p(x), m(x), atol=1e-4)
True
"""
from __future__ import annotations

import copy
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from .._bitpack import (_mismatches, _pack_channels, correction_kernel, pack_bits, pack_words, to_signed, to_unsigned,
                        unpack_bits, xnor_conv2d)
from .._quant import weight_levels, weight_scale
from ..binary import BinaryConv2d, BinaryLinearModule, InputScale
from ..quant import QuantConv2d, QuantLinearModule, act_quant as act_quant_fn
from ._pack_store import StoredLayer, attach, store_keys

__all__ = ["pack", "packable_state", "PackedConv2d", "PackedLinear"]


def _centered(w: torch.Tensor, center: bool) -> torch.Tensor:
    if center:
        dims = tuple(range(1, w.dim()))
        w = (w - w.mean(dim=dims, keepdim=True)).clamp(-1.0, 1.0)
    return w


def _log_codes(w: torch.Tensor, scale: torch.Tensor, w_bits: int) -> torch.Tensor:
    """Signed codes of the log levels: 0 for 0, ``+-(e - bottom + 1)`` for ``+-2**e``."""
    bottom = -(2 ** (w_bits - 1) - 2)
    a = (w / scale).abs().clamp(max=1.0)
    e = torch.round(torch.log2(a.clamp(min=1e-30))).clamp(bottom, 0.0)
    mag = torch.where(a < 2.0 ** (bottom - 1), torch.zeros_like(a), e - bottom + 1)
    return torch.where(w >= 0, mag, -mag)


class _Packed(StoredLayer):
    """Weight storage and reconstruction shared by packed convs and linears.

    ``kind``: ``"binary"`` (sign bits, ``alpha``), ``"int"`` (``w_bits``-bit
    levels, ``scale``), ``"log"`` (``w_bits``-bit codes, ``scale``) or ``"float"``
    (``weight``). Bits and levels are segments of the model's ``packed_bits``
    store, the floats of ``packed_floats`` (see ``_pack_store``).
    """

    def _store(self, m: nn.Module, w_bits: int, log: bool, center: bool = False) -> None:
        w = m.weight.detach()  # float32 for deployment; a float64 model packs in float64 (for tests)
        self.shape, self.numel, self.w_bits = tuple(w.shape), w.numel(), min(w_bits, 32)
        if w_bits == 1:
            self.kind = "binary"
            wc = _centered(w, center)
            self.add_segment("bits", pack_bits(wc >= 0, 1))
            self.add_segment("alpha", wc.abs().mean(dim=tuple(range(1, w.dim()))))
        elif w_bits >= 32:
            self.kind = "float"
            self.add_segment("weight", w.clone())
        else:
            self.kind = "log" if log else "int"
            scale = weight_scale(w)
            self.levels = weight_levels(w_bits)
            self.log_bottom = -(2 ** (w_bits - 1) - 2)
            q = _log_codes(w, scale, w_bits) if log else torch.round(w / scale * self.levels)
            self.add_segment("bits", pack_bits(to_unsigned(q, w_bits), w_bits))
            self.add_segment("scale", scale.reshape(-1))
        self.add_segment("bias", None if m.bias is None else m.bias.detach().clone())

    bits = property(lambda self: self.segment("bits"), doc="The packed weights: sign bits or k-bit levels (uint8).")
    alpha = property(lambda self: self.segment("alpha"), doc="Per-filter ``alpha`` (binary kind).")
    scale = property(lambda self: self.segment("scale"), doc="Per-filter scale (int and log kinds).")
    bias = property(lambda self: self.segment("bias"), doc="The bias, or ``None``.")

    def signs(self) -> torch.Tensor:
        """``sign(W)`` as +-1 floats (binary kind)."""
        return self.positive().to(self.alpha.dtype) * 2 - 1

    def positive(self) -> torch.Tensor:
        """``W >= 0`` as booleans of the weight's shape (binary kind)."""
        return unpack_bits(self.bits, 1, self.numel).view(self.shape).bool()

    def codes(self) -> torch.Tensor:
        """The signed integer levels (int kind) or log codes (log kind), int64 of the weight's shape."""
        return to_signed(unpack_bits(self.bits, self.w_bits, self.numel), self.w_bits).view(self.shape)

    def weight_value(self) -> torch.Tensor:
        """The weights the trained layer computes with, rebuilt from storage."""
        view = (-1,) + (1,) * (len(self.shape) - 1)
        if self.kind == "binary":
            return self.alpha.view(view) * self.signs()
        if self.kind == "float":
            return self.segment("weight")
        s = self.scale.view(view)
        if self.kind == "int":
            return s * (self.codes().to(s.dtype) / self.levels)
        c = self.codes().to(s.dtype)
        mag = torch.where(c == 0, torch.zeros_like(c), torch.exp2(c.abs() - 1 + self.log_bottom))
        return s * torch.where(c >= 0, mag, -mag)

    def storage_bytes(self) -> int:
        """Bytes this layer's weights, scales and bias take in the store."""
        return self.segment_bytes()


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
        self.register_buffer("words", None, persistent=False)
        self.register_buffer("wsum", None, persistent=False)

    def derive(self) -> None:
        """The xor/popcount operands, derived from the sign bits (not saved)."""
        words = wsum = None
        if self.scheme == "xnor" and self.groups == 1:
            words = pack_words(self.positive())
            wsum = correction_kernel(words, self.in_channels)
        self.register_buffer("words", words, persistent=False)
        self.register_buffer("wsum", wsum, persistent=False)

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
        self.register_buffer("words", None, persistent=False)

    def derive(self) -> None:
        """The xor/popcount operand, derived from the sign bits (not saved)."""
        self.register_buffer("words", _pack_channels(self.positive()) if self.scheme == "xnor" else None,
                             persistent=False)

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


def _swap(parent: nn.Module, done: List[_Packed]) -> List[_Packed]:
    """Replace every packable layer under ``parent`` (in module order); the packed layers."""
    for name, child in list(parent.named_children()):
        if type(child) in _PACKERS:
            done.append(_packed(child))
            setattr(parent, name, done[-1])
        else:
            _swap(child, done)
    return done


def pack(model: nn.Module) -> nn.Module:
    """The deployment form of a trained binary/quantized model (see the module docstring).

    The packed layers' weights live in two buffers on the returned module,
    ``packed_bits`` and ``packed_floats``: save and load the whole model's state
    dict (a submodule's own state dict does not hold them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"pack takes a bound module (a trained network); got {type(model).__name__}")
    new = copy.deepcopy(model).eval()
    if type(new) in _PACKERS:
        new = _packed(new)
        layers = [new]
    else:
        layers = _swap(new, [])
    if layers:
        attach(new, layers)
    return new


def packable_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state-dict entries that hold the layers ``pack`` packs: in a trained
    model those layers' own entries (float weights, biases), in a packed model
    the store (``packed_bits``, ``packed_floats``) and what the packed layers
    keep themselves. Their saved sizes compare the two forms (see ``bench.binary``).

    >>> from operad import ops, Field
    >>> m = (ops.conv(8) >> ops.binary_conv(16) >> ops.conv(4)).bind(Field(3)).eval()
    >>> sorted(packable_state(m)), sorted(packable_state(pack(m)))
    (['1.bias', '1.weight'], ['packed_bits', 'packed_floats'])
    """
    names = [n for n, mod in model.named_modules() if type(mod) in _PACKERS or isinstance(mod, _Packed)]
    keys = set(store_keys(model))
    return {k: v for k, v in model.state_dict().items()
            if k in keys or any(k.startswith(n + ".") or not n for n in names)}
