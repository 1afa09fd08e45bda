"""Nonlocal operators of PIDE networks (Bohn, Griebel, Kannan, "Deep neural networks
and PIDE discretizations"): fractional Laplacians on the pixel grid (FFT) and the
paper's feature-space integral operators.

================================================  ===========================================
``ops.fractional_laplacian(s)``                   ``(-Delta_h)^s`` on the grid, by the FFT
``ops.inverse_fractional_laplacian(s)``           its (pseudo-)inverse ``(-Delta_h)^-s``
``ops.fractional_laplacian(s, space="feature")``  ``c(n,s) sum_j (x_i - x_j) / d_ij^(n+2s)``
``ops.inverse_fractional_laplacian(s, space="feature")``  Riesz potential ``sum_j x_j / d_ij^(n-2s)``
``ops.weighted_laplacian()``                      ``lambda sum_j w_ij (x_j - x_i) / N``
================================================  ===========================================

**Grid operators** act on each channel through the discrete symbol of the 5-point
Laplacian, ``lambda(k) = 4 sin^2(pi k1/N1) + 4 sin^2(pi k2/N2)`` (its maximum is 8),
raised to the power ``s`` in (0, 1] and scaled by a per-channel weight initialised at 1,
so that by default the operator *is* ``(-Delta_h)^s`` (``s = 1`` is the 5-point stencil).
Periodic boundaries by default; ``periodic=False`` zero-pads to twice the size and crops
(the operator of the zero extension, still symmetric and positive semi-definite). Under
bf16/fp16 the FFT runs in float32 and the result is cast back (``torch.fft`` has no bf16).

The inverse is the Moore-Penrose pseudo-inverse: the symbol is inverted on the non-zero
frequencies and the zero frequency (the channel mean, the kernel of ``-Delta_h``) is
mapped to 0. It inverts the forward operator exactly on mean-free inputs, and its l2 norm
on *all* inputs is ``max|w| / min_{k != 0} lambda(k)^s``: that is the Lipschitz bound
it states (valid without any assumption on the input's mean).

Costs: the FFT is not counted by ``FlopCounterMode`` (nor is the element-wise symbol
product), so the grid operators have ``macs == 0``; their real work is given by
:meth:`GridLaplacian.fft_flops` (``~5 N log2 N`` flops per channel for N pixels).
The feature-space operators' ``macs`` are their 1x1 convolutions and matrix products.

    >>> import torch
    >>> from operad import ops, Field
    >>> m = ops.fractional_laplacian(0.5).bind(Field(3))
    >>> m(torch.randn(2, 3, 12, 10)).shape
    torch.Size([2, 3, 12, 10])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from .algebra.field import Field
from .algebra.term import Cost, Term, op, register_family

__all__ = ["GridLaplacian", "FeatureNonlocal", "fractional_laplacian", "inverse_fractional_laplacian",
           "weighted_laplacian", "grid_symbol", "grid_multiplier", "spectral_multiply", "frac_const", "inv_frac_const"]

_HALF = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------
# Grid operators
# ---------------------------------------------------------------------------
def grid_symbol(h: int, w: int, dtype=torch.float32, device=None, half: bool = True) -> torch.Tensor:
    """The symbol ``4 sin^2(pi k1/h) + 4 sin^2(pi k2/w)`` of ``-Delta_h`` (5-point, periodic) on
    the ``rfft2`` frequency grid (``half=True``: ``w // 2 + 1`` columns) or the full grid."""
    k1 = torch.arange(h, dtype=dtype, device=device)
    k2 = torch.arange(w // 2 + 1 if half else w, dtype=dtype, device=device)
    a = 4 * torch.sin(math.pi * k1 / h) ** 2
    b = 4 * torch.sin(math.pi * k2 / w) ** 2
    return a[:, None] + b[None, :]


def grid_multiplier(lam: torch.Tensor, order: torch.Tensor, weight: Optional[torch.Tensor],
                    inverse: bool) -> torch.Tensor:
    """Per-channel Fourier multiplier ``w_c lambda^(+-s_c)``; the zero frequency of the inverse is 0.

    ``order`` and ``weight`` have shape (C,) or are scalars; the result broadcasts as (C, h, w')."""
    if order.dim() == 1:
        order = order[:, None, None]
    safe = lam.clamp_min(torch.finfo(lam.dtype).tiny)
    pos = lam > 0
    if inverse:
        m = torch.where(pos, safe.pow(-order), torch.zeros_like(safe))
    else:
        m = torch.where(pos, safe.pow(order), torch.zeros_like(safe))
    if weight is not None:
        m = weight[:, None, None] * m
    return m


def _functorch_active(x: torch.Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


def spectral_multiply(x: torch.Tensor, mult: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """``irfft2(rfft2(x, s=shape) * mult)`` cropped back to ``x``'s size: the operator with
    real, even Fourier multiplier ``mult`` (shape ``(h', w'//2 + 1)`` or ``(C, h', w'//2 + 1)``)
    on the grid ``shape`` (``x`` is zero-padded to it when larger than ``x``).

    An even real multiplier makes the operator self-adjoint, so its backward pass is the
    same two FFTs applied to the output gradient; the fast path (a custom autograd function,
    multiplying the spectrum in place) saves the temporaries and the extra element-wise
    passes of plain autograd. Under ``torch.compile`` and ``torch.func`` transforms the
    plain-autograd form runs instead, with the same numbers.

    >>> import torch
    >>> x, m = torch.randn(2, 3, 8, 8), torch.rand(8, 5)
    >>> ref = torch.fft.irfft2(torch.fft.rfft2(x) * m, s=(8, 8))
    >>> torch.allclose(spectral_multiply(x, m, (8, 8)), ref, atol=1e-6)
    True
    """
    if torch.compiler.is_compiling() or _functorch_active(x) or _functorch_active(mult):
        return _spectral_multiply_autograd(x, mult, shape)
    return _SpectralMultiply.apply(x, mult, shape)


def _spectral_multiply_autograd(x, mult, shape):
    y = torch.fft.irfft2(torch.fft.rfft2(x, s=shape) * mult, s=shape)
    return _crop(y, *x.shape[-2:])


def _crop(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return y if y.shape[-2:] == (h, w) else y[..., :h, :w].contiguous()


class _SpectralMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mult, shape):
        h, w = x.shape[-2:]
        spec = torch.fft.rfft2(x, s=shape)
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(x, mult, spec)
            spec = spec * mult
        else:
            ctx.save_for_backward(x, mult)
            spec.mul_(mult)
        ctx.shape = tuple(shape)
        return _crop(torch.fft.irfft2(spec, s=shape), h, w)

    @staticmethod
    def backward(ctx, g):
        x, mult = ctx.saved_tensors[:2]
        shape = ctx.shape
        if torch.is_grad_enabled():  # create_graph: a differentiable backward (double backward)
            return _double_backward(x, mult, g, shape, ctx.needs_input_grad)
        h, w = x.shape[-2:]
        gspec = torch.fft.rfft2(g, s=shape)
        gmult = None
        if ctx.needs_input_grad[1]:
            gmult = _multiplier_grad(ctx.saved_tensors[2], gspec, shape, mult.shape)
        gx = None
        if ctx.needs_input_grad[0]:
            gx = _crop(torch.fft.irfft2(gspec.mul_(mult), s=shape), h, w)
        return gx, gmult, None


def _multiplier_grad(spec: torch.Tensor, gspec: torch.Tensor, shape, mult_shape) -> torch.Tensor:
    """``d<g, y>/d mult`` from ``Re(X conj G)`` on the half spectrum: Parseval counts the
    columns ``0 < k2 < w/2`` twice (their mirror images are not stored), and divides by N."""
    ph, pw = shape
    prod = spec.real * gspec.real + spec.imag * gspec.imag
    scale = torch.full((prod.shape[-1],), 2.0 / (ph * pw), dtype=prod.dtype, device=prod.device)
    scale[0] = 1.0 / (ph * pw)
    if pw % 2 == 0:
        scale[-1] = 1.0 / (ph * pw)
    return (prod * scale).sum_to_size(mult_shape)


def _double_backward(x, mult, g, shape, needs):
    gx = _spectral_multiply_autograd(g, mult, shape) if needs[0] else None
    gmult = None
    if needs[1]:
        gmult = _multiplier_grad(torch.fft.rfft2(x, s=shape), torch.fft.rfft2(g, s=shape), shape, mult.shape)
    return gx, gmult, None


_SYMBOLS: dict = {}


def _cached_symbol(h: int, w: int, dtype, device) -> torch.Tensor:
    """``grid_symbol(h, w)`` on the half spectrum, computed once per size, dtype and device."""
    if torch.compiler.is_compiling():
        return grid_symbol(h, w, dtype, device)
    key = (h, w, dtype, torch.device(device) if device is not None else torch.device("cpu"))
    lam = _SYMBOLS.get(key)
    if lam is None:
        if len(_SYMBOLS) > 64:
            _SYMBOLS.clear()
        lam = _SYMBOLS[key] = grid_symbol(h, w, torch.float64, device).to(dtype)
    return lam


class GridLaplacianModule(nn.Module):
    """Bound grid fractional Laplacian (or its pseudo-inverse)."""

    def __init__(self, channels: int, order: float, inverse: bool, learn_order: bool, weight: bool,
                 periodic: bool):
        super().__init__()
        self.inverse = inverse
        self.periodic = periodic
        self.channels = channels
        if learn_order:
            self.order_logit = nn.Parameter(torch.full((channels,), math.log(order / (1 - order))))
        else:
            self.order_value = float(order)
        self.learn_order = learn_order
        self.weight = nn.Parameter(torch.ones(channels)) if weight else None
        self._powers: dict = {}

    def order(self, dtype=torch.float64) -> torch.Tensor:
        """The order s, per channel (learnable: ``sigmoid`` of a free parameter, in (0, 1))."""
        if self.learn_order:
            return torch.sigmoid(self.order_logit)
        return torch.tensor(self.order_value, dtype=dtype)

    def padded_size(self, h: int, w: int) -> Tuple[int, int]:
        return (h, w) if self.periodic else (2 * h, 2 * w)

    def multiplier(self, h: int, w: int, dtype, device, half: bool = True) -> torch.Tensor:
        """The Fourier multiplier ``w_c lambda^(+-s_c)`` on the ``(h, w)`` grid, shape
        ``(C, h, w//2+1)`` (``(h, w//2+1)`` without weights and learnable orders)."""
        if not half:
            lam = grid_symbol(h, w, dtype, device, half)
            order = self.order(dtype).to(device=device, dtype=dtype)
            weight = None if self.weight is None else self.weight.to(dtype)
            return grid_multiplier(lam, order, weight, self.inverse)
        lam = _cached_symbol(h, w, dtype, device)
        if self.learn_order:
            base = grid_multiplier(lam, self.order_logit.sigmoid().to(dtype), None, self.inverse)
        else:
            base = self._fixed_power(lam, h, w, dtype, device)
        if self.weight is None:
            return base
        return self.weight.to(dtype)[:, None, None] * base

    def _fixed_power(self, lam, h, w, dtype, device):
        if torch.compiler.is_compiling():
            return grid_multiplier(lam, torch.tensor(self.order_value, dtype=dtype), None, self.inverse)
        key = (h, w, dtype, lam.device)
        p = self._powers.get(key)
        if p is None:
            if len(self._powers) > 16:
                self._powers.clear()
            order = torch.tensor(self.order_value, dtype=torch.float64)
            p = grid_multiplier(lam.double(), order, None, self.inverse).to(dtype)
            self._powers[key] = p
        return p

    def forward(self, x):
        xf = x.float() if x.dtype in _HALF else x
        shape = self.padded_size(x.shape[-2], x.shape[-1])
        y = spectral_multiply(xf, self.multiplier(*shape, xf.dtype, xf.device), shape)
        return y.to(x.dtype)


def _grid_examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 6))
    learn = draw(st.booleans())
    order = draw(st.floats(0.1, 0.9)) if learn else draw(st.sampled_from([0.25, 0.5, 0.75, 1.0]))
    inverse = draw(st.booleans())
    term = GridLaplacian(order, inverse, learn, draw(st.booleans()), draw(st.booleans()))
    return term, Field(c), (draw(st.integers(3, 12)), draw(st.integers(3, 12)))


@register_family("grid_laplacian", examples=_grid_examples)
@dataclass(frozen=True, repr=False)
class GridLaplacian(Term):
    """``w_c (-Delta_h)^s`` per channel on the pixel grid, or its pseudo-inverse (``inverse=True``).

    Symmetric positive semi-definite whenever the weights are non-negative, so that
    ``pde_step(L, h)`` is stable exactly when ``h * max(symbol) <= 2``; see
    :meth:`spectrum`. ``definite = "positive"``: it approximates ``(-Delta)^s``.
    """

    order: float = 0.5
    inverse: bool = False
    learn_order: bool = False
    weight: bool = True
    periodic: bool = True
    _positional = ("order",)
    linear = True
    definite = "positive"

    def __post_init__(self):
        s = self.order
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 < s <= 1:
            raise ValueError(f"fractional_laplacian order must be in (0, 1]; got {s!r}")
        if self.learn_order and not 0 < s < 1:
            raise ValueError(f"a learnable order lives in the open interval (0, 1); initialise it inside "
                             f"(got order={s!r}) or pass learn_order=False")

    def out_type(self, t):
        return self.require_real(t)

    def cost(self, t, size):
        c = t.channels
        return Cost(c * (int(self.weight) + int(self.learn_order)), 0)

    def fft_flops(self, t: Field, size) -> object:
        """The FFT work per sample, which ``macs`` leaves out: per channel an ``rfft2`` and an
        ``irfft2`` of the N = H'W' (padded) pixels, ``2.5 N log2 N`` real flops each, plus the
        complex-by-real product ``2 H' (W'//2 + 1)``."""
        h, w = size
        ph, pw = (h, w) if self.periodic else (2 * h, 2 * w)
        n = ph * pw
        if isinstance(n, int):
            return t.channels * (5 * n * math.log2(n) + 2 * ph * (pw // 2 + 1))
        return t.channels * (5 * n * sympy.log(n, 2) + 2 * ph * (sympy.floor(pw / 2) + 1))

    def equivariance(self, t):
        if self.periodic:
            return frozenset({"shift", "rot90", "flip"})
        return frozenset({"rot90", "flip"})

    def spectrum(self, m: nn.Module, size=None) -> Optional[Tuple[float, float]]:
        """An interval holding every eigenvalue of the bound operator (it is symmetric):
        exact symbol values on the (padded) grid when ``size`` is known, else the bound
        ``[min(0, 8^s w), max(0, 8^s w)]`` of the forward operator (None for the inverse)."""
        with torch.no_grad():
            if size is None or not all(isinstance(v, int) for v in size):
                if self.inverse:
                    return None
                s = m.order().double()
                w = m.weight.detach().double() if m.weight is not None else torch.ones(())
                top = (8.0 ** s) * w
                return (min(0.0, float(top.min())), max(0.0, float(top.max())))
            ph, pw = m.padded_size(*size)
            mult = m.multiplier(ph, pw, torch.float64, None, half=True)
            return float(mult.min()), float(mult.max())

    def lipschitz_bound(self, m, size=None):
        sp = self.spectrum(m, size)
        return None if sp is None else max(abs(sp[0]), abs(sp[1]))

    def build(self, t):
        return GridLaplacianModule(t.channels, float(self.order), self.inverse, self.learn_order,
                                   self.weight, self.periodic)


# ---------------------------------------------------------------------------
# Feature-space operators (the paper's)
# ---------------------------------------------------------------------------
def frac_const(n, s):
    """``c(n, s) = 4^s Gamma(n/2 + s) / (pi^(n/2) |Gamma(-s)|)`` for s in (0, 1), as a tensor
    (differentiable in ``s``); uses ``|Gamma(-s)| = Gamma(1 - s) / s``."""
    s = torch.as_tensor(s, dtype=torch.float64) if not torch.is_tensor(s) else s
    return torch.exp(s * math.log(4.0) + torch.lgamma(n / 2 + s) - (n / 2) * math.log(math.pi)
                     - torch.lgamma(1 - s) + torch.log(s))


def inv_frac_const(n, s):
    """``Gamma(n/2 - s) / (4^s pi^(n/2) Gamma(s))``, the constant of the Riesz potential."""
    s = torch.as_tensor(s, dtype=torch.float64) if not torch.is_tensor(s) else s
    return torch.exp(torch.lgamma(n / 2 - s) - s * math.log(4.0) - (n / 2) * math.log(math.pi)
                     - torch.lgamma(s))


class FeatureNonlocalModule(nn.Module):
    """Bound feature-space nonlocal operator (see :class:`FeatureNonlocal`)."""

    def __init__(self, channels: int, embed: int, kind: str, order: float, learn_order: bool, kernel: str,
                 lam: float, pool: int, normalize: str, n: int, eps: float):
        super().__init__()
        self.theta = nn.Conv2d(channels, embed, 1, bias=False)
        self.phi = nn.Conv2d(channels, embed, 1, bias=False)
        self.kind, self.kernel, self.lam, self.pool = kind, kernel, lam, pool
        self.normalize, self.n, self.eps = normalize, n, eps
        self.learn_order = learn_order
        self.fused = True  # False: plain autograd through the whole (B, N, M) kernel (for checks)
        if learn_order:
            self.order_logit = nn.Parameter(torch.tensor(math.log(order / (1 - order))))
        else:
            self.order_value = float(order)

    def order(self):
        return torch.sigmoid(self.order_logit) if self.learn_order else self.order_value

    def weights(self, x: torch.Tensor):
        """The kernel matrix ``w`` (B, N, M) between the N pixels and the M pooled keys, and the
        pooled values (B, M, C)."""
        w0, scale, v = self.kernel_parts(x)
        return scale * w0, v

    def embeddings(self, x: torch.Tensor):
        """Queries ``theta`` (B, N, E), pooled keys ``phi`` (B, E, M) and pooled values (B, M, C)."""
        th = self.theta(x).flatten(2).transpose(1, 2)
        ph, v = self.phi(x), x
        if self.pool > 1:
            ph, v = F.max_pool2d(ph, self.pool), F.max_pool2d(x, self.pool)
        return th, ph.flatten(2), v.flatten(2).transpose(1, 2)

    def _exponent_and_scale(self, dtype):
        """The kernel's power of ``r2 = d^2 + eps^2`` (None for the log kernel, where
        ``w0 = log r2``) and the constant factor ``lambda c(n, s)``."""
        if self.kind == "inverse_log":
            return None, self.lam * (-1 / (4 * math.pi))          # -log(d) / 2 pi = log(d^2) * (-1 / 4 pi)
        s, n = self.order(), self.n
        exponent = -(n + 2 * s) / 2 if self.kind == "fractional" else -(n - 2 * s) / 2
        s = torch.as_tensor(s, dtype=torch.float64 if not torch.is_tensor(s) else s.dtype)
        const = frac_const(n, s) if self.kind == "fractional" else inv_frac_const(n, s)
        return exponent, self.lam * const.to(dtype)

    def kernel_parts(self, x: torch.Tensor):
        """``(w0, scale, v)`` with ``w = scale * w0``: the unnormalised kernel (B, N, M), its
        normalisation (a scalar, or (B, N, 1) for row sums) and the pooled values (B, M, C).
        Keeping the scale apart spares the (B, N, M) tensor two element-wise passes, forward
        and backward; the forward pass applies it to the (B, N, C) results instead."""
        w0, scale, v, _ = self._plain_kernel(*self.embeddings(x))
        return w0, scale, v

    def _normalisation(self, rowsum: torch.Tensor, const, keys: int):
        """``lam / rowsum(w0)`` (rows: a weighted average, c(n, s) cancels) or ``lam c(n, s) / M``
        (n: the paper's quadrature of the integral over M keys)."""
        return self.lam / rowsum.clamp_min(1e-12) if self.normalize == "rows" else const / keys

    def _plain_kernel(self, th, ph, v):
        """``kernel_parts`` from the embeddings, with the row sums of ``w0`` (B, N, 1)."""
        if self.kind == "weighted":
            dot = torch.bmm(th, ph)                              # B, N, M
            if self.kernel == "dot":
                w0 = dot
            elif self.normalize == "rows":
                w0 = torch.softmax(dot, dim=-1)
                return w0, self.lam, v, w0.sum(-1, keepdim=True)
            else:
                w0 = dot.clamp(max=30.0).exp_()
            const = self.lam
        else:
            exponent, const = self._exponent_and_scale(th.dtype)
            w0 = _distance_kernel(th, ph, _sq_norms(ph), self.eps ** 2, exponent)
        rowsum = w0.sum(-1, keepdim=True)
        return w0, self._normalisation(rowsum, const, w0.shape[-1]), v, rowsum

    def _fused_sums(self, th, ph, v, device_type: str):
        """``(rowsum(w0), w0 @ v, scale)`` without keeping the (B, N, M) kernel: rows are
        processed in blocks and the backward pass recomputes them (like flash attention);
        None where plain autograd must run (weighted kinds, ``torch.compile``, ``torch.func``)."""
        if self.kind == "weighted" or not self.fused:
            return None
        if torch.compiler.is_compiling() or _functorch_active(th) or _functorch_active(v):
            return None
        up = lambda t: t.float() if t.dtype in _HALF else t
        th, ph, v = up(th), up(ph), up(v)
        exponent, const = self._exponent_and_scale(th.dtype)
        e = None if exponent is None else torch.as_tensor(exponent, dtype=th.dtype, device=th.device)
        with torch.autocast(device_type, enabled=False):
            rowsum, wv = _FusedKernelSums.apply(th, ph, v, e, self.eps ** 2)
        return rowsum, wv, self._normalisation(rowsum, const, ph.shape[-1])

    def forward(self, x):
        b, c, h, wd = x.shape
        th, ph, v = self.embeddings(x)
        fused = self._fused_sums(th, ph, v, x.device.type)
        if fused is None:
            w0, scale, v, rs = self._plain_kernel(th, ph, v)
            wv = torch.bmm(w0, v)                                # B, N, C
        else:
            rs, wv, scale = fused
        xi = x.flatten(2).transpose(1, 2)
        if self.kind == "weighted":
            out = wv - rs * xi                                   # sum_j w_ij (x_j - x_i)
        elif self.kind == "fractional":
            out = rs * xi - wv                                   # sum_j w_ij (x_i - x_j)
        else:
            out = wv                                             # sum_j w_ij x_j
        return (scale * out).transpose(1, 2).reshape(b, c, h, wd).to(x.dtype)


def _sq_norms(ph):
    return (ph * ph).sum(1, keepdim=True)                       # B, 1, M: |phi_j|^2


def _distance_kernel(th, ph, sq_ph, eps2: float, exponent):
    """``w0 = r2^exponent`` (``log r2`` for ``exponent=None``) with ``r2 = |th_i - ph_j|^2 + eps^2``
    for queries (B, n, E) and keys (B, E, M) with ``sq_ph = _sq_norms(ph)``, in four passes over
    the (B, n, M) block: one ``baddbmm`` for the squared distance, a clamp, a log and, for a
    power, ``exp``."""
    log_r2 = _log_r2(th, ph, sq_ph, eps2)
    return log_r2 if exponent is None else (log_r2 * exponent).exp_()


def _log_r2(th, ph, sq_ph, eps2: float):
    r2 = torch.baddbmm(sq_ph.expand(th.shape[0], th.shape[1], -1), th, ph, alpha=-2)
    r2 = (r2 + ((th * th).sum(-1, keepdim=True) + eps2)).clamp_min(eps2)   # max(d^2, 0) + eps^2
    return r2.log()


_FUSED_BLOCK = 1 << 22  # elements of the (B, rows, M) kernel block the fused path holds at once


class _FusedKernelSums(torch.autograd.Function):
    """``(rowsum(w0), w0 @ v)`` for ``w0 = _distance_kernel(th, ph)``, by row blocks, keeping no
    (B, N, M) tensor for the backward pass. Where rounding makes ``|th_i - ph_j|^2`` negative
    (the clamp), the gradient is taken through the unclamped expression, whose derivative
    ``2 (th_i - ph_j)`` vanishes there anyway."""

    @staticmethod
    def forward(ctx, th, ph, v, exponent, eps2):
        b, n, _ = th.shape
        rows = max(1, _FUSED_BLOCK // max(1, b * ph.shape[-1]))
        rs = th.new_empty(b, n, 1)
        wv = th.new_empty(b, n, v.shape[-1])
        sq_ph = _sq_norms(ph)
        for a in range(0, n, rows):
            w0 = _distance_kernel(th[:, a:a + rows], ph, sq_ph, eps2, exponent)
            torch.sum(w0, -1, keepdim=True, out=rs[:, a:a + rows])
            torch.bmm(w0, v, out=wv[:, a:a + rows])
        ctx.save_for_backward(th, ph, v, exponent)
        ctx.eps2, ctx.rows = eps2, rows
        return rs, wv

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_rs, g_wv):
        th, ph, v, exponent = ctx.saved_tensors
        eps2, rows = ctx.eps2, ctx.rows
        g_th, g_ph, g_v = torch.empty_like(th), torch.zeros_like(ph), torch.zeros_like(v)
        g_e = None if exponent is None else torch.zeros((), dtype=th.dtype, device=th.device)
        b, n, _ = th.shape
        vt, sq_ph = v.transpose(1, 2), _sq_norms(ph)
        for a in range(0, n, rows):
            tc = th[:, a:a + rows]
            log_r2 = _log_r2(tc, ph, sq_ph, eps2)
            w0 = log_r2 if exponent is None else (log_r2 * exponent).exp_()
            # dL/dw0 = g_rs + g_wv v^T, and dL/dv += w0^T g_wv
            g = torch.baddbmm(g_rs[:, a:a + rows].expand(-1, -1, ph.shape[-1]), g_wv[:, a:a + rows], vt)
            g_v.baddbmm_(w0.transpose(1, 2), g_wv[:, a:a + rows])
            if exponent is not None:                             # w0 = r2^e: dw0/dr2 = e w0 / r2
                g.mul_(w0)
                if ctx.needs_input_grad[3]:
                    g_e += (g * log_r2).sum()
                g.mul_(exponent)
            g.div_(log_r2.exp_())                                # (w0 = log r2: dw0/dr2 = 1 / r2)
            # r2 = |th|^2 + |ph|^2 - 2 th.ph: dL/dth_i = 2 sum_j g_ij (th_i - ph_j), likewise for ph_j
            g_th[:, a:a + rows] = 2 * (g.sum(-1, keepdim=True) * tc - torch.bmm(g, ph.transpose(1, 2)))
            g_ph += 2 * (g.sum(1, keepdim=True) * ph - torch.bmm(tc.transpose(1, 2), g))
        return g_th, g_ph, g_v, g_e, None


_KINDS = ("weighted", "fractional", "inverse", "inverse_log")


def _feature_examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(2, 6))
    kind = draw(st.sampled_from(_KINDS))
    pool = draw(st.sampled_from([1, 2]))
    learn = draw(st.booleans()) and kind in ("fractional", "inverse")
    kernel = draw(st.sampled_from(["dot", "gaussian"])) if kind == "weighted" else "dot"
    rows_ok = not (kernel == "dot" and kind == "weighted") and kind != "inverse_log"
    normalize = draw(st.sampled_from(["n", "rows"])) if rows_ok else "n"
    order = 1.0 if kind == "inverse_log" else draw(st.floats(0.2, 0.8))
    term = FeatureNonlocal(kind, order, learn, kernel, draw(st.sampled_from([0.5, 1.0])), pool, normalize,
                           None, 2, 0.5)
    return term, Field(c), (draw(st.integers(4, 9)), draw(st.integers(4, 9)))


@register_family("feature_nonlocal", examples=_feature_examples)
@dataclass(frozen=True, repr=False)
class FeatureNonlocal(Term):
    """The paper's feature-space integral operators: embeddings ``theta``, ``phi`` (1x1 convs to
    ``embed`` = C/2 channels; keys and values max-pooled by ``pool``), distances
    ``d_ij = sqrt(|theta(x_i) - phi(x_j)|^2 + eps^2)``, a kernel ``w_ij`` and a normalisation:

    * ``normalize="n"`` (the paper's): ``lam * c(n, s) * k(d_ij) / M``, the Monte Carlo
      quadrature of the singular integral over the M keys, with its constant c(n, s)
      (``frac_const`` / ``inv_frac_const``);
    * ``normalize="rows"``: ``lam * k(d_ij) / sum_j k(d_ij)``, a weighted average over the keys
      (the constant cancels; ``lam`` scales the operator). The log kernel of ``inverse_log``
      changes sign, so its rows have no normalisation: it takes ``"n"`` only.

    * ``weighted``: ``lambda theta_i . phi_j`` (``kernel="dot"``) or ``lambda exp(theta_i . phi_j)``
      (``"gaussian"``; with row normalisation a softmax); output ``sum_j w_ij (x_j - x_i)``
      (a graph Laplacian, ``definite = "negative"``: it approximates ``+Delta``).
    * ``fractional``: ``c(n,s) / d^(n+2s)``; output ``sum_j w_ij (x_i - x_j)`` (approximates
      ``(-Delta)^s``, ``definite = "positive"``).
    * ``inverse``: ``Gamma(n/2-s) / (4^s pi^(n/2) Gamma(s)) / d^(n-2s)``; ``inverse_log`` (s = 1,
      n = 2): ``-log(d) / (2 pi)``; output ``sum_j w_ij x_j``.

    ``n`` is the dimension in the kernel's exponent (2: the image plane). Nonlinear (the
    weights depend on x); no Lipschitz bound is stated. With ``pool == 1`` it commutes with
    every permutation of the pixels, so with shifts, rot90 and flips.
    """

    kind: str = "fractional"
    order: float = 0.5
    learn_order: bool = False
    kernel: str = "dot"
    lam: float = 1.0
    pool: int = 1
    normalize: str = "rows"
    embed: Optional[int] = None
    n: int = 2
    eps: float = 1e-2
    _positional = ("kind",)
    _arg_rules = {"eps": "-"}  # checked below: only the singular kernels need eps > 0

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"feature-space nonlocal kind must be one of {_KINDS}; got {self.kind!r}")
        if self.kernel not in ("dot", "gaussian"):
            raise ValueError(f"weighted_laplacian kernel must be 'dot' or 'gaussian'; got {self.kernel!r}")
        if self.normalize not in ("n", "rows"):
            raise ValueError(f"normalize must be 'n' (by the number of keys) or 'rows' (by row sums); "
                             f"got {self.normalize!r}")
        if self.kind == "weighted" and self.kernel == "dot" and self.normalize == "rows":
            raise ValueError("the embedded dot product can be negative, so its rows cannot be normalised: "
                             "use normalize='n' or kernel='gaussian'")
        if self.kind == "inverse_log" and self.normalize == "rows":
            raise ValueError("the logarithmic kernel -log(d)/(2 pi) changes sign, so its rows cannot be "
                             "normalised: use normalize='n' (the paper's: c / M)")
        if not isinstance(self.pool, int) or self.pool < 1:
            raise ValueError(f"pool must be a positive int; got {self.pool!r}")
        if not self.eps > 0 and self.kind != "weighted":
            raise ValueError(f"eps must be > 0: the {self.kind} kernel is singular at distance 0 and "
                             f"eps regularises d = sqrt(|theta_i - phi_j|^2 + eps^2); got {self.eps!r}")
        if self.kind in ("fractional", "inverse") and not 0 < self.order < 1:
            raise ValueError(f"the feature-space {self.kind} fractional Laplacian needs order in (0, 1) "
                             f"(c(n, s) vanishes at s = 1); got {self.order!r}")
        if self.kind == "inverse" and not self.order < self.n / 2:
            raise ValueError(f"the Riesz potential needs order < n/2 = {self.n / 2}; got {self.order!r}")
        if self.learn_order and self.kind not in ("fractional", "inverse"):
            raise ValueError(f"learn_order applies to the fractional kinds, not {self.kind!r}")

    @property
    def definite(self):
        return "negative" if self.kind == "weighted" else "positive"

    def _embed(self, t):
        if self.embed is not None:
            return self.embed
        c = t.channels
        return max(1, c // 2) if isinstance(c, int) else c / 2

    def out_type(self, t):
        return self.require_real(t)

    def _keys(self, size):
        h, w = size
        p = self.pool
        if p == 1:
            return h * w
        if isinstance(h, int) and isinstance(w, int):
            return (h // p) * (w // p)
        return sympy.floor(h / p) * sympy.floor(w / p)

    def cost(self, t, size):
        c, e = t.channels, self._embed(t)
        n = size[0] * size[1]
        m = self._keys(size)
        params = 2 * c * e + int(self.learn_order)
        return Cost(params, 2 * c * e * n + n * m * e + n * m * c)

    def equivariance(self, t):
        return frozenset({"shift", "rot90", "flip"}) if self.pool == 1 else frozenset()

    def build(self, t):
        return FeatureNonlocalModule(t.channels, self._embed(t), self.kind, float(self.order), self.learn_order,
                                     self.kernel, float(self.lam), self.pool, self.normalize, self.n,
                                     float(self.eps))


# ---------------------------------------------------------------------------
# Constructors
# ---------------------------------------------------------------------------
def _check_space(space):
    if space not in ("grid", "feature"):
        raise ValueError(f"space must be 'grid' (FFT on the pixel grid) or 'feature' (the paper's "
                         f"embedding-space kernel); got {space!r}")


@op("grid_laplacian")
def fractional_laplacian(order: float = 0.5, space: str = "grid", learn_order: bool = False,
                         weight: bool = True, periodic: bool = True, **feature) -> Term:
    """The fractional Laplacian ``(-Delta)^s``.

    ``space="grid"``: on the pixel grid through the FFT and the 5-point symbol (``order`` in
    (0, 1], ``learn_order`` per channel in (0, 1), per-channel ``weight`` starting at 1,
    ``periodic`` or zero-padded). ``space="feature"``: the paper's kernel
    ``c(n,s)/d^(n+2s)`` between embedded features (keyword options of :class:`FeatureNonlocal`:
    ``pool``, ``normalize``, ``lam``, ``embed``, ``n``, ``eps``).

    >>> from operad import ops, Field
    >>> ops.fractional_laplacian(1.0).bind(Field(2)).out_type
    Field(2)
    """
    _check_space(space)
    if space == "feature":
        return FeatureNonlocal("fractional", order, learn_order, **feature)
    if feature:
        raise TypeError(f"options {sorted(feature)} apply to space='feature' only")
    return GridLaplacian(order, False, learn_order, weight, periodic)


@op("grid_laplacian")
def inverse_fractional_laplacian(order: float = 0.5, space: str = "grid", learn_order: bool = False,
                                 weight: bool = True, periodic: bool = True, **feature) -> Term:
    """``(-Delta)^-s``: on the grid the pseudo-inverse (mean mapped to 0, exact inverse on
    mean-free inputs); in feature space the Riesz potential ``Gamma(n/2-s)/(4^s pi^(n/2)
    Gamma(s)) / d^(n-2s)``, or at ``order=1`` (n = 2) the logarithmic kernel ``-log(d)/(2 pi)``.

    >>> import torch
    >>> from operad import ops, Field
    >>> L, G = ops.fractional_laplacian(0.5).bind(Field(1)), ops.inverse_fractional_laplacian(0.5).bind(Field(1))
    >>> x = torch.randn(1, 1, 8, 8, dtype=torch.float64); x = x - x.mean()
    >>> bool(torch.allclose(G.double()(L.double()(x)), x))
    True
    """
    _check_space(space)
    if space == "feature":
        n = feature.get("n", 2)
        kind = "inverse_log" if order == 1 and n == 2 else "inverse"
        if kind == "inverse_log":
            feature.setdefault("normalize", "n")  # the log kernel changes sign: no row normalisation
        return FeatureNonlocal(kind, order, learn_order, **feature)
    if feature:
        raise TypeError(f"options {sorted(feature)} apply to space='feature' only")
    return GridLaplacian(order, True, learn_order, weight, periodic)


@op("feature_nonlocal")
def weighted_laplacian(kernel: str = "dot", lam: float = 1.0, pool: int = 1, normalize: Optional[str] = None,
                       embed: Optional[int] = None) -> FeatureNonlocal:
    """The paper's weighted Laplacian ``sum_j w_ij (x_j - x_i) / N`` with ``w = lambda theta^T phi``
    (``kernel="dot"``, normalised by N) or the embedded Gaussian ``lambda exp(theta^T phi)``
    (``"gaussian"``, by default normalised by row sums, i.e. a softmax).

    >>> from operad import ops, Field
    >>> ops.weighted_laplacian(pool=2).bind(Field(8)).theta.weight.shape
    torch.Size([4, 8, 1, 1])
    """
    if normalize is None:
        normalize = "n" if kernel == "dot" else "rows"
    return FeatureNonlocal("weighted", 0.5, False, kernel, lam, pool, normalize, embed)
