"""Multigrid-in-channels (MGIC, Eliasof, Ephrath, Ruthotto and Treister).

A V-cycle over channels replaces a block whose cost grows as C**2 by one whose
cost grows as C:

* ``two_grid(R, inner, P)``: the coarse-grid correction ``x + P(inner(R x) - R x)``;
* ``mgic(group=g, coarsest=c0, block="basic")`` on C channels::

      C <= c0 (or C not splittable):  the dense block at width C
      otherwise:  two_grid(R, mgic at C/2, P) >> grouped block at width C

  where R is a grouped 1x1 convolution C -> C/2 (groups of g channels to g/2),
  P the grouped 1x1 convolution C/2 -> C with the same grouping, and the
  "grouped block" is a residual step whose convolutions have groups of fixed
  size g: ``basic`` = relu(x + BN(gconv3x3(relu(BN(gconv3x3(x)))))),
  ``inverted`` = an inverted residual with grouped 1x1 convolutions.

Every level costs a constant times its width, the widths halve, and the dense
block sits at a fixed width c0, so the total is linear in C. With a symbolic
width C, ``operad.cost`` returns the exact closed form for ``C = c0 * 2**L``
(the sum over levels of a*C/2**l is a*(2C - 2*c0)): a polynomial of degree 1
in C, where the standard block's is of degree 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import sympy
from torch import nn

from .algebra.macro import Macro
from .activation import Activation
from .algebra.combinators import Residual, _probe, lipschitz_of
from .conv import Conv
from .algebra.field import Field, TypeMismatch
from .inverted_residual import InvertedResidual
from .norm import BatchNorm
from .algebra.term import Cost, Term, _join, attach, op, register_family

__all__ = ["TwoGrid", "MGIC", "two_grid", "mgic", "mgic_levels"]


class TwoGridModule(nn.Module):
    def __init__(self, restrict, inner, prolong):
        super().__init__()
        self.restrict = restrict
        self.inner = inner
        self.prolong = prolong

    def forward(self, x):
        xc = self.restrict(x)
        return x + self.prolong(self.inner(xc) - xc)


def _tg_examples(draw):
    from hypothesis import strategies as st
    g = draw(st.sampled_from([2, 4]))
    c = g * draw(st.integers(1, 2))
    inner = Conv(None, draw(st.sampled_from([1, 3])), bias=False) >> BatchNorm() >> Activation("relu")
    t = two_grid(Conv(c // 2, 1, groups=c // g, bias=False), inner, Conv(c, 1, groups=c // g, bias=False))
    return t, Field(c), (draw(st.integers(4, 9)), draw(st.integers(4, 9)))


@register_family("two_grid", examples=_tg_examples)
@dataclass(frozen=True, repr=False)
class TwoGrid(Term):
    """Coarse-grid correction ``x + P(inner(R x) - R x)``; Lipschitz bound
    ``1 + |P| (|inner| + 1) |R|``."""

    restrict: Term
    inner: Term
    prolong: Term

    def children(self):
        return (self.restrict, self.inner, self.prolong)

    def with_children(self, children):
        return TwoGrid(*children)

    def _types(self, t):
        try:
            tc = self.restrict._infer(t)
        except TypeMismatch as e:
            raise e.at("restrict") from None
        try:
            ti = self.inner._infer(tc)
        except TypeMismatch as e:
            raise e.at("inner") from None
        if ti != tc or _probe(self.inner, tc) != ((64, 48), (37, 29)):
            raise TypeMismatch(f"expects an inner term that keeps the coarse field {tc!r} and its size; got {ti!r}",
                               op="two_grid")
        try:
            tp = self.prolong._infer(tc)
        except TypeMismatch as e:
            raise e.at("prolong") from None
        if tp != t or _probe(self.restrict, t) != ((64, 48), (37, 29)) or _probe(self.prolong, tc) != _probe(self.restrict, t):
            raise TypeMismatch(f"expects restriction and prolongation that keep the size and return to {t!r}; "
                               f"prolongation gives {tp!r}", op="two_grid")
        return tc

    def out_type(self, t):
        self._types(t)
        return t

    def cost(self, t, size):
        tc = self._types(t)
        return self.restrict.cost(t, size) + self.inner.cost(tc, size) + self.prolong.cost(tc, size)

    def equivariance(self, t):
        tc = self._types(t)
        return self.restrict.equivariance(t) & self.inner.equivariance(tc) & self.prolong.equivariance(tc)

    @property
    def linear(self):
        return self.restrict.linear and self.inner.linear and self.prolong.linear

    def lipschitz_bound(self, m, size=None):
        r, i, p = (lipschitz_of(c, size) for c in (m.restrict, m.inner, m.prolong))
        if None in (r, i, p):
            return None
        return 1.0 + p * (i + 1.0) * r

    def _bind(self, t, path):
        tc = self._types(t)
        mods = (self.restrict._bind(t, _join(path, "restrict")), self.inner._bind(tc, _join(path, "inner")),
                self.prolong._bind(tc, _join(path, "prolong")))
        return attach(TwoGridModule(*mods), self, t, t, path)

    def __repr__(self):
        return f"two_grid({self.restrict!r}, {self.inner!r}, {self.prolong!r})"


@op("two_grid")
def two_grid(restrict: Term, inner: Term, prolong: Term) -> TwoGrid:
    """The coarse-grid correction ``x + P(inner(R x) - R x)``.

    >>> from operad import ops, Field
    >>> ops.two_grid(ops.pointwise(4, bias=False), ops.relu(), ops.pointwise(8, bias=False)).bind(Field(8)).out_type
    Field(8)
    """
    return TwoGrid(restrict, inner, prolong)


def mgic_levels(c: int, group: int, coarsest: int):
    """The widths of the V-cycle levels, fine to coarse (the last one dense).

    >>> mgic_levels(64, 8, 16)
    [64, 32, 16]
    """
    widths = [c]
    while widths[-1] > coarsest and widths[-1] % group == 0 and (widths[-1] // 2) % group == 0:
        widths.append(widths[-1] // 2)
    return widths


def _examples(draw):
    from hypothesis import strategies as st
    g = draw(st.sampled_from([2, 4]))
    c0 = draw(st.sampled_from([2, 4]))
    c = g * draw(st.sampled_from([1, 2, 4]))
    block = draw(st.sampled_from(["basic", "inverted"]))
    mode = draw(st.sampled_from(["zeros", "circular"]))
    return (mgic(group=g, coarsest=c0, block=block, t=2, padding_mode=mode), Field(c),
            (draw(st.integers(4, 8)), draw(st.integers(4, 8))))


@register_family("mgic", examples=_examples)
@dataclass(frozen=True, repr=False)
class MGIC(Macro):
    group: int = 8
    coarsest: int = 16
    block: str = "basic"
    t: float = 6
    pre: bool = False
    padding_mode: str = "zeros"  # "circular": every part, so the block, commutes with circular shifts

    def __post_init__(self):
        if not isinstance(self.group, int) or self.group < 2 or self.group % 2:
            raise ValueError(f"mgic group must be an even int >= 2 (restriction maps g channels to g/2); "
                             f"got {self.group!r}")
        if self.block not in ("basic", "inverted"):
            raise ValueError(f"mgic block must be 'basic' or 'inverted'; got {self.block!r}")

    def smoother(self, c, groups) -> Term:
        """The residual step at width c with ``groups`` groups (1 = dense)."""
        if self.block == "inverted":
            return InvertedResidual(c, 1, self.t, pw_group=None if groups == 1 else self.group,
                                    padding_mode=self.padding_mode)
        pm = self.padding_mode
        body = (Conv(c, 3, groups=groups, bias=False, padding_mode=pm) >> BatchNorm() >> Activation("relu")
                >> Conv(c, 3, groups=groups, bias=False, padding_mode=pm) >> BatchNorm())
        return Residual(body) >> Activation("relu")

    def _level(self, c):
        """(smoother, restriction, prolongation) of a fine level of width c."""
        g = c // self.group if isinstance(c, int) else c / self.group
        return (self.smoother(c, g), Conv(c // 2 if isinstance(c, int) else c / 2, 1, groups=g, bias=False),
                Conv(c, 1, groups=g, bias=False))

    def _build(self, widths) -> Term:
        c = widths[0]
        if len(widths) == 1:
            return self.smoother(c, 1)
        smooth, r, p = self._level(c)
        cycle = TwoGrid(r, self._build(widths[1:]), p) >> smooth
        return (smooth >> cycle) if self.pre else cycle

    def expand(self, t):
        self.require_real(t)
        if t.is_symbolic:
            raise TypeError("an MGIC block expands only at a concrete width; operad.cost handles symbolic widths")
        return self._build(mgic_levels(t.channels, self.group, self.coarsest))

    def out_type(self, t):
        if t.is_symbolic:
            self.require_real(t)
            return t
        return super().out_type(t)

    def cost(self, t, size):
        if not t.is_symbolic:
            return super().cost(t, size)
        # closed form for C = coarsest * 2**L: sum_l a * C / 2**l = a * (2C - 2*coarsest)
        c = sympy.Dummy("c", positive=True)
        smooth, r, p = self._level(c)
        lev = smooth.cost(Field(c), size)
        if self.pre:
            lev = lev + smooth.cost(Field(c), size)
        lev = lev + r.cost(Field(c), size) + p.cost(Field(c / 2), size)
        c0 = self.coarsest
        coarse = self.smoother(c0, 1).cost(Field(c0), size)
        out = []
        for e_lev, e_coarse in ((lev.params, coarse.params), (lev.macs, coarse.macs)):
            e_lev = sympy.expand(e_lev)
            if sympy.simplify(e_lev.subs(c, 0)) != 0 or sympy.degree(e_lev, c) > 1:
                raise ValueError(f"mgic: a level's cost is not proportional to its width: {e_lev}")
            a = sympy.expand(e_lev / c)
            out.append(sympy.expand(a * (2 * t.channels - 2 * c0) + e_coarse))
        return Cost(*out)


@op("mgic")
def mgic(group: int = 8, coarsest: int = 16, block: str = "basic", t: float = 6, pre: bool = False,
         padding_mode: str = "zeros") -> MGIC:
    """An MGIC block (width kept): a V-cycle over channels with grouped convolutions
    of ``group`` channels per group, down to a dense block of at most ``coarsest`` channels.

    >>> from operad import ops, Field
    >>> ops.mgic(group=8, coarsest=16).bind(Field(64)).out_type
    Field(64)
    """
    return MGIC(group, coarsest, block, t, pre, padding_mode)
