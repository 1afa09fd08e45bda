"""The dual-tree complex wavelet packet transform and the CMod / RMax blocks.

``ops.dtcwpt(levels=J)`` maps a real field of C channels to a complex field of
``C * 2 * 4**J`` packets at stride ``2**J`` (a Parseval frame, see
:mod:`operad.operators._wavelet_bank`); ``ops.idtcwpt(levels=J)`` is its
inverse (the adjoint). The whole J-level bank runs as two strided
convolutions with precomputed composite 1-D filters: one along H (both
trees), one along W with the tree-to-complex mixing folded into its weights.
Images are treated as periodic; sides that are not multiples of ``2**J`` are
first zero-padded (bottom, right) to the next multiple, which keeps the norm,
so outputs have ``ceil(H / 2**J)`` rows like a 'same' strided convolution.

``ops.cmod(out, levels=J)`` is Leterme et al.'s CMod block: colour mixing
(1x1, initialised to luminance, folded into the transform's first pass) ->
selected complex packets -> modulus -> BN -> ReLU, a drop-in for conv + BN + ReLU + max-pool at total stride ``2**J``.
``ops.rmax(out, levels=J)`` is the real baseline with the same filters: the
real parts at stride ``2**(J-1)`` -> BN -> ReLU -> max-pool.

>>> from operad import ops, Field
>>> ops.dtcwpt(levels=2).bind(Field(3)).out_type
Field(96, complex)
>>> ops.cmod(16, levels=2).bind(Field(3)).out_type
Field(16)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from .algebra.macro import Macro
from .algebra.util import spectral_norm
from ._wavelet_bank import QSHIFT, bank, select_packets
from .conv import Conv
from .algebra.field import Channels, Field
from .algebra.term import ALL_TRANSFORMS, Cost, Term, op, register_family

__all__ = ["DTCWPT", "IDTCWPT", "ColourMix", "CMod", "RMax", "dtcwpt", "idtcwpt", "colour_mix", "cmod", "rmax",
           "select_packets", "LUMINANCE"]

#: ITU-R BT.601 luma weights
LUMINANCE = (0.299, 0.587, 0.114)


def _extend(x: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    """Periodic extension along ``dim`` (-1 or -2): ``out[i] = x[(start + i) mod N]`` for i < length."""
    n = x.shape[dim]
    pl, pr = -start, length + start - n
    if 0 <= pl <= n and 0 <= pr <= n:  # the common case (a cat runs backward 2x faster than a circular pad)
        parts = ([x.narrow(dim, n - pl, pl)] if pl else []) + [x] + ([x.narrow(dim, 0, pr)] if pr else [])
        return torch.cat(parts, dim=dim)
    r = start % n
    reps = -(-(r + length) // n)
    if reps > 1:
        x = torch.cat([x] * reps, dim=dim)
    return x.narrow(dim, r, length)


def _fold(u: torch.Tensor, dim: int, start: int, n: int) -> torch.Tensor:
    """Adjoint of :func:`_extend`: ``out[j] = sum of u[i]`` over ``(start + i) mod n == j``."""
    m = u.shape[dim]
    r = start % n
    reps = -(-(r + m) // n)
    dim = dim % u.dim()
    pad = [0, 0] * (u.dim() - dim - 1) + [r, reps * n - r - m]
    u = F.pad(u, pad)
    shape = list(u.shape)
    shape[dim:dim + 1] = [reps, n]
    return u.reshape(shape).sum(dim)


def _plan(levels: int, filters: str, select: Optional[Tuple[int, ...]], parts: str):
    """Precomputed weights: pass 1 (along H) ``(R, 1, L, 1)``, pass 2 (along W)
    ``(P' * parts, 2, 1, L)`` in ``groups`` groups, and the output channels to keep
    per group (None when every group has the same number of packets and ``P' = P``)."""
    b = bank(levels, filters)
    pk = b.packets
    sel = tuple(range(len(pk))) if select is None else select
    kys = sorted({pk[i].ky for i in sel})
    pos = {k: j for j, k in enumerate(kys)}
    L = b.length
    w1 = torch.zeros(2 * len(kys), 1, L, 1, dtype=torch.float64)
    for j, k in enumerate(kys):
        w1[2 * j, 0, :, 0] = torch.from_numpy(b.rows[0, k])
        w1[2 * j + 1, 0, :, 0] = torch.from_numpy(b.rows[1, k])
    nparts = 2 if parts == "complex" else 1
    w2 = torch.zeros(len(sel) * nparts, 2, 1, L, dtype=torch.float64)
    c = 1.0 / (2.0 * math.sqrt(2.0))
    for o, i in enumerate(sel):
        p = pk[i]
        a, bb = torch.from_numpy(b.rows[0, p.kx]), torch.from_numpy(b.rows[1, p.kx])
        # inputs: A = (H-tree a, packet ky), B = (H-tree b, packet ky)
        if p.branch == 1:
            re, im = (a, -bb), (bb, a)
        else:
            re, im = (a, bb), (-bb, a)
        sign = -1.0 if p.conj else 1.0
        w2[o * nparts, 0, 0], w2[o * nparts, 1, 0] = c * re[0], c * re[1]
        if nparts == 2:
            w2[o * nparts + 1, 0, 0], w2[o * nparts + 1, 1, 0] = sign * c * im[0], sign * c * im[1]
    counts = [sum(1 for i in sel if pk[i].ky == k) for k in kys]
    if len(set(counts)) == 1:
        return w1, w2, len(kys), None
    # unequal packets per row filter: pad every group to the largest with zero filters
    # and keep the leading outputs of each group (index_select runs backward 6x slower)
    most = max(counts)
    w2p = torch.zeros(len(kys) * most * nparts, 2, 1, L, dtype=torch.float64)
    keep, o = [], 0
    for j, k in enumerate(kys):
        for q in range(counts[j]):
            base = (j * most + q) * nparts
            w2p[base:base + nparts] = w2[o * nparts:(o + 1) * nparts]
            keep.extend(range(base, base + nparts))
            o += 1
    return w1, w2p, len(kys), tuple(c * nparts for c in counts)


class DTCWPTModule(nn.Module):
    """The bound forward transform: two strided convolutions with fixed buffers."""

    def __init__(self, levels, filters, select, stride, parts, mix=0, cin=1):
        super().__init__()
        w1, w2, groups, gather = _plan(levels, filters, select, parts)
        self.mix = nn.Parameter(_luminance(mix, cin)) if mix else None
        self.register_buffer("w1", w1.float(), persistent=False)
        self.register_buffer("w2", w2.float(), persistent=False)
        self.keep = gather  # per group, how many leading output channels are real packets (None: all)
        self.groups, self.s, self.stride = groups, 2 ** levels, stride
        self.start, self.L = bank(levels, filters).start, bank(levels, filters).length

    def forward(self, x):
        b, c, h, w = x.shape
        s, st, L = self.s, self.stride, self.L
        hc, wc = -(-h // s) * s, -(-w // s) * s
        if hc != h or wc != w:
            x = F.pad(x, (0, wc - w, 0, hc - h))
        ho, wo = hc // st, wc // st
        # one periodic extension of the input in both axes: pass 1 runs on the extended
        # columns, so pass 2 needs none (and nothing is extended where gradients flow back)
        x = _extend(_extend(x, -2, self.start, (ho - 1) * st + L), -1, self.start, (wo - 1) * st + L)
        if self.mix is None:
            y = F.conv2d(x.reshape(b * c, 1, x.shape[-2], x.shape[-1]), self.w1, stride=(st, 1))
        else:  # the colour mixing folded into pass 1: one conv from c channels to mix x R filters
            m, r = self.mix.shape[0], self.w1.shape[0]
            k = (self.mix[:, None, :, None] * self.w1[None, :, 0, :, 0][:, :, None, :]).reshape(m * r, c, L, 1)
            y = F.conv2d(x, k, stride=(st, 1)).reshape(b * m, r, ho, x.shape[-1])
        y = F.conv2d(y, self.w2, stride=(1, st), groups=self.groups)
        if self.keep is not None:
            n, _, ho, wo = y.shape
            y = y.reshape(n, self.groups, -1, ho, wo)
            y = torch.cat([y[:, j, :k] for j, k in enumerate(self.keep)], dim=1)
        return y.reshape(b, -1, hc // st, wc // st)


def _luminance(m: int, c: int) -> torch.Tensor:
    """``(m, c)`` mixing weights, every row luminance (BT.601 for 3 channels, the mean otherwise)."""
    lum = torch.tensor(LUMINANCE) if c == 3 else torch.full((c,), 1.0 / c)
    return lum.repeat(m, 1)


def _ceil_div(n, s: int):
    if isinstance(n, int):
        return -(-n // s)
    return sympy.ceiling(sympy.sympify(n) / s)


def _check_filters(filters: str):
    if filters not in QSHIFT:
        raise ValueError(f"unknown wavelet filters {filters!r}; choose from {sorted(QSHIFT)}")


def _dtcwpt_examples(draw):
    from hypothesis import strategies as st
    levels = draw(st.sampled_from([1, 2]))  # J = 3 is covered by tests/test_wavelet.py
    filters = draw(st.sampled_from(["qshift_a", "qshift_b"]))
    s = 2 ** levels
    n = 2 * 4 ** levels
    how = draw(st.sampled_from(["all", "paper", "subset"]))
    if how == "all":
        select = None
    elif how == "paper":
        select = "paper"
    else:
        select = tuple(sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=6))))
    real = draw(st.booleans()) and levels > 1
    stride = s // 2 if real else s
    size = (s * draw(st.integers(1, max(1, 16 // s))), s * draw(st.integers(1, max(1, 16 // s))))
    mix = draw(st.sampled_from([0, 0, 1, 2]))
    term = dtcwpt(levels, filters, select=select, stride=stride, parts="real" if real else "complex", mix=mix)
    return term, Field(draw(st.integers(1, 3))), size


@register_family("dtcwpt", examples=_dtcwpt_examples)
@dataclass(frozen=True, repr=False)
class DTCWPT(Term):
    """The 2-D dual-tree complex wavelet packet transform (periodic boundary).

    Output: per input channel, the selected complex packets (all ``2 * 4**J`` by
    default, in packet-index order), as a complex field at ``stride`` (default
    ``2**J``). ``parts="real"`` keeps only the real parts (a real field; used
    by RMax, typically at ``stride = 2**(J-1)``). ``mix=M > 0`` first mixes the
    input channels into M trainable combinations initialised to luminance (the
    paper's colour mixing; ``in * M`` parameters), folded into the first pass,
    and transforms those. Lipschitz bound: the frame's operator norm (1 up to
    the coefficients' precision) times ``2**J / stride`` (times the mixing
    matrix's spectral norm).
    """

    levels: int = 2
    filters: str = "qshift_a"
    select: Optional[Tuple[int, ...]] = None
    stride: Optional[int] = None
    parts: str = "complex"
    mix: int = 0
    _arg_rules = {"mix": "[0, inf)"}  # 0: no colour mixing
    linear = True

    def __post_init__(self):
        if not isinstance(self.levels, int) or not 1 <= self.levels <= 5:
            raise ValueError(f"dtcwpt levels must be an int in 1..5; got {self.levels!r}")
        _check_filters(self.filters)
        s = 2 ** self.levels
        if self.stride is not None and (not isinstance(self.stride, int) or self.stride < 1 or s % self.stride):
            raise ValueError(f"dtcwpt stride must divide 2**levels = {s}; got {self.stride!r}")
        if self.parts not in ("complex", "real"):
            raise ValueError(f"dtcwpt parts must be 'complex' or 'real'; got {self.parts!r}")
        if not isinstance(self.mix, int) or self.mix < 0:
            raise ValueError(f"dtcwpt mix must be a non-negative int (0: no colour mixing); got {self.mix!r}")
        if self.select is not None:
            n = 2 * 4 ** self.levels
            sel = tuple(sorted(set(int(i) for i in self.select)))
            if not sel or sel[0] < 0 or sel[-1] >= n:
                raise ValueError(f"dtcwpt select must hold packet indices in 0..{n - 1}; got {self.select!r}")
            object.__setattr__(self, "select", sel)

    @property
    def s(self) -> int:
        return 2 ** self.levels

    @property
    def st(self) -> int:
        return self.stride or self.s

    @property
    def n_packets(self) -> int:
        return 2 * 4 ** self.levels if self.select is None else len(self.select)

    def out_type(self, t):
        self.require_real(t)
        c = (self.mix or t.channels) * self.n_packets
        return Field(c, kind="complex") if self.parts == "complex" else Field(c)

    def out_size(self, t, size):
        r = self.s // self.st
        return tuple(_ceil_div(n, self.s) * r for n in size)

    def cost(self, t, size):
        ho, wo = self.out_size(t, size)
        L = bank(self.levels, self.filters).length
        kys, computed = self._layout()
        nparts = 2 if self.parts == "complex" else 1
        c = self.mix or t.channels
        cin = t.channels if self.mix else 1  # pass 1 reads every input channel when the mixing is folded in
        # pass 1 (along H): 2 trees x kys filters at ho rows of the periodically extended
        # width (wo - 1) * stride + L; pass 2 (along W): 2 inputs per output
        macs = (c * cin * 2 * kys * ho * ((wo - 1) * self.st + L) * L
                + c * computed * nparts * 2 * L * ho * wo)
        return Cost(t.channels * self.mix, macs)

    def _layout(self):
        """(distinct row filters, packets computed by pass 2 incl. zero padding of groups)."""
        if self.select is None:
            return 2 ** self.levels, self.n_packets
        pk = bank(self.levels, self.filters).packets
        counts = {}
        for i in self.select:
            counts[pk[i].ky] = counts.get(pk[i].ky, 0) + 1
        return len(counts), len(counts) * max(counts.values())

    def equivariance(self, t):
        return frozenset({"shift"}) if self.st == self.s else frozenset()

    def lipschitz_bound(self, m, size=None):
        bound = bank(self.levels, self.filters).frame_norm * (self.s / self.st)
        return bound * spectral_norm(m.mix) if self.mix else bound

    def build(self, t):
        return DTCWPTModule(self.levels, self.filters, self.select, self.st, self.parts, self.mix, t.channels)


def _resolve_select(levels, filters, select):
    if isinstance(select, str):
        if select != "paper":
            raise ValueError(f"dtcwpt select must be None, 'paper' or packet indices; got {select!r}")
        return select_packets(levels, filters)
    return select


@op("dtcwpt")
def dtcwpt(levels: int = 2, filters: str = "qshift_a", select: Union[None, str, Tuple[int, ...]] = None,
           stride: Optional[int] = None, parts: str = "complex", mix: int = 0) -> DTCWPT:
    """The J-level dual-tree complex wavelet packet transform.

    ``select``: None (all ``2 * 4**J`` packets), ``"paper"`` (drop the highest
    band and the low-pass, see :func:`select_packets`) or packet indices.

    >>> from operad import ops, Field
    >>> ops.dtcwpt(levels=1).bind(Field(1)).out_type
    Field(8, complex)
    """
    return DTCWPT(levels, filters, _resolve_select(levels, filters, select), stride, parts, mix)


# ----------------------------------------------------------------------------- inverse
class IDTCWPTModule(nn.Module):
    """The adjoint (= inverse) of the full transform: two transposed convolutions."""

    def __init__(self, levels, filters):
        super().__init__()
        w1, w2, groups, _ = _plan(levels, filters, None, "complex")
        self.register_buffer("w1", w1.float(), persistent=False)
        self.register_buffer("w2", w2.float(), persistent=False)
        self.groups, self.s = groups, 2 ** levels
        self.start = bank(levels, filters).start
        self.per = 4 * 4 ** levels

    def forward(self, z):
        b, c2, h, w = z.shape
        s = self.s
        y = z.reshape(b * (c2 // self.per), self.per, h, w)
        y = F.conv_transpose2d(y, self.w2, stride=(1, s), groups=self.groups)
        y = _fold(y, -1, self.start, w * s)
        y = F.conv_transpose2d(y, self.w1, stride=(s, 1))
        y = _fold(y, -2, self.start, h * s)
        return y.reshape(b, c2 // self.per, h * s, w * s)


def _idtcwpt_examples(draw):
    from hypothesis import strategies as st
    levels = draw(st.sampled_from([1, 2]))
    filters = draw(st.sampled_from(["qshift_a", "qshift_b"]))
    c = draw(st.integers(1, 2))
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return idtcwpt(levels, filters), Field(c * 2 * 4 ** levels, kind="complex"), size


@register_family("idtcwpt", examples=_idtcwpt_examples)
@dataclass(frozen=True, repr=False)
class IDTCWPT(Term):
    """The inverse transform: all ``2 * 4**J`` complex packets per channel (as
    :func:`dtcwpt` makes them) back to a real field ``2**J`` times larger.
    It is the adjoint of the Parseval frame, so its norm is the frame's."""

    levels: int = 2
    filters: str = "qshift_a"
    linear = True

    def __post_init__(self):
        if not isinstance(self.levels, int) or not 1 <= self.levels <= 5:
            raise ValueError(f"idtcwpt levels must be an int in 1..5; got {self.levels!r}")
        _check_filters(self.filters)

    @property
    def per(self) -> int:
        return 2 * 4 ** self.levels

    def out_type(self, t):
        if not t.is_complex or t.rank != 2:
            self.reject("a rank-2 complex field (the output of ops.dtcwpt)", t)
        if isinstance(t.channels, int) and t.channels % self.per:
            self.reject(f"a multiple of 2 * 4**{self.levels} = {self.per} complex channels (every packet of "
                        f"ops.dtcwpt(levels={self.levels}), select=None)", t)
        return Field(t.channels // self.per)

    def out_size(self, t, size):
        return tuple(n * 2 ** self.levels for n in size)

    def cost(self, t, size):
        h, w = size
        s, L = 2 ** self.levels, bank(self.levels, self.filters).length
        c = t.channels // self.per
        return Cost(0, c * (self.per * 2 * 2 * L * h * w + 2 * s * L * h * w * s))

    def equivariance(self, t):
        return frozenset({"shift"})

    def lipschitz_bound(self, m, size=None):
        return bank(self.levels, self.filters).frame_norm

    def build(self, t):
        return IDTCWPTModule(self.levels, self.filters)


@op("idtcwpt")
def idtcwpt(levels: int = 2, filters: str = "qshift_a") -> IDTCWPT:
    """The inverse DT-CWPT: ``idtcwpt(J)(dtcwpt(J)(x)) == x`` for sides divisible by ``2**J``.

    >>> from operad import ops, Field
    >>> ops.idtcwpt(levels=1).bind(Field(8, kind="complex")).out_type
    Field(1)
    """
    return IDTCWPT(levels, filters)


# ----------------------------------------------------------------------------- colour mixing
def _mix_examples(draw):
    from hypothesis import strategies as st
    return (colour_mix(draw(st.integers(1, 3))), Field(draw(st.sampled_from([1, 3]))),
            (draw(st.integers(3, 10)), draw(st.integers(3, 10))))


@register_family("colour_mix", examples=_mix_examples)
@dataclass(frozen=True, repr=False)
class ColourMix(Conv):
    """A trainable 1x1 colour mixing without bias, every output initialised to
    luminance (BT.601 weights on 3 channels, the mean otherwise)."""

    def build(self, t):
        m = super().build(t)
        lum = torch.tensor(LUMINANCE) if t.channels == 3 else torch.full((t.channels,), 1.0 / t.channels)
        with torch.no_grad():
            m.weight.copy_(lum.view(1, -1, 1, 1).expand_as(m.weight))
        return m


@op("colour_mix")
def colour_mix(out: int = 1) -> ColourMix:
    """``out`` trainable 1x1 colour mixtures initialised to luminance.

    >>> from operad import ops, Field
    >>> ops.colour_mix(1).bind(Field(3)).weight.flatten().tolist()
    [0.29899999499320984, 0.5870000123977661, 0.11400000005960464]
    """
    return ColourMix(out, 1, 1, 1, 1, False, "same", "zeros")


# ----------------------------------------------------------------------------- CMod / RMax
def _block_select(out, mix, levels, filters, select):
    if not isinstance(out, int) or not isinstance(mix, int) or mix < 1 or out % mix:
        raise ValueError(f"cmod/rmax out={out!r} must be a multiple of mix={mix!r}")
    if select is None:
        return select_packets(levels, filters, n=out // mix)
    sel = tuple(sorted(set(select)))
    if len(sel) != out // mix:
        raise ValueError(f"cmod/rmax select has {len(sel)} packets; out / mix = {out // mix}")
    return sel


def _block_examples(cls):
    def ex(draw):
        from hypothesis import strategies as st
        levels = draw(st.sampled_from([1, 2]))
        mix = draw(st.integers(1, 2))
        out = mix * draw(st.integers(1, 4))
        s = 2 ** levels
        size = (s * draw(st.integers(2, 4)), s * draw(st.integers(2, 4)))
        return cls(out, levels, draw(st.sampled_from(["qshift_a", "qshift_b"])), mix), Field(3), size
    return ex


@dataclass(frozen=True, repr=False)
class _WaveletBlock(Macro):
    out: int = 16
    levels: int = 2
    filters: str = "qshift_a"
    mix: int = 1
    select: Optional[Tuple[int, ...]] = None
    _positional = ("out",)

    def __post_init__(self):
        _check_filters(self.filters)
        object.__setattr__(self, "select", _block_select(self.out, self.mix, self.levels, self.filters, self.select))


@register_family("cmod", examples=_block_examples(lambda *a: CMod(*a)))
@dataclass(frozen=True, repr=False)
class CMod(_WaveletBlock):
    """CMod: colour mix -> selected DT-CWPT packets (complex, stride ``2**J``) ->
    modulus -> BN -> ReLU. ``out = mix * len(select)`` real channels."""

    def expand(self, t):
        from .. import ops
        filt = ops.dtcwpt(self.levels, self.filters, select=self.select, mix=self.mix)
        return filt >> ops.modulus() >> ops.bn() >> ops.relu()


@register_family("rmax", examples=_block_examples(lambda *a: RMax(*a)))
@dataclass(frozen=True, repr=False)
class RMax(_WaveletBlock):
    """RMax: colour mix -> real parts of the same packets at stride ``2**(J-1)`` ->
    BN -> ReLU -> 2x2 max-pool (total stride ``2**J``)."""

    def expand(self, t):
        from .. import ops
        s = 2 ** self.levels
        filt = ops.dtcwpt(self.levels, self.filters, select=self.select, stride=s // 2, parts="real", mix=self.mix)
        return filt >> ops.bn() >> ops.relu() >> ops.max_pool(2)

    def equivariance(self, t):
        """Shifts by multiples of the total stride ``2**J`` on sides divisible by it, as CMod:
        the periodic DT-CWPT commutes with them at any output stride once the sides are
        multiples of ``2**J`` (its own stride-``2**(J-1)`` declaration cannot assume that),
        and the tiling 2x2 max pool with the even shifts they become."""
        return frozenset({"shift"}) & self.expand(t).items[-1].equivariance(t)


@op("cmod")
def cmod(out: int, levels: int = 2, filters: str = "qshift_a", mix: int = 1,
         select: Optional[Tuple[int, ...]] = None) -> CMod:
    """Leterme et al.'s CMod block with ``out`` channels at stride ``2**levels``;
    ``select`` defaults to the ``out / mix`` lowest-frequency oriented packets.

    >>> from operad import ops, Field
    >>> ops.cmod(8, levels=2, mix=2).bind(Field(3)).out_type
    Field(8)
    """
    return CMod(out, levels, filters, mix, select)


@op("rmax")
def rmax(out: int, levels: int = 2, filters: str = "qshift_a", mix: int = 1,
         select: Optional[Tuple[int, ...]] = None) -> RMax:
    """The RMax baseline of :func:`cmod` with the same filters (real parts, max-pool).

    >>> from operad import ops, Field
    >>> ops.rmax(8, levels=2).bind(Field(3)).out_type
    Field(8)
    """
    return RMax(out, levels, filters, mix, select)
