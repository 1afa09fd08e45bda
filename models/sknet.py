"""SKNet (Li et al., CVPR 2019): ResNeXt bottlenecks whose grouped 3x3
convolution is a selective-kernel unit (M = 2 branches: 3x3 and a 3x3 with
dilation 2 for the 5x5 field; G = 32 groups; r = 16; L = 32).

``sknet50``: stages (3, 4, 6, 3), bottleneck widths 128 .. 1024 (2 x ResNet-50's),
outputs 256 .. 2048, ImageNet stem. ``sk_resnext29``: the CIFAR ResNeXt-29
(3 stages of 3 blocks, stem 3x3 of 64, outputs 256, 512, 1024) with cardinality
16 and base width 32 (bottleneck widths 512, 1024, 2048),
SK units in place of the grouped convolutions. Named stages ``stem``,
``stage1`` .. ``stage4`` (``stage3`` on CIFAR).
"""
from __future__ import annotations

from typing import Sequence

from .. import ops
from ..operators.algebra.term import Term
from .registry import register_model

__all__ = ["sk_bottleneck", "sknet"]


def _chain(items):
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


def sk_bottleneck(cin: int, mid: int, out: int, stride: int = 1, groups: int = 32, r: int = 16, L: int = 32) -> Term:
    """1x1 (mid) -> SK unit (mid, stride) -> 1x1 (out, BN) + shortcut, ReLU."""
    body = (ops.conv(mid, k=1, bias=False) >> ops.bn() >> ops.relu()
            >> ops.sk(mid, kernels=(3, 5), groups=groups, r=r, L=L, stride=stride)
            >> ops.conv(out, k=1, bias=False) >> ops.bn())
    short = None
    if stride != 1 or cin != out:
        short = ops.conv(out, k=1, stride=stride, bias=False) >> ops.bn()
    return ops.residual(body, short) >> ops.relu()


def sknet(layers: Sequence[int] = (3, 4, 6, 3), mids: Sequence[int] = (128, 256, 512, 1024),
          outs: Sequence[int] = (256, 512, 1024, 2048),
          num_classes: int = 1000, in_chans: int = 3, cifar: bool = False, stem_width: int = 64, groups: int = 32,
          r: int = 16, L: int = 32, features_only: bool = False) -> Term:
    """An SK-ResNeXt term.

    >>> from operad import Field, cost
    >>> round(cost(sknet(), Field(3), size=(224, 224)).params / 1e6, 1)
    27.5
    """
    if cifar:
        stem = ops.conv(stem_width, k=3, bias=False) >> ops.bn() >> ops.relu()
    else:
        stem = (ops.conv(stem_width, k=7, stride=2, bias=False) >> ops.bn() >> ops.relu()
                >> ops.max_pool(3, stride=2, padding=1))
    stages = [stem.named("stem")]
    cin = stem_width
    for i, (n, mid, out) in enumerate(zip(layers, mids, outs)):
        blocks = []
        for j in range(n):
            stride = 2 if (j == 0 and i > 0) else 1
            blocks.append(sk_bottleneck(cin, mid, out, stride, groups, r, L))
            cin = out
        stages.append(_chain(blocks).named(f"stage{i + 1}"))
    if features_only:
        return _chain(stages)
    stages.append((ops.global_pool() >> ops.linear(num_classes)).named("head"))
    return _chain(stages)


@register_model(input_size=(3, 224, 224), tags=("sknet", "zoo2"))
def sknet50(num_classes: int = 1000, in_chans: int = 3, features_only: bool = False) -> Term:
    """SKNet-50 (about 27.5M parameters)."""
    return sknet(num_classes=num_classes, in_chans=in_chans, features_only=features_only)


@register_model(input_size=(3, 32, 32), tags=("sknet", "zoo2"))
def sk_resnext29(num_classes: int = 10, in_chans: int = 3, cardinality: int = 16, base_width: int = 32,
                 features_only: bool = False) -> Term:
    """SK-ResNeXt-29 for CIFAR (cardinality x base width, default 16x32d)."""
    d = cardinality * base_width
    return sknet((3, 3, 3), (d, 2 * d, 4 * d), (256, 512, 1024), num_classes=num_classes, in_chans=in_chans,
                 cifar=True, groups=cardinality, features_only=features_only)
