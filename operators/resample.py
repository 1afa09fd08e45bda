"""Up-sampling."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .algebra.field import Field
from .algebra.term import POINTWISE, Term, op, register_family

__all__ = ["Upsample", "upsample"]


def _examples(draw):
    from hypothesis import strategies as st
    return (upsample(draw(st.integers(1, 3)), draw(st.sampled_from(["nearest", "bilinear"]))),
            Field(draw(st.integers(1, 5))), (draw(st.integers(2, 8)), draw(st.integers(2, 8))))


@register_family("upsample", examples=_examples)
@dataclass(frozen=True, repr=False)
class Upsample(Term):
    """Up-sampling by an integer factor.

    Each input pixel feeds outputs with weights summing to ``scale**2`` (and at
    most 1 each), so the l2 Lipschitz bound is ``scale``. Nearest up-sampling
    commutes with shifts (the output moves ``scale`` times as far), 90-degree
    rotations and flips; bilinear (``align_corners=False``) with rotations and flips.
    """

    scale: int = 2
    mode: str = "nearest"
    _positional = ("scale",)
    linear = True
    keeps_nonnegative = True  # nearest copies, bilinear takes convex combinations

    def __post_init__(self):
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"upsample scale must be a positive int; got {self.scale!r}")
        if self.mode not in ("nearest", "bilinear"):
            raise ValueError(f"upsample mode must be 'nearest' or 'bilinear'; got {self.mode!r}")

    def out_type(self, t):
        if t.rank != 2:
            self.reject("a rank-2 field", t)
        return t

    def out_size(self, t, size):
        return (size[0] * self.scale, size[1] * self.scale)

    def equivariance(self, t):
        if t.orders and any(t.orders):
            return frozenset()
        return POINTWISE if self.mode == "nearest" else frozenset({"rot90", "flip"})

    def lipschitz_bound(self, m, size=None):
        return float(self.scale)

    def build(self, t):
        if self.mode == "nearest":
            return nn.Upsample(scale_factor=self.scale, mode="nearest")
        return nn.Upsample(scale_factor=self.scale, mode="bilinear", align_corners=False)


@op("upsample")
def upsample(scale: int = 2, mode: str = "nearest") -> Upsample:
    """Up-sample by an integer ``scale`` (``"nearest"`` or ``"bilinear"``).

    >>> from operad import ops, Field
    >>> ops.upsample(2).out_size(Field(3), (5, 7))
    (10, 14)
    """
    return Upsample(scale, mode)
