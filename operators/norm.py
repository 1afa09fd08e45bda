"""Batch normalisation."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .algebra.field import Field
from .algebra.term import ALL_TRANSFORMS, Cost, Term, op, register_family

__all__ = ["BatchNorm", "bn"]


def _examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 8))
    rank = draw(st.sampled_from([2, 2, 0]))
    size = (draw(st.integers(4, 12)), draw(st.integers(4, 12))) if rank == 2 else None
    return bn(), Field(c, rank=rank), size


@register_family("bn", examples=_examples)
@dataclass(frozen=True, repr=False)
class BatchNorm(Term):
    """Batch normalisation over the channels of a real field (rank 2 or 0).

    Lipschitz bound (eval mode): ``max |gamma| / sqrt(running_var + eps)``.
    ``zero_init=True`` starts gamma at zero (the last norm of a residual branch).
    """

    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True
    zero_init: bool = False
    linear = True

    def out_type(self, t):
        if t.is_complex:
            self.reject("a real field (use a magnitude norm for complex fields)", t)
        if t.rank not in (0, 2):
            self.reject("a rank-2 or rank-0 field", t)
        return t

    def cost(self, t, size):
        return Cost(2 * t.channels if self.affine else 0, 0)

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        scale = (m.running_var.detach().double() + m.eps).rsqrt()
        if m.weight is not None:
            scale = scale * m.weight.detach().double().abs()
        return float(scale.max())

    def build(self, t):
        cls = nn.BatchNorm2d if t.rank == 2 else nn.BatchNorm1d
        m = cls(t.channels, eps=self.eps, momentum=self.momentum, affine=self.affine)
        if self.zero_init and self.affine:
            nn.init.zeros_(m.weight)
        return m


@op("bn")
def bn(eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, zero_init: bool = False) -> BatchNorm:
    """Batch normalisation; the width comes from the input field.

    >>> from operad import ops, Field
    >>> ops.bn().bind(Field(8)).num_features
    8
    """
    return BatchNorm(eps, momentum, affine, zero_init)
