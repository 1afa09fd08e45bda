"""All-CNN-C and its max-pooling baseline (Springenberg et al. 2015, "Striving
for simplicity: the all convolutional net"), for 32x32 inputs.

All-CNN-C replaces each 3x3/2 max pool of model C by a 3x3 convolution of
stride 2; both end in 3x3 (valid) -> 1x1 -> 1x1 (num_classes) convolutions and
global average pooling. Dropout (0.2 on the input, 0.5 after each downsampling)
as in the paper; ``drop=False`` removes it. Guided backpropagation for these
nets is :func:`operad.theory.guided.guided_backprop`.

>>> import operad
>>> from operad import Field
>>> operad.cost(allcnn_c(), Field(3), size=(32, 32)).params
1369738
"""
from __future__ import annotations

from .. import ops
from ..operators.algebra.term import Term
from .registry import register_model
from .resnet import chain

__all__ = ["allcnn_c", "allcnn_c_maxpool"]


def _conv(out, k=3, stride=1, padding="same"):
    return ops.conv(out, k=k, stride=stride, padding=padding) >> ops.relu()


def _net(down, num_classes, drop, bn, features_only):
    def c(out, k=3, stride=1, padding="same"):
        t = ops.conv(out, k=k, stride=stride, padding=padding)
        return (t >> ops.bn() >> ops.relu()) if bn else (t >> ops.relu())
    d = (lambda p: [ops.dropout(p)]) if drop else (lambda p: [])
    items = [chain(d(0.2) + [c(96), c(96)]).named("stem"),
             chain([down(96)] + d(0.5) + [c(192), c(192)]).named("stage1"),
             chain([down(192)] + d(0.5) + [c(192, padding="valid"), c(192, k=1)]).named("stage2")]
    if not features_only:
        items.append((c(num_classes, k=1) >> ops.global_pool()).named("head"))
    return chain(items)


@register_model(input_size=(3, 32, 32), tags=("allcnn", "cifar"))
def allcnn_c(num_classes: int = 10, in_chans: int = 3, drop: bool = True, bn: bool = False,
             features_only: bool = False) -> Term:
    """All-CNN-C: stride-2 3x3 convolutions instead of max pooling; 1.37M parameters."""
    return _net(lambda c: ops.conv(c, k=3, stride=2) >> ops.relu(), num_classes, drop, bn, features_only)


@register_model(input_size=(3, 32, 32), tags=("allcnn", "cifar"))
def allcnn_c_maxpool(num_classes: int = 10, in_chans: int = 3, drop: bool = True, bn: bool = False,
                     features_only: bool = False) -> Term:
    """Model C, the max-pooling baseline of All-CNN-C (3x3/2 max pools instead of the strided convs): 0.95M parameters."""
    return _net(lambda c: ops.max_pool(3, stride=2, padding=1), num_classes, drop, bn, features_only)
