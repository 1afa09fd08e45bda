"""``modulus``: leave the complex world. A complex field becomes the real field of
its magnitudes ``|z|``; rotation orders are dropped, since ``|e^{i m theta} z| = |z|``
(the magnitudes of a harmonic field are rotation-invariant features)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .field import Field
from .term import ALL_TRANSFORMS, Term, op, register_family

__all__ = ["Modulus", "modulus", "ModulusModule"]


class ModulusModule(nn.Module):
    """``sqrt(re^2 + im^2 + eps^2) - eps`` per complex channel (interleaved layout).

    Smooth at ``z = 0`` (gradient 0 there, never NaN), zero at zero, and
    1-Lipschitz: its gradient has norm ``|z| / sqrt(|z|^2 + eps^2) <= 1``.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        re, im = x[:, 0::2], x[:, 1::2]
        return torch.sqrt(re * re + im * im + self.eps * self.eps) - self.eps

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def _examples(draw):
    from hypothesis import strategies as st
    rank = draw(st.sampled_from([2, 2, 0]))
    orders = draw(st.sampled_from([None, (0,), (0, 1), (-1, 2)]))
    g = draw(st.integers(1, 3))
    c = g * (len(orders) if orders else 1)
    size = (draw(st.integers(4, 12)), draw(st.integers(4, 12))) if rank == 2 else None
    return modulus(), Field(c, kind="complex", orders=orders, rank=rank), size


@register_family("modulus", examples=_examples)
@dataclass(frozen=True, repr=False)
class Modulus(Term):
    """The magnitude of every complex channel: ``Field(c, complex, orders=...)`` ->
    ``Field(c)``. 1-Lipschitz; commutes with every rotation (the phase
    ``e^{i m theta}`` of an order-m channel drops out)."""

    eps: float = 1e-6

    def out_type(self, t):
        if not t.is_complex:
            self.reject("a complex field (a real field has no modulus here; use ops.relu or abs-like "
                        "activations on real fields)", t)
        return Field(t.channels, rank=t.rank)

    def equivariance(self, t):
        if t.orders and any(t.orders):
            return frozenset({"shift", "rot90", "rotation"})  # a flip maps order m to -m
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return ModulusModule(self.eps)


@op("modulus")
def modulus(eps: float = 1e-6) -> Modulus:
    """The magnitudes ``|z|`` of a complex field: a real, rotation-invariant field.

    >>> from operad import ops, Field
    >>> ops.modulus().bind(Field(4, kind="complex", orders=(0, 1))).out_type
    Field(4)
    """
    return Modulus(eps)
