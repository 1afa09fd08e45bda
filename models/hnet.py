"""Harmonic Networks (Worrall et al., CVPR 2017) as operator expressions.

``hnet_digits``: the rotated-digits H-Net. Three stages of two harmonic
convolutions (widths 8, 16, 32 complex channels per rotation order, orders
(0, 1), 5x5 filters), each followed by batch norm on magnitudes and the complex
ReLU, average pooling between stages that keeps orders, then a last harmonic
convolution to ``num_classes`` order-0 maps whose magnitudes are averaged
over the image (then a per-class batch-norm affine): the logits are
rotation-invariant features.

``harmonic_block``: a residual block of two harmonic convolutions that keeps
its field, usable inside other networks (``residual`` checks the orders).

>>> from operad.models import create_model
>>> m = create_model("hnet_digits", num_classes=10, in_chans=1)
>>> m.out_type
Field(10, rank=0)
"""
from __future__ import annotations

from typing import Sequence

from .. import ops
from ..operators.algebra.term import Term
from .registry import register_model

__all__ = ["harmonic_layer", "harmonic_block", "hnet_digits", "hnet", "harmonic_resnet_digits"]


def harmonic_layer(width: int, orders: Sequence[int] = (0, 1), k: int = 5, bias_init: float = -0.5) -> Term:
    """harmonic_conv (``width`` complex channels per order) -> magnitude batch norm -> C-ReLU."""
    orders = tuple(orders)
    return (ops.harmonic_conv(width * len(orders), orders=orders, k=k) >> ops.complex_bn()
            >> ops.harmonic_relu(bias_init=bias_init))


def harmonic_block(width: int, orders: Sequence[int] = (0, 1), k: int = 3) -> Term:
    """``C-ReLU(x + BN(hconv(C-ReLU(BN(hconv(x))))))``: keeps the field
    ``Field(width * len(orders), complex, orders)``, so it stacks and nests.

    >>> from operad import Field
    >>> harmonic_block(4).bind(Field(8, kind="complex", orders=(0, 1))).out_type
    Field(8, complex, orders=(0, 1))
    """
    orders = tuple(orders)
    c = width * len(orders)
    body = (ops.harmonic_conv(c, orders=orders, k=k) >> ops.complex_bn() >> ops.harmonic_relu()
            >> ops.harmonic_conv(c, orders=orders, k=k) >> ops.complex_bn())
    return ops.residual(body) >> ops.harmonic_relu()


def _head(num_classes: int, k: int) -> Term:
    # magnitudes averaged over the image, then a per-class affine (batch norm) so the
    # non-negative invariant features can spread into logits
    return ops.harmonic_conv(num_classes, orders=(0,), k=k) >> ops.modulus() >> ops.global_pool() >> ops.bn()


@register_model(input_size=(1, 20, 20), tags=("harmonic", "rotation"))
def hnet_digits(num_classes: int = 10, in_chans: int = 1, widths: Sequence[int] = (8, 16, 32),
                orders: Sequence[int] = (0, 1), k: int = 5, pool: str = "avg") -> Term:
    """The H-Net for rotated digits (in_chans is any real input)."""
    stages = []
    for i, w in enumerate(widths):
        stage = harmonic_layer(w, orders, k) >> harmonic_layer(w, orders, k)
        if i < len(widths) - 1:
            stage = stage >> ops.harmonic_pool(2, kind=pool)
        stages.append(stage.named(f"stage{i + 1}"))
    body = stages[0]
    for s in stages[1:]:
        body = body >> s
    return body >> _head(num_classes, k).named("head")


@register_model(input_size=(3, 32, 32), tags=("harmonic", "rotation"))
def hnet(num_classes: int = 10, in_chans: int = 3, widths: Sequence[int] = (8, 16, 32),
         orders: Sequence[int] = (0, 1), k: int = 5, pool: str = "avg") -> Term:
    """The same H-Net registered for CIFAR-sized input (3 x 32 x 32)."""
    return hnet_digits(num_classes, in_chans, widths, orders, k, pool)


@register_model(input_size=(1, 20, 20), tags=("harmonic", "rotation"))
def harmonic_resnet_digits(num_classes: int = 10, in_chans: int = 1, widths: Sequence[int] = (8, 16),
                           orders: Sequence[int] = (0, 1), k: int = 3) -> Term:
    """A small harmonic ResNet: a harmonic stem, then per width a widening layer
    and a ``harmonic_block``, average pooling between widths."""
    net = harmonic_layer(widths[0], orders, k).named("stem")
    for i, w in enumerate(widths):
        stage = harmonic_layer(w, orders, k) >> harmonic_block(w, orders, k)
        if i < len(widths) - 1:
            stage = stage >> ops.harmonic_pool(2)
        net = net >> stage.named(f"stage{i + 1}")
    return net >> _head(num_classes, k).named("head")
