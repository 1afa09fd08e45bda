"""Quantizers shared by the binary and quantized families, each with its
straight-through estimator (STE).

* :func:`sign_ste` -- ``+1`` where ``x >= 0``, else ``-1``; gradient 1 where
  ``|x| <= 1``, else 0 (Hubara et al., BinaryNet).
* :func:`binary_weight` -- ``alpha * sign(W)`` with ``alpha = mean |W|`` per
  output filter (Rastegari et al., BWN); gradients flow through ``alpha`` and
  the sign's STE, as the paper derives.
* :func:`uniform_quant` -- ``2**bits`` evenly spaced levels on ``[lo, hi]``.
* :func:`log_quant` -- sign times a power of two (QNN's log quantization).
* :func:`weight_quant` -- symmetric k-bit weights, ``scale * q / L`` with
  integers ``|q| <= L = 2**(bits-1) - 1`` and ``scale = max |W|`` per filter.
* :func:`grad_quant` -- the identity forward; backward rounds the gradient to
  ``bits`` bits (QNN quantizes parameter gradients to 6 bits).

>>> x = torch.tensor([-2.0, -0.5, 0.0, 0.3])
>>> sign_ste(x)
tensor([-1., -1.,  1.,  1.])
>>> uniform_quant(torch.tensor([0.1, 0.4, 0.9]), 2, 0.0, 1.0)
tensor([0.0000, 0.3333, 1.0000])
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def _ste(value: torch.Tensor, x: torch.Tensor, pass_through: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass; the gradient (and tangent) of ``x`` where
    ``pass_through``, else 0. Plain tensor ops, so it works under autograd,
    ``torch.func`` and ``torch.compile`` alike, and the value is exact: ``t - t``
    is exactly zero for finite ``t``."""
    t = torch.where(pass_through, x, torch.zeros_like(x))
    return value.detach() + (t - t.detach())


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``sign`` with ``sign(0) = +1`` and the straight-through gradient ``1_{|x| <= 1}``."""
    s = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return _ste(s, x, x.abs() <= 1)


def _filter_dims(w: torch.Tensor):
    return tuple(range(1, w.dim()))


def binary_weight(w: torch.Tensor, center: bool = False) -> torch.Tensor:
    """``alpha * sign(W)``, ``alpha = mean |W|`` over each output filter.

    ``center=True`` first mean-centres each filter and clips it to [-1, 1], as
    the XNOR-Net reference code does to its stored weights.

    >>> binary_weight(torch.tensor([[0.5, -1.5]]))
    tensor([[ 1., -1.]])
    """
    if center:
        w = (w - w.mean(dim=_filter_dims(w), keepdim=True)).clamp(-1.0, 1.0)
    alpha = w.abs().mean(dim=_filter_dims(w), keepdim=True)
    return alpha * sign_ste(w)


def binary_alpha(w: torch.Tensor, center: bool = False) -> torch.Tensor:
    """The per-filter ``alpha`` of :func:`binary_weight`, shape ``(out,)``."""
    if center:
        w = (w - w.mean(dim=_filter_dims(w), keepdim=True)).clamp(-1.0, 1.0)
    return w.abs().mean(dim=_filter_dims(w))


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return _ste(torch.round(x), x, torch.ones_like(x, dtype=torch.bool))


def uniform_quant(x: torch.Tensor, bits: int, lo: float, hi: float) -> torch.Tensor:
    """``2**bits`` levels ``lo + i * step`` on ``[lo, hi]``; STE gradient 1 inside, 0 outside."""
    n = 2 ** bits - 1
    step = (hi - lo) / n
    i = _round_ste((x.clamp(lo, hi) - lo) / step)
    return lo + i * step


def log_quant(x: torch.Tensor, bits: int, hi: float = 1.0) -> torch.Tensor:
    """``sign(x) * 2**e``, ``e`` an integer in ``[log2(hi) - (2**(bits-1) - 2), log2(hi)]``,
    or 0 below half the smallest power: at most ``2**bits - 1`` values. STE
    gradient 1 where ``|x| <= hi``.

    >>> log_quant(torch.tensor([0.2, -0.3, 0.9]), 3)
    tensor([ 0.2500, -0.2500,  1.0000])
    """
    if bits < 2:
        raise ValueError(f"log quantization needs bits >= 2; got {bits}")
    top = float(round(math.log2(hi)))
    bottom = top - (2 ** (bits - 1) - 2)
    with torch.no_grad():
        a = x.abs().clamp(max=hi)
        e = torch.round(torch.log2(a.clamp(min=1e-30))).clamp(bottom, top)
        mag = torch.where(a < 2.0 ** (bottom - 1), torch.zeros_like(a), torch.exp2(e))
        q = torch.where(x >= 0, mag, -mag)
    return _ste(q, x, x.abs() <= hi)


def weight_levels(bits: int) -> int:
    """The largest integer level ``L`` of symmetric ``bits``-bit weights (``2**(bits-1) - 1``)."""
    return 2 ** (bits - 1) - 1


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-filter ``max |W|`` (kept away from zero), shape ``(out, 1, ...)``."""
    return w.detach().abs().amax(dim=_filter_dims(w), keepdim=True).clamp(min=1e-12)


def weight_quant(w: torch.Tensor, bits: int, log: bool = False) -> torch.Tensor:
    """k-bit weights: ``bits=1`` is :func:`binary_weight`; otherwise ``scale * q / L``
    with integers ``|q| <= L`` (``log``: ``scale`` times signed powers of two)."""
    if bits >= 32:
        return w
    if bits == 1:
        return binary_weight(w)
    scale = weight_scale(w)
    if log:
        return scale * log_quant(w / scale, bits)
    L = weight_levels(bits)
    return scale * (_round_ste(w / scale * L) / L)


class _GradQuant(torch.autograd.Function):
    @staticmethod
    def forward(w, bits):
        return w.view_as(w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.bits = inputs[1]

    @staticmethod
    def backward(ctx, g):
        L = weight_levels(ctx.bits)
        s = g.abs().amax().clamp(min=1e-30)
        return s * torch.round(g / s * L) / L, None


def grad_quant(w: torch.Tensor, bits: Optional[int]) -> torch.Tensor:
    """The identity; in the backward pass the gradient is rounded to ``bits`` bits
    (``2**bits - 1`` levels scaled by its max magnitude). ``None`` leaves it exact."""
    if bits is None or bits >= 32:
        return w
    return _GradQuant.apply(w, bits)
