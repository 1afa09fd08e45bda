"""Multiplicative gates: ``gate(g, body)`` is ``body(x) * g(x)``, and
``squeeze_excite`` (SENet; the SE of MobileNetV3 and GhostNet) built on it.

The gate ``g`` may produce a rank-0 field (one factor per channel, or one in
all, broadcast over the pixels) or a rank-2 field of the body's size (a
spatial gate). The product of two functions of ``x`` is not globally
Lipschitz (its Jacobian contains ``body(x) * dg/dx``, unbounded in ``x``), so
the family states no Lipschitz bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from .algebra.macro import Macro
from .activation import Activation
from .algebra.combinators import _probe
from .algebra.field import Field, TypeMismatch
from .linear import Identity, Linear
from .pooling import GlobalPool
from .algebra.term import ALL_TRANSFORMS, Cost, Term, _join, attach, op, register_family

__all__ = ["Gate", "SqueezeExcite", "gate", "squeeze_excite", "make_divisible"]


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None, round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``min_value``,
    and never below ``round_limit * v``): the channel rounding of MobileNet and GhostNet.

    >>> make_divisible(32 * 0.75), make_divisible(1280 * 1.4)
    (24, 1792)
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class GateModule(nn.Module):
    def __init__(self, body: nn.Module, gate: nn.Module, broadcast: bool):
        super().__init__()
        self.body = body
        self.gate = gate
        self.broadcast = broadcast

    def forward(self, x):
        g = self.gate(x)
        if self.broadcast:
            g = g[:, :, None, None]
        return self.body(x) * g


def _examples(draw):
    from hypothesis import strategies as st
    from .conv import conv
    c = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["se", "channel", "spatial"]))
    size = (draw(st.integers(3, 9)), draw(st.integers(3, 9)))
    if kind == "se":
        return squeeze_excite(draw(st.sampled_from([0.25, 0.5])), divisor=1,
                              gate_fn=draw(st.sampled_from(["sigmoid", "hardsigmoid"]))), Field(c), size
    if kind == "channel":
        out = draw(st.integers(1, 6))
        g = GlobalPool() >> Linear(draw(st.sampled_from([1, out]))) >> Activation("sigmoid")
        return gate(g, conv(out, k=1)), Field(c), size
    return gate(conv(1, k=3) >> Activation("sigmoid")), Field(c), size


@register_family("gate", examples=_examples)
@dataclass(frozen=True, repr=False)
class Gate(Term):
    """``body(x) * g(x)``; a rank-0 gate is broadcast over the pixels."""

    g: Term
    body: Term = Identity()

    def children(self):
        return (self.g, self.body)

    def with_children(self, children):
        return Gate(children[0], children[1])

    def out_type(self, t):
        try:
            out = self.body._infer(t)
        except TypeMismatch as e:
            raise e.at("body") from None
        try:
            gt = self.g._infer(t)
        except TypeMismatch as e:
            raise e.at("gate") from None
        if out.rank != 2 or out.is_complex:
            raise TypeMismatch(f"expects a body giving a real rank-2 field; got {out!r}", op="gate")
        if gt.is_complex or gt.rank not in (0, 2) or gt.channels not in (1, out.channels):
            raise TypeMismatch(f"expects a real gate of rank 0 or 2 with 1 or {out.channels} channels "
                               f"(the body's width); got {gt!r}", op="gate")
        if gt.rank == 2 and _probe(self.g, t) != _probe(self.body, t):
            raise TypeMismatch("expects a rank-2 gate of the body's spatial size (give both the same stride)",
                               op="gate")
        return out

    def out_size(self, t, size):
        return self.body.out_size(t, size)

    def cost(self, t, size):
        return self.body.cost(t, size) + self.g.cost(t, size)

    def equivariance(self, t):
        return self.body.equivariance(t) & self.g.equivariance(t)

    def lipschitz_bound(self, m, size=None):
        return None  # a product of two functions of x is not globally Lipschitz

    def _bind(self, t, path):
        out = self._infer(t)
        body = self.body._bind(t, _join(path, "body"))
        g = self.g._bind(t, _join(path, "gate"))
        return attach(GateModule(body, g, g.out_type.rank == 0), self, t, out, path)

    def __repr__(self):
        if isinstance(self.body, Identity):
            return f"gate({self.g!r})"
        return f"gate({self.g!r}, {self.body!r})"


@op("gate")
def gate(g: Term, body: Optional[Term] = None) -> Gate:
    """Multiply ``body(x)`` (default: x) by the gate ``g(x)``.

    >>> from operad import ops, Field
    >>> g = ops.global_pool() >> ops.linear(8) >> ops.sigmoid()
    >>> ops.gate(g).bind(Field(8)).out_type
    Field(8)
    """
    if not isinstance(g, Term) or (body is not None and not isinstance(body, Term)):
        raise TypeError("ops.gate takes terms: gate(g, body=None)")
    return Gate(g, Identity() if body is None else body)


def _se_examples(draw):
    from hypothesis import strategies as st
    return (squeeze_excite(draw(st.sampled_from([0.25, 0.5, 1.0])), divisor=draw(st.sampled_from([1, 2]))),
            Field(draw(st.integers(1, 8))), (draw(st.integers(3, 8)), draw(st.integers(3, 8))))


@register_family("squeeze_excite", examples=_se_examples)
@dataclass(frozen=True, repr=False)
class SqueezeExcite(Macro):
    """Squeeze-and-excitation: global pool, FC to ``make_divisible(C * rd_ratio,
    divisor)`` with bias, ``act``, FC back to C with bias, ``gate_fn``, then a
    channel gate on the input."""

    rd_ratio: float = 0.25
    divisor: int = 8
    act: Term = Activation("relu")
    gate_fn: str = "sigmoid"
    _sub = ("act",)

    def rd(self, c: int) -> int:
        if self.divisor <= 1:
            return max(1, int(round(c * self.rd_ratio)))
        return make_divisible(c * self.rd_ratio, self.divisor)

    def expand(self, t):
        self.require_real(t)
        c = t.channels
        g = GlobalPool() >> Linear(self.rd(c)) >> self.act >> Linear(c) >> Activation(self.gate_fn)
        return Gate(g, Identity())


@op("squeeze_excite")
def squeeze_excite(rd_ratio: float = 0.25, divisor: int = 8, act: Optional[Term] = None,
                   gate_fn: str = "sigmoid") -> SqueezeExcite:
    """Squeeze-and-excitation with reduction ``rd_ratio`` (GhostNet: ``divisor=4,
    gate_fn="hardsigmoid"``).

    >>> from operad import ops, Field
    >>> ops.squeeze_excite(0.25).bind(Field(32)).out_type
    Field(32)
    """
    return SqueezeExcite(rd_ratio, divisor, act or Activation("relu"), gate_fn)
