"""``resize_to_input(body)``: run ``body`` and resize its output to the spatial
size of its input (bilinear, ``align_corners=False``, or nearest): how a dense
prediction head returns to the image size, and how a coarse branch returns to
the size of a finer one (LR-ASPP).

Lipschitz bound: the body's bound times the spectral norms of the two 1-D
interpolation matrices (the 2-D resize is their Kronecker product), computed
exactly for the sizes involved.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .algebra.util import spectral_norm
from .algebra.combinators import lipschitz_of
from .algebra.field import TypeMismatch
from .algebra.term import Term, _join, attach, op, register_family

__all__ = ["ResizeToInput", "resize_to_input", "interp_norm"]


@lru_cache(maxsize=512)
def interp_norm(n_in: int, n_out: int, mode: str = "bilinear") -> float:
    """The l2 operator norm of 1-D resizing from n_in to n_out samples."""
    eye = torch.eye(n_in, dtype=torch.float64)[None]
    if mode == "bilinear":
        m = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)
    else:
        m = F.interpolate(eye, size=n_out, mode="nearest")
    return spectral_norm(m[0])


class ResizeModule(nn.Module):
    def __init__(self, body: nn.Module, mode: str):
        super().__init__()
        self.body = body
        self.mode = mode

    def forward(self, x):
        y = self.body(x)
        if self.mode == "bilinear":
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return F.interpolate(y, size=x.shape[-2:], mode="nearest")


def _examples(draw):
    from hypothesis import strategies as st
    from .activation import Activation
    from .conv import Conv
    c, out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = draw(st.sampled_from([1, 2, 3]))
    body = Conv(out, 3, stride, bias=draw(st.booleans())) >> Activation("relu")
    if draw(st.booleans()):
        body = body >> Conv(out, 1)
    return (resize_to_input(body, draw(st.sampled_from(["bilinear", "nearest"]))), _F(c),
            (draw(st.integers(4, 13)), draw(st.integers(4, 13))))


def _F(c):
    from .algebra.field import Field
    return Field(c)


@register_family("resize_to_input", examples=_examples)
@dataclass(frozen=True, repr=False)
class ResizeToInput(Term):
    body: Term
    mode: str = "bilinear"

    def __post_init__(self):
        if self.mode not in ("bilinear", "nearest"):
            raise ValueError(f"resize_to_input mode must be 'bilinear' or 'nearest'; got {self.mode!r}")

    def children(self):
        return (self.body,)

    def with_children(self, children):
        return ResizeToInput(children[0], self.mode)

    def out_type(self, t):
        if t.rank != 2:
            self.reject("a rank-2 field", t)
        try:
            out = self.body._infer(t)
        except TypeMismatch as e:
            raise e.at("body") from None
        if out.rank != 2 or out.is_complex:
            raise TypeMismatch(f"expects a body giving a real rank-2 field; got {out!r}", op="resize_to_input")
        return out

    def out_size(self, t, size):
        return size

    def cost(self, t, size):
        return self.body.cost(t, size)

    def equivariance(self, t):
        eq = self.body.equivariance(t) & frozenset({"rot90", "flip"})
        if self.mode == "nearest":
            eq -= {"flip", "rot90"}  # nearest sampling rounds asymmetrically
        return eq

    def lipschitz_bound(self, m, size=None):
        lb = lipschitz_of(m.body, size)
        if lb is None or size is None:
            return None
        ho, wo = self.body.out_size(m.in_type, size)
        return lb * interp_norm(int(ho), int(size[0]), self.mode) * interp_norm(int(wo), int(size[1]), self.mode)

    def _bind(self, t, path):
        out = self._infer(t)
        return attach(ResizeModule(self.body._bind(t, _join(path, "body")), self.mode), self, t, out, path)

    def __repr__(self):
        extra = "" if self.mode == "bilinear" else f", mode={self.mode!r}"
        return f"resize_to_input({self.body!r}{extra})"


@op("resize_to_input")
def resize_to_input(body: Term, mode: str = "bilinear") -> ResizeToInput:
    """``body`` followed by a resize of its output to the input's height and width.

    >>> from operad import ops, Field
    >>> t = ops.resize_to_input(ops.conv(4, stride=4))
    >>> t.out_size(Field(3), (45, 60))
    (45, 60)
    """
    if not isinstance(body, Term):
        raise TypeError(f"ops.resize_to_input takes a term; got {type(body).__name__}")
    return ResizeToInput(body, mode)
