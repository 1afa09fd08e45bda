"""Ghost modules and stages (Han et al., GhostNet 2020; G-GhostNet, IJCV 2022).

``ghost(m, ratio=s, k=k, dw=d)`` (C-Ghost module): a primary k x k
convolution makes ``ceil(m/s)`` intrinsic maps, a cheap d x d depthwise
convolution (``s - 1`` filters per map) makes the ghost maps, the two are
concatenated and cut to m channels::

    primary >> concat(identity, cheap) >> narrow(m)

``ghost_bottleneck(out, mid, k, stride, se)``: ghost (ReLU) -> depthwise k x k
stride 2 + BN when strided -> optional squeeze-excite -> ghost (linear), with
an identity shortcut when the shape is kept and a depthwise + 1x1 shortcut
otherwise.

``g_ghost_stage(base, middle, end, n, cheap_ratio)`` (G-Ghost stage, GPU
efficient): the first block ``base`` gives X (P channels); the middle blocks
run only on the first ``raw = P - cheap`` channels; the cheap channels are a
1x1 conv + BN of X's remaining channels plus a "mix": global pool of the
concatenation of X and every intermediate output, FC-BN-ReLU-FC-BN, broadcast;
after a ReLU the two parts are concatenated and go through the last block ``end``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from .algebra.macro import Macro
from .activation import Activation
from .algebra.combinators import Concat, Residual, _probe, lipschitz_of
from .conv import Conv
from .algebra.field import Channels, Field, TypeMismatch
from .linear import Identity, Linear
from .narrow import Narrow
from .norm import BatchNorm
from .pooling import GlobalPool
from .algebra.term import Cost, Term, _join, attach, op, register_family

__all__ = ["GhostModule", "GhostBottleneck", "GGhostStage", "ghost", "ghost_bottleneck", "g_ghost_stage"]


def _seq(*items):
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


# ---------------------------------------------------------------------------
# C-Ghost module
# ---------------------------------------------------------------------------
def _gexamples(draw):
    from hypothesis import strategies as st
    out = draw(st.integers(1, 8))
    return (ghost(out, ratio=draw(st.sampled_from([2, 3])), k=draw(st.sampled_from([1, 3])),
                  dw=draw(st.sampled_from([1, 3])), stride=draw(st.sampled_from([1, 1, 2])),
                  relu=draw(st.booleans()), padding_mode=draw(st.sampled_from(["zeros", "circular"]))),
            Field(draw(st.integers(1, 6))), (draw(st.integers(5, 12)), draw(st.integers(5, 12))))


@register_family("ghost", examples=_gexamples)
@dataclass(frozen=True, repr=False)
class GhostModule(Macro):
    out: int = 16
    ratio: int = 2
    k: int = 1
    dw: int = 3
    stride: int = 1
    relu: bool = True
    padding_mode: str = "zeros"  # "circular": commutes with circular shifts
    _positional = ("out",)

    def __post_init__(self):
        if not isinstance(self.ratio, int) or self.ratio < 2:
            raise ValueError(f"ghost ratio s must be an int >= 2; got {self.ratio!r}")

    @property
    def init(self) -> int:
        return math.ceil(self.out / self.ratio)

    def expand(self, t):
        self.require_real(t)
        act = (Activation("relu"),) if self.relu else ()
        pm = self.padding_mode
        primary = _seq(Conv(self.init, self.k, self.stride, bias=False, padding_mode=pm), BatchNorm(), *act)
        cheap = _seq(Conv(self.init * (self.ratio - 1), self.dw, groups=self.init, bias=False, padding_mode=pm),
                     BatchNorm(), *act)
        body = primary >> Concat((Identity(), cheap))
        if self.init * self.ratio != self.out:
            body = body >> Narrow(self.out)
        return body


@op("ghost")
def ghost(out: int, ratio: int = 2, k: int = 1, dw: int = 3, stride: int = 1, relu: bool = True,
          padding_mode: str = "zeros") -> GhostModule:
    """A Ghost module to ``out`` channels (intrinsic maps by a k x k conv, ghosts by d x d depthwise).

    >>> from operad import ops, Field
    >>> ops.ghost(16).bind(Field(8)).out_type
    Field(16)
    """
    return GhostModule(out, ratio, k, dw, stride, relu, padding_mode)


# ---------------------------------------------------------------------------
# Ghost bottleneck
# ---------------------------------------------------------------------------
def _bexamples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 6))
    same = draw(st.booleans())
    out = c if same else draw(st.integers(1, 6))
    stride = 1 if same else draw(st.sampled_from([1, 2]))
    return (ghost_bottleneck(out, draw(st.integers(2, 8)), k=draw(st.sampled_from([3, 5])), stride=stride,
                             se=draw(st.sampled_from([None, 0.25])),
                             padding_mode=draw(st.sampled_from(["zeros", "circular"]))),
            Field(c), (draw(st.integers(5, 12)), draw(st.integers(5, 12))))


@register_family("ghost_bottleneck", examples=_bexamples)
@dataclass(frozen=True, repr=False)
class GhostBottleneck(Macro):
    out: int = 16
    mid: int = 16
    k: int = 3
    stride: int = 1
    se: Optional[float] = None
    se_divisor: int = 4
    padding_mode: str = "zeros"  # "circular": commutes with circular shifts (by its stride)
    _positional = ("out", "mid")

    def expand(self, t):
        self.require_real(t)
        pm = self.padding_mode
        items = [GhostModule(self.mid, relu=True, padding_mode=pm)]
        if self.stride > 1:
            items += [Conv(None, self.k, self.stride, groups=0, bias=False, padding_mode=pm), BatchNorm()]
        if self.se:
            from .gate import SqueezeExcite
            items.append(SqueezeExcite(self.se, self.se_divisor, gate_fn="hardsigmoid"))
        items.append(GhostModule(self.out, relu=False, padding_mode=pm))
        body = _seq(*items)
        if t.channels == self.out and self.stride == 1:
            return Residual(body)
        short = _seq(Conv(None, self.k, self.stride, groups=0, bias=False, padding_mode=pm), BatchNorm(),
                     Conv(self.out, 1, bias=False), BatchNorm())
        return Residual(body, short)


@op("ghost_bottleneck")
def ghost_bottleneck(out: int, mid: int, k: int = 3, stride: int = 1, se: Optional[float] = None,
                     se_divisor: int = 4, padding_mode: str = "zeros") -> GhostBottleneck:
    """GhostNet's bottleneck: ghost(mid) -> [dw stride] -> [SE] -> ghost(out, linear) + shortcut.

    >>> from operad import ops, Field
    >>> ops.ghost_bottleneck(24, 48, stride=2).bind(Field(16)).out_type
    Field(24)
    """
    return GhostBottleneck(out, mid, k, stride, se, se_divisor, padding_mode)


# ---------------------------------------------------------------------------
# G-Ghost stage
# ---------------------------------------------------------------------------
class GGhostStageModule(nn.Module):
    def __init__(self, base, middle, mix, cheap, end, raw: int):
        super().__init__()
        self.base = base
        self.middle = nn.ModuleList(middle)
        self.mix = mix
        self.cheap = cheap
        self.end = end
        self.raw = raw
        self.act = nn.ReLU()

    def forward(self, x):
        x0 = self.base(x)
        e = x0[:, :self.raw]
        feats = [x0]
        for blk in self.middle:
            e = blk(e)
            feats.append(e)
        m = self.mix(torch.cat(feats, 1))
        c = self.act(self.cheap(x0[:, self.raw:]) + m[:, :, None, None])
        return self.end(torch.cat([e, c], 1))


def _sexamples(draw):
    from hypothesis import strategies as st
    from .activation import Activation as A
    p = draw(st.integers(2, 6))
    pm = draw(st.sampled_from(["zeros", "circular"]))  # circular: every part, so the stage, commutes with shifts
    blk = lambda c: Conv(c, 3, bias=False, padding_mode=pm) >> BatchNorm() >> A("relu")
    base_stride = draw(st.sampled_from([1, 2]))
    base = Conv(p, 3, base_stride, bias=False, padding_mode=pm) >> BatchNorm() >> A("relu")
    return (g_ghost_stage(base, blk, blk(p), n=draw(st.integers(2, 4)), cheap_ratio=draw(st.sampled_from([0.5, 0.25]))),
            Field(draw(st.integers(1, 4))), (draw(st.integers(5, 10)), draw(st.integers(5, 10))))


@register_family("g_ghost_stage", examples=_sexamples)
@dataclass(frozen=True, repr=False)
class GGhostStage(Term):
    """A G-Ghost stage of ``n`` blocks (n >= 2): ``base`` (may change width and
    stride, gives P channels), ``n - 2`` copies of ``middle`` on ``raw`` channels
    (``middle`` is a function width -> term that keeps width and size), and
    ``end`` on P channels. ``raw = floor(P * (1 - cheap_ratio) / align) * align``."""

    base: Term
    middle: object  # Callable[[int], Term]
    end: Term
    n: int = 2
    cheap_ratio: float = 0.5
    align: int = 1

    def __post_init__(self):
        if not isinstance(self.n, int) or self.n < 2:
            raise ValueError(f"g_ghost_stage needs n >= 2 blocks (base and end); got {self.n!r}")
        if not 0.0 < self.cheap_ratio < 1.0:
            raise ValueError(f"g_ghost_stage cheap_ratio must lie in (0, 1); got {self.cheap_ratio!r}")

    def children(self):
        return (self.base, self.end)

    def with_children(self, children):
        return GGhostStage(children[0], self.middle, children[1], self.n, self.cheap_ratio, self.align)

    # -- structure -----------------------------------------------------------
    def _widths(self, t):
        try:
            x0 = self.base._infer(t)
        except TypeMismatch as e:
            raise e.at("base") from None
        p = x0.channels
        raw = int(p * (1 - self.cheap_ratio) / self.align) * self.align
        if not 0 < raw < p:
            raise TypeMismatch(f"expects a base width P with 0 < raw < P for cheap_ratio {self.cheap_ratio} "
                               f"and align {self.align}; P = {p} gives raw = {raw}", op="g_ghost_stage")
        return x0, p, raw

    def _parts(self, t):
        x0, p, raw = self._widths(t)
        mid = self.middle(raw)
        cheap = p - raw
        mix_in = p + raw * (self.n - 2)
        mix = _seq(GlobalPool(), Linear(cheap, bias=False), BatchNorm(), Activation("relu"),
                   Linear(cheap, bias=False), BatchNorm())
        cheap_t = Conv(cheap, 1, bias=False) >> BatchNorm()
        return x0, p, raw, mid, mix, mix_in, cheap_t

    def out_type(self, t):
        x0, p, raw, mid, mix, mix_in, cheap_t = self._parts(t)
        if x0.rank != 2 or x0.is_complex:
            raise TypeMismatch(f"expects a base giving a real rank-2 field; got {x0!r}", op="g_ghost_stage")
        if self.n > 2:
            try:
                mo = mid._infer(Field(raw))
            except TypeMismatch as e:
                raise e.at("middle[0]") from None
            if mo != Field(raw) or _probe(mid, Field(raw)) != ((64, 48), (37, 29)):
                raise TypeMismatch(f"expects middle blocks that keep Field({raw}) and the spatial size; got {mo!r}",
                                   op="g_ghost_stage")
        try:
            return self.end._infer(Field(p))
        except TypeMismatch as e:
            raise e.at("end") from None

    def out_size(self, t, size):
        x0, p, raw = self._widths(t)
        return self.end.out_size(Field(p), self.base.out_size(t, size))

    def cost(self, t, size):
        x0, p, raw, mid, mix, mix_in, cheap_t = self._parts(t)
        s0 = self.base.out_size(t, size)
        total = self.base.cost(t, size) + self.end.cost(Field(p), s0)
        total = total + mid.cost(Field(raw), s0) * (self.n - 2)
        total = total + mix.cost(Field(mix_in), s0) + cheap_t.cost(Field(p - raw), s0)
        return total

    def equivariance(self, t):
        x0, p, raw, mid, mix, mix_in, cheap_t = self._parts(t)
        eq = self.base.equivariance(t) & self.end.equivariance(Field(p)) & frozenset({"shift", "rot90", "flip"})
        if self.n > 2:
            eq &= mid.equivariance(Field(raw))
        return eq & cheap_t.equivariance(Field(p - raw))

    def lipschitz_bound(self, m, size=None):
        """x0 = base(x); e = middles(x0[:raw]); c = relu(cheap(x0[raw:]) + mix(cat(x0, e_1..)));
        the bound follows each path (concatenations combine in quadrature)."""
        s0 = self.base.out_size(m.in_type, size) if size is not None else None
        lb = lipschitz_of(m.base, size)
        le, prefix = 1.0, []
        for blk in m.middle:
            l = lipschitz_of(blk, s0)
            if l is None:
                return None
            le *= l
            prefix.append(le)
        lmix, lch, lend = lipschitz_of(m.mix, s0), lipschitz_of(m.cheap, s0), lipschitz_of(m.end, s0)
        if None in (lb, lmix, lch, lend):
            return None
        mix_in = math.sqrt(1.0 + sum(q * q for q in prefix))
        lc = lch + lmix * mix_in
        return lend * lb * math.sqrt(le * le + lc * lc)

    def _bind(self, t, path):
        out = self._infer(t)
        x0, p, raw, mid, mix, mix_in, cheap_t = self._parts(t)
        base = self.base._bind(t, _join(path, "base"))
        middle = [mid._bind(Field(raw), _join(path, f"middle[{i}]")) for i in range(self.n - 2)]
        mixm = mix._bind(Field(mix_in), _join(path, "mix"))
        cheap = cheap_t._bind(Field(p - raw), _join(path, "cheap"))
        end = self.end._bind(Field(p), _join(path, "end"))
        return attach(GGhostStageModule(base, middle, mixm, cheap, end, raw), self, t, out, path)

    def __repr__(self):
        return (f"g_ghost_stage({self.base!r}, {getattr(self.middle, '__name__', 'middle')}, {self.end!r}, "
                f"n={self.n}, cheap_ratio={self.cheap_ratio})")


@op("g_ghost_stage")
def g_ghost_stage(base: Term, middle, end: Term, n: int, cheap_ratio: float = 0.5, align: int = 1) -> GGhostStage:
    """A G-Ghost stage: ``base``, ``n - 2`` blocks ``middle(raw)`` on part of the
    channels, the cheap part from X and a pooled mix of intermediate maps, then ``end``.

    >>> from operad import ops, Field
    >>> blk = lambda c: ops.conv(c, bias=False) >> ops.bn() >> ops.relu()
    >>> ops.g_ghost_stage(blk(16), blk, blk(16), n=4).bind(Field(8)).out_type
    Field(16)
    """
    if not callable(middle):
        raise TypeError("g_ghost_stage middle must be a function width -> term (e.g. lambda c: block(c))")
    return GGhostStage(base, middle, end, n, cheap_ratio, align)
