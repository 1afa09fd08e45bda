"""Multiplication by a fixed constant: ``scale(factor)``.

A fixed logit scale (the speed recipe's classifier output is multiplied by
1/9) changes the gradients a layer sees, so it is not the same as rescaling
the preceding weights once; it is an operator of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .algebra.field import Field
from .algebra.term import ALL_TRANSFORMS, Term, op, register_family

__all__ = ["Scale", "ScaleModule", "scale"]


class ScaleModule(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def _examples(draw):
    from hypothesis import strategies as st
    rank = draw(st.sampled_from([2, 0]))
    kind = draw(st.sampled_from(["real", "complex"])) if rank == 2 else "real"
    size = (draw(st.integers(2, 9)), draw(st.integers(2, 9))) if rank == 2 else None
    return scale(draw(st.floats(-3.0, 3.0))), Field(draw(st.integers(1, 6)), kind=kind, rank=rank), size


@register_family("scale", examples=_examples)
@dataclass(frozen=True, repr=False)
class Scale(Term):
    """``x -> factor * x`` on any field; ``|factor|``-Lipschitz, linear, commutes with every transform."""

    factor: float = 1.0
    _positional = ("factor",)
    linear = True

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return abs(self.factor)

    def build(self, t):
        return ScaleModule(self.factor)


@op("scale")
def scale(factor: float) -> Scale:
    """Multiply by a fixed ``factor`` (not trained).

    >>> from operad import ops, Field
    >>> import torch
    >>> ops.scale(0.5).bind(Field(4, rank=0))(torch.ones(1, 4))
    tensor([[0.5000, 0.5000, 0.5000, 0.5000]])
    """
    return Scale(float(factor))
