"""``harmonic_conv``: circular-harmonic convolutions (Harmonic Networks, Worrall et al. 2017).

Every filter is a circular harmonic of rotation order ``d``::

    W(r, phi) = e^{i beta} sum_j R_j g(r - r_j) e^{i d phi},   g(s) = exp(-s^2 / (2 sigma^2))

a learned radial profile ``R`` on rings of radii ``r_j`` (resampled onto the pixel
grid by the Gaussian ``g``), a learned phase offset ``beta`` and a zero centre
tap when ``d != 0`` (where ``phi`` is undefined). Coordinates: ``x`` to the right,
``y`` up as displayed, ``phi`` counter-clockwise, and the convolution is torch's
cross-correlation, so rotating the input by ``theta`` (counter-clockwise as
displayed) multiplies the response by ``e^{i d theta}``: an order-``d`` filter maps
an order-``k`` stream to order ``k + d`` (see :mod:`operad.theory.harmonic`).

``orders`` are the rotation orders of the *output* streams; the stream of order
``m`` receives every input stream of order ``k`` through filters of order ``m - k``
(restricted to ``filter_orders`` when given). A real input is one stream of
order 0. The algebra checks this arithmetic at bind time.

The complex filters are synthesised from the radial weights once per forward
and applied as ONE ordinary ``conv2d`` whose real weight stacks the real and
imaginary parts (``[[A, -B], [B, A]]`` per complex pair, ``[A; B]`` for real
input); in eval mode (no gradient wanted) the synthesised weight is cached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .algebra.util import spectral_norm
from .algebra.field import Channels, Field, TypeMismatch
from .algebra.term import Cost, Term, op, register_family

__all__ = ["HarmonicConv", "HarmonicConvModule", "harmonic_conv", "harmonic_basis", "default_rings",
           "input_orders"]


def default_rings(k: int) -> Tuple[float, ...]:
    """Ring radii 0, 1, ..., k // 2 (one per pixel of radius)."""
    return tuple(float(r) for r in range(k // 2 + 1))


def _grid(k: int, dtype=torch.float64):
    """Pixel polar coordinates of a k x k filter: x right, y up as displayed."""
    c = (k - 1) / 2
    rows = torch.arange(k, dtype=dtype)
    y = (c - rows)[:, None].expand(k, k)
    x = (rows - c)[None, :].expand(k, k)
    return torch.sqrt(x * x + y * y), torch.atan2(y, x)


def harmonic_basis(order: int, k: int, rings: Tuple[float, ...], sigma: float = 0.5,
                   dtype=torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts, each (len(rings), k, k), of ``g(r - r_j) e^{i d phi}``
    on the pixel grid, with the centre tap zero for ``d != 0``.

    >>> re, im = harmonic_basis(1, 3, (0.0, 1.0))
    >>> float(re[1, 1, 2]), float(im[1, 0, 1])   # right of centre: phi = 0; above: phi = pi/2
    (1.0, 1.0)
    """
    rho, phi = _grid(k, dtype)
    radii = torch.tensor(rings, dtype=dtype)[:, None, None]
    g = torch.exp(-(rho[None] - radii) ** 2 / (2 * sigma * sigma))
    g = g * (rho <= (k - 1) / 2 + 0.5)  # the inscribed disk: corners would break the circular symmetry
    re, im = g * torch.cos(order * phi), g * torch.sin(order * phi)
    if order != 0:
        c = k // 2
        re[:, c, c] = 0
        im[:, c, c] = 0
    # exact zeros where cos/sin vanish on the axes and diagonals keep rot90 symmetry exact
    re = torch.where(re.abs() < 1e-15, torch.zeros_like(re), re)
    im = torch.where(im.abs() < 1e-15, torch.zeros_like(im), im)
    return re, im


def input_orders(t: Field) -> Tuple[int, ...]:
    """Rotation orders of a harmonic conv's input streams (a real field is order 0)."""
    return (0,) if not t.is_complex else t.orders


class HarmonicConvModule(nn.Module):
    """The bound harmonic convolution: radial weights and phases -> one conv2d.

    Parameters ``radial`` (C_out, C_in, rings) and ``phase`` (C_out, C_in) (when
    ``phase=True``); buffers hold the gathered basis (not saved) and the
    connection mask of the order arithmetic.
    """

    def __init__(self, cin: int, cout: int, complex_in: bool, k: int, basis_re: torch.Tensor,
                 basis_im: torch.Tensor, mask: torch.Tensor, phase: bool, init_std: torch.Tensor):
        super().__init__()
        self.cin, self.cout, self.complex_in, self.k = cin, cout, complex_in, k
        nr = basis_re.shape[2]
        self.radial = nn.Parameter(torch.randn(cout, cin, nr) * init_std[:, None, None] * mask[..., None])
        self.phase = nn.Parameter(torch.rand(cout, cin) * 2 * math.pi) if phase else None
        # (C_out, C_in, rings, k*k), the basis of each pair's filter order (masked pairs are zero)
        self.register_buffer("basis_re", (basis_re * mask[..., None, None, None]).flatten(-2).float(), persistent=False)
        self.register_buffer("basis_im", (basis_im * mask[..., None, None, None]).flatten(-2).float(), persistent=False)
        self._cache: Optional[tuple] = None

    # -- synthesis ------------------------------------------------------------------
    def complex_filters(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts (C_out, C_in, k, k) of the complex filters."""
        r = self.radial[..., None]
        a = (r * self.basis_re).sum(-2)
        b = (r * self.basis_im).sum(-2)
        if self.phase is not None:
            c, s = torch.cos(self.phase)[..., None], torch.sin(self.phase)[..., None]
            a, b = a * c - b * s, a * s + b * c
        shape = (self.cout, self.cin, self.k, self.k)
        return a.reshape(shape), b.reshape(shape)

    def synthesize(self) -> torch.Tensor:
        """The real conv2d weight: (2 C_out, 2 C_in or C_in, k, k)."""
        a, b = self.complex_filters()
        if not self.complex_in:
            return torch.stack((a, b), dim=1).reshape(2 * self.cout, self.cin, self.k, self.k)
        top = torch.stack((a, -b), dim=2)   # Re out = A Re z - B Im z
        bot = torch.stack((b, a), dim=2)    # Im out = B Re z + A Im z
        return torch.stack((top, bot), dim=1).reshape(2 * self.cout, 2 * self.cin, self.k, self.k)

    def _key(self):
        ps = [self.radial] + ([self.phase] if self.phase is not None else [])
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in ps)

    def weight(self) -> torch.Tensor:
        """The conv weight; cached while in eval mode and no gradient is wanted."""
        if torch.compiler.is_compiling() or self.training:
            return self.synthesize()
        if torch.is_grad_enabled() and self.radial.requires_grad:
            return self.synthesize()
        key = self._key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.synthesize().detach())
        return self._cache[1]

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), padding=self.k // 2)

    def extra_repr(self) -> str:
        return f"{self.cin} -> {self.cout} complex, k={self.k}, complex_in={self.complex_in}"


def _examples(draw):
    from hypothesis import strategies as st
    real_in = draw(st.booleans())
    if real_in:
        t = Field(draw(st.integers(1, 3)))
    else:
        in_orders = draw(st.sampled_from([(0,), (0, 1), (1,), (-1, 0, 1), (2,)]))
        t = Field(len(in_orders) * draw(st.integers(1, 2)), kind="complex", orders=in_orders)
    orders = draw(st.sampled_from([(0,), (0, 1), (1,), (0, 1, 2), (-1, 1), (0, -2)]))
    out = len(orders) * draw(st.integers(1, 2))
    k = draw(st.sampled_from([3, 5, 7]))
    phase = draw(st.booleans())
    sigma = draw(st.sampled_from([0.5, 0.6, 0.8]))
    n = draw(st.integers(k + 1, 13))
    return harmonic_conv(out, orders=orders, k=k, phase=phase, sigma=sigma), t, (n, n)


@register_family("harmonic_conv", examples=_examples)
@dataclass(frozen=True, repr=False)
class HarmonicConv(Term):
    """A circular-harmonic convolution to ``out`` complex channels of rotation ``orders``.

    Parameters: ``C_out * C_in * len(rings)`` radial weights plus ``C_out * C_in``
    phases; MACs: one ``k x k`` conv from ``C_in`` (x2 if the input is complex)
    real channels to ``2 C_out`` real channels, stride 1, 'same' zero padding.

    Initialisation (unit scale): ``R ~ N(0, s_o^2)`` with
    ``s_o^2 = gain^2 / sum_{i -> o} ||B_{d(o,i)}||^2`` where ``||B_d||^2`` sums the
    squared magnitudes of the Gaussian-ring basis of order ``d`` over rings and
    pixels. For white input with ``E|z|^2 = 1`` (or ``E x^2 = 1``) this gives
    ``E|y|^2 = gain^2`` per output channel, whatever the phases.
    """

    out: Channels = 8
    orders: Tuple[int, ...] = (0, 1)
    k: int = 5
    rings: Optional[Tuple[float, ...]] = None
    phase: bool = True
    sigma: float = 0.5
    filter_orders: Optional[Tuple[int, ...]] = None
    gain: float = 1.0
    _positional = ("out",)
    linear = True

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1 or self.k % 2 == 0:
            raise ValueError(f"harmonic_conv k must be a positive odd int (a centred filter); got {self.k!r}")
        orders = tuple(int(m) for m in self.orders)
        if not orders or len(set(orders)) != len(orders):
            raise ValueError(f"harmonic_conv orders must be distinct ints; got {self.orders!r}")
        object.__setattr__(self, "orders", orders)
        if self.rings is not None:
            rings = tuple(float(r) for r in self.rings)
            if not rings or any(r < 0 for r in rings):
                raise ValueError(f"harmonic_conv rings must be non-negative radii; got {self.rings!r}")
            object.__setattr__(self, "rings", rings)
        if self.filter_orders is not None:
            object.__setattr__(self, "filter_orders", tuple(int(d) for d in self.filter_orders))
        if self.sigma <= 0:
            raise ValueError(f"harmonic_conv sigma must be positive; got {self.sigma!r}")
        if isinstance(self.out, int) and self.out % len(orders):
            raise ValueError(f"harmonic_conv out={self.out} must be a multiple of len(orders)={len(orders)}")

    # -- types -----------------------------------------------------------------
    @property
    def ring_radii(self) -> Tuple[float, ...]:
        return self.rings if self.rings is not None else default_rings(self.k)

    def _allowed(self, d: int) -> bool:
        return self.filter_orders is None or d in self.filter_orders

    def out_type(self, t):
        if t.rank != 2:
            self.reject("a rank-2 field", t)
        if t.is_complex and t.orders is None:
            self.reject("a real field or a complex field with rotation orders, e.g. "
                        "Field(c, kind='complex', orders=(0,))", t)
        ins = input_orders(t)
        for m in self.orders:
            if not any(self._allowed(m - k) for k in ins):
                reach = sorted({k + d for k in ins for d in self.filter_orders})
                self.reject(f"output order {m} to be reachable: input orders {ins} with filter orders "
                            f"{self.filter_orders} reach only {tuple(reach)}", t)
        return Field(self.out, kind="complex", orders=self.orders)

    def out_size(self, t, size):
        return size

    def cost(self, t, size):
        cin = t.channels
        per_pair = len(self.ring_radii) + (1 if self.phase else 0)
        macs = 2 * self.out * t.tensor_channels * self.k * self.k * size[0] * size[1]
        return Cost(self.out * cin * per_pair, macs)

    def used_filter_orders(self, t: Field) -> Tuple[int, ...]:
        """The filter orders ``m - k`` this term uses on input ``t``."""
        return tuple(sorted({m - k for m in self.orders for k in input_orders(t) if self._allowed(m - k)}))

    def equivariance(self, t):
        # rot90 is exact for every order (the grid maps onto itself); arbitrary angles
        # hold up to interpolation error only where the grid resolves the filter's
        # angular frequency: |filter order| <= 1 on any k (order 2 and up alias badly on
        # 3x3..7x7 grids; see tests/test_harmonic.py for the measured errors).
        if max(abs(d) for d in self.used_filter_orders(t)) <= 1:
            return frozenset({"rot90", "rotation"})
        return frozenset({"rot90"})

    def lipschitz_bound(self, m, size=None):
        with torch.no_grad():
            w = m.synthesize()
        return spectral_norm(w) * self.k  # a pixel meets k*k taps: sqrt(k*k) overlap

    # -- build -------------------------------------------------------------------------
    def connection(self, t: Field):
        """(C_out, C_in) filter orders and connection mask of this term on input ``t``."""
        ins = input_orders(t)
        gin = t.channels // len(ins)
        gout = self.out // len(self.orders)
        d = torch.tensor([[m - k for k in ins for _ in range(gin)] for m in self.orders for _ in range(gout)])
        mask = torch.tensor([[float(self._allowed(int(v))) for v in row] for row in d.tolist()])
        return d, mask

    def build(self, t):
        d, mask = self.connection(t)
        rings = self.ring_radii
        cache = {}
        bre = torch.zeros(*d.shape, len(rings), self.k, self.k, dtype=torch.float64)
        bim = torch.zeros_like(bre)
        norm2 = torch.zeros(d.shape, dtype=torch.float64)
        for o in range(d.shape[0]):
            for i in range(d.shape[1]):
                di = int(d[o, i])
                if di not in cache:
                    cache[di] = harmonic_basis(di, self.k, rings, self.sigma)
                bre[o, i], bim[o, i] = cache[di]
                norm2[o, i] = (cache[di][0] ** 2 + cache[di][1] ** 2).sum()
        fan = (norm2 * mask).sum(1).clamp_min(1e-12)
        std = (self.gain / fan.sqrt()).float()
        return HarmonicConvModule(t.channels, self.out, t.is_complex, self.k, bre, bim, mask, self.phase, std)


@op("harmonic_conv")
def harmonic_conv(out: Channels = 8, orders=(0, 1), k: int = 5, rings: Optional[Tuple[float, ...]] = None,
                  phase: bool = True, sigma: float = 0.5, filter_orders: Optional[Tuple[int, ...]] = None,
                  gain: float = 1.0) -> HarmonicConv:
    """A circular-harmonic convolution to ``out`` complex channels with rotation ``orders``
    (``out`` splits into ``len(orders)`` equal streams).

    ``rings``: radii of the learned radial profile (default ``0, 1, ..., k // 2``);
    ``sigma``: width of the Gaussian that resamples rings onto pixels; ``phase``:
    learn a phase offset per filter; ``filter_orders``: allowed filter orders
    ``m - k`` (default: all, every input stream feeds every output stream);
    ``gain``: output scale at initialisation for white unit-scale input.

    >>> from operad import ops, Field
    >>> m = ops.harmonic_conv(8, orders=(0, 1), k=5).bind(Field(1))
    >>> m.out_type, tuple(m.synthesize().shape)
    (Field(8, complex, orders=(0, 1)), (16, 1, 5, 5))
    """
    return HarmonicConv(out, tuple(orders), k, None if rings is None else tuple(rings), phase, sigma,
                        None if filter_orders is None else tuple(filter_orders), gain)
