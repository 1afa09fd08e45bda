"""Instance normalisation: ``instance_norm()``.

Each channel of each sample is normalised by its own spatial mean and
variance, ``y = gamma * (x - mean_HW(x)) / sqrt(var_HW(x) + eps) + beta``,
in training and in eval mode alike (no running statistics). Min-Nets put it
after each filter branch of a Min unit.

Lipschitz: none is claimed. The map divides by the input's own standard
deviation, so its local Lipschitz constant at an input of spatial variance
v is about ``|gamma| / sqrt(v + eps)``: unbounded in v (up to ``|gamma| /
sqrt(eps)``, about 316 |gamma| at eps = 1e-5, near constant images). A
bound valid for every input would be that worst case and is useless;
``lipschitz_bound`` returns None.

Equivariance: the per-channel statistics are invariant under every
permutation of the pixels, so the map commutes exactly with circular
shifts, 90-degree rotations and flips. Interpolated rotations change the
statistics slightly and are not claimed.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .algebra.field import Field
from .algebra.term import POINTWISE, Cost, Term, op, register_family

__all__ = ["InstanceNorm", "instance_norm"]


def _examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 8))
    size = (draw(st.integers(2, 12)), draw(st.integers(2, 12)))
    return instance_norm(affine=draw(st.booleans())), Field(c), size


@register_family("instance_norm", examples=_examples)
@dataclass(frozen=True, repr=False)
class InstanceNorm(Term):
    """Instance normalisation of a real rank-2 field (statistics over H x W per
    sample and channel); ``affine`` adds a per-channel scale and shift."""

    eps: float = 1e-5
    affine: bool = True

    def out_type(self, t):
        if t.is_complex:
            self.reject("a real field (use a magnitude norm for complex fields)", t)
        if t.rank != 2:
            self.reject("a rank-2 field (instance statistics are spatial)", t)
        return t

    def cost(self, t, size):
        return Cost(2 * t.channels if self.affine else 0, 0)

    def equivariance(self, t):
        return POINTWISE

    def lipschitz_bound(self, m, size=None):
        return None

    def build(self, t):
        return nn.InstanceNorm2d(t.channels, eps=self.eps, affine=self.affine, track_running_stats=False)


@op("instance_norm")
def instance_norm(eps: float = 1e-5, affine: bool = True) -> InstanceNorm:
    """Instance normalisation; the width comes from the input field.

    >>> from operad import ops, Field
    >>> ops.instance_norm().bind(Field(8)).num_features
    8
    """
    return InstanceNorm(eps, affine)
