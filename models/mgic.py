"""MGIC networks (Eliasof et al.): a CIFAR ResNet-56 and a MobileNetV2 whose
width-keeping blocks are multigrid-in-channels V-cycles (``ops.mgic``).

The blocks that change width or stride stay standard (a V-cycle keeps the
width); every other block becomes ``mgic(group, coarsest, block)``, whose cost
is linear in its width.
"""
from __future__ import annotations

from .. import ops
from ..operators.algebra.term import Term
from .resnet import basic_block, cifar_resnet
from .mobilenet import mobilenetv2
from .registry import register_model

__all__ = ["mgic_resnet", "mgic_mobilenetv2"]


def mgic_resnet(depth: int = 56, num_classes: int = 10, group: int = 8, coarsest: int = 16, width: int = 1,
                features_only: bool = False) -> Term:
    """A CIFAR ResNet (widths 16, 32, 64 times ``width``) with MGIC basic blocks."""
    def block(cin, out, stride):
        if stride == 1 and cin == out:
            return ops.mgic(group=group, coarsest=coarsest, block="basic")
        return basic_block(cin, out, stride)
    return cifar_resnet(depth, num_classes, widths=(16 * width, 32 * width, 64 * width), block=block,
                        features_only=features_only)


@register_model(input_size=(3, 32, 32), tags=("mgic", "zoo2", "cifar"))
def mgic_resnet56(num_classes: int = 10, in_chans: int = 3, group: int = 8, coarsest: int = 16, width: int = 1,
                  features_only: bool = False) -> Term:
    """MGIC-ResNet-56: group size 8, dense coarsest level at 16 channels."""
    return mgic_resnet(56, num_classes, group, coarsest, width, features_only)


def mgic_mobilenetv2(width: float = 1.0, num_classes: int = 1000, group: int = 8, coarsest: int = 32,
                     cifar: bool = False, features_only: bool = False) -> Term:
    """MobileNetV2 whose repeated (stride-1, width-keeping) inverted residuals are MGIC
    V-cycles of inverted residuals with grouped 1x1 convolutions."""
    rep = lambda c, t: ops.mgic(group=group, coarsest=coarsest, block="inverted", t=t)
    return mobilenetv2(width, num_classes, cifar=cifar, features_only=features_only, repeat_block=rep)


@register_model(input_size=(3, 224, 224), tags=("mgic", "mobilenet", "zoo2"))
def mgic_mobilenetv2_100(num_classes: int = 1000, in_chans: int = 3, group: int = 8, coarsest: int = 32,
                         features_only: bool = False) -> Term:
    """MGIC-MobileNetV2 1.0x: group size 8, dense coarsest level at up to 32 (or 40) channels."""
    return mgic_mobilenetv2(1.0, num_classes, group, coarsest, False, features_only)
