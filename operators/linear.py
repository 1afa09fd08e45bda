"""``linear``, ``identity`` and ``dropout``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .algebra.util import spectral_norm
from .algebra.field import Channels, Field
from .algebra.term import ALL_TRANSFORMS, Cost, Term, op, register_family

__all__ = ["Linear", "Identity", "Dropout", "linear", "identity", "dropout"]


def _lexamples(draw):
    from hypothesis import strategies as st
    return (linear(draw(st.integers(1, 8)), bias=draw(st.booleans())),
            Field(draw(st.integers(1, 8)), rank=0), None)


@register_family("linear", examples=_lexamples)
@dataclass(frozen=True, repr=False)
class Linear(Term):
    """A fully connected layer on a rank-0 field. Lipschitz bound: ``||W||_2``."""

    out: Channels = 10
    bias: bool = True
    _positional = ("out",)
    linear = True

    def out_type(self, t):
        self.require_real(t, rank=0)
        return Field(self.out, rank=0)

    def cost(self, t, size):
        return Cost(t.channels * self.out + (self.out if self.bias else 0), t.channels * self.out)

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return spectral_norm(m.weight)

    def build(self, t):
        return nn.Linear(t.channels, self.out, bias=self.bias)


@op("linear")
def linear(out: Channels, bias: bool = True) -> Linear:
    """A fully connected layer to ``out`` features (after ``global_pool``).

    >>> from operad import ops, Field
    >>> (ops.global_pool() >> ops.linear(10)).bind(Field(16)).out_type
    Field(10, rank=0)
    """
    return Linear(out, bias)


def _iexamples(draw):
    from hypothesis import strategies as st
    kind = draw(st.sampled_from(["real", "complex"]))
    return identity(), Field(draw(st.integers(1, 6)), kind=kind), (draw(st.integers(2, 9)), draw(st.integers(2, 9)))


@register_family("identity", examples=_iexamples)
@dataclass(frozen=True, repr=False)
class Identity(Term):
    """The identity (any field)."""

    linear = True
    keeps_nonnegative = True

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return nn.Identity()


@op("identity")
def identity() -> Identity:
    """The identity operator.

    >>> from operad import ops, Field
    >>> ops.identity().bind(Field(3, kind="complex")).out_type
    Field(3, complex)
    """
    return Identity()


def _dexamples(draw):
    from hypothesis import strategies as st
    return dropout(draw(st.floats(0.0, 0.9))), Field(draw(st.integers(1, 6))), (6, 7)


@register_family("dropout", examples=_dexamples)
@dataclass(frozen=True, repr=False)
class Dropout(Term):
    """Dropout (the identity in eval mode, where properties are stated)."""

    p: float = 0.5
    _positional = ("p",)
    linear = True
    keeps_nonnegative = True

    def __post_init__(self):
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"dropout p must lie in [0, 1); got {self.p}")

    def out_type(self, t):
        return self.require_real(t, rank=None)

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return nn.Dropout(self.p)


@op("dropout")
def dropout(p: float = 0.5) -> Dropout:
    """Dropout with probability ``p``.

    >>> from operad import ops
    >>> ops.dropout(0.2)
    dropout(0.2)
    """
    return Dropout(p)
