"""``image_pool(body)``: global average pooling, ``body`` on the pooled (rank-0)
field, and the result broadcast back to every pixel: the image-level branch of
ASPP (DeepLabv3).

Pooling over N pixels is 1/sqrt(N)-Lipschitz and broadcasting to N pixels
multiplies norms by sqrt(N), so the bound is the body's. The output is
invariant to shifts (circular), 90-degree rotations and flips of the input.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .algebra.combinators import lipschitz_of
from .algebra.field import Field, TypeMismatch
from .algebra.term import POINTWISE, Term, _join, attach, op, register_family

__all__ = ["ImagePool", "image_pool"]


class ImagePoolModule(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        y = self.body(x.mean(dim=(-2, -1)))
        return y[:, :, None, None].expand(-1, -1, x.shape[-2], x.shape[-1])


def _examples(draw):
    from hypothesis import strategies as st
    from .activation import Activation
    from .linear import Linear
    from .norm import BatchNorm
    body = Linear(draw(st.integers(1, 6)), bias=draw(st.booleans()))
    if draw(st.booleans()):
        body = body >> BatchNorm() >> Activation("relu")
    return image_pool(body), Field(draw(st.integers(1, 6))), (draw(st.integers(3, 9)), draw(st.integers(3, 9)))


@register_family("image_pool", examples=_examples)
@dataclass(frozen=True, repr=False)
class ImagePool(Term):
    body: Term

    def children(self):
        return (self.body,)

    def with_children(self, children):
        return ImagePool(children[0])

    def out_type(self, t):
        if t.rank != 2 or t.is_complex:
            self.reject("a real rank-2 field", t)
        try:
            out = self.body._infer(t.with_(rank=0))
        except TypeMismatch as e:
            raise e.at("body") from None
        if out.rank != 0:
            raise TypeMismatch(f"expects a body that keeps rank 0 (e.g. linear, bn, relu); got {out!r}",
                               op="image_pool")
        return out.with_(rank=2)

    def cost(self, t, size):
        return self.body.cost(t.with_(rank=0), None)

    def equivariance(self, t):
        return POINTWISE

    @property
    def linear(self):
        return self.body.linear

    def lipschitz_bound(self, m, size=None):
        return lipschitz_of(m.body, None)

    def _bind(self, t, path):
        out = self._infer(t)
        body = self.body._bind(t.with_(rank=0), _join(path, "body"))
        return attach(ImagePoolModule(body), self, t, out, path)

    def __repr__(self):
        return f"image_pool({self.body!r})"


@op("image_pool")
def image_pool(body: Term) -> ImagePool:
    """Global pool, ``body`` on the rank-0 field, broadcast back over the pixels.

    >>> from operad import ops, Field
    >>> ops.image_pool(ops.linear(16)).bind(Field(8)).out_type
    Field(16)
    """
    if not isinstance(body, Term):
        raise TypeError(f"ops.image_pool takes a term; got {type(body).__name__}")
    return ImagePool(body)
