"""``narrow``: keep a contiguous range of channels (the cut of a Ghost module)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from .algebra.field import Channels, Field
from .algebra.util import check_channels, check_int
from .algebra.term import ALL_TRANSFORMS, Term, op, register_family

__all__ = ["Narrow", "narrow"]


class _NarrowModule(nn.Module):
    def __init__(self, start: int, n: int):
        super().__init__()
        self.start, self.n = start, n

    def forward(self, x):
        return x[:, self.start:self.start + self.n]

    def extra_repr(self):
        return f"start={self.start}, n={self.n}"


def _examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 8))
    n = draw(st.integers(1, c))
    start = draw(st.integers(0, c - n))
    rank = draw(st.sampled_from([2, 2, 0]))
    size = (draw(st.integers(3, 9)), draw(st.integers(3, 9))) if rank == 2 else None
    return narrow(n, start), Field(c, rank=rank), size


@register_family("narrow", examples=_examples)
@dataclass(frozen=True, repr=False)
class Narrow(Term):
    """Channels ``[start, start + n)`` of a real field: linear, 1-Lipschitz, and
    commutes with every spatial transform."""

    n: Channels = 1
    start: int = 0
    _positional = ("n",)
    linear = True

    def out_type(self, t):
        self.require_real(t, rank=None)
        if isinstance(t.channels, int) and isinstance(self.n, int) and self.start + self.n > t.channels:
            self.reject(f"at least {self.start + self.n} channels to keep [{self.start}, {self.start + self.n})", t)
        return t.with_(channels=self.n)

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return _NarrowModule(self.start, self.n)


@op("narrow")
def narrow(n: Channels, start: int = 0) -> Narrow:
    """Keep ``n`` channels starting at ``start``.

    >>> from operad import ops, Field
    >>> ops.narrow(3).bind(Field(4)).out_type
    Field(3)
    """
    check_channels("narrow", "n", n)
    check_int("narrow", "start", start, lo=0)
    return Narrow(n, start)
