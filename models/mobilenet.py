"""MobileNetV2 (Sandler et al. 2018) as an operator expression.

Stages follow the paper's table (t, c, n, s): (1,16,1,1) (6,24,2,2) (6,32,3,2)
(6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1), a 32-channel stride-2 stem and
a 1x1 head to 1280 channels; widths scale by ``width`` and round to multiples
of 8. ``cifar=True`` makes the stem and the second stage stride 1 (overall
stride 8 for 32x32 inputs). ``output_stride`` 16 or 8 replaces the later
strides by dilation (DeepLabv3). Named stages: ``stem``, ``stage1`` ..
``stage7``, ``conv_head`` (1x1 to 1280) and the classifier ``head``;
``features_only=True`` returns the trunk up to ``stage7``.
"""
from __future__ import annotations

from typing import Callable, Optional

from .. import ops
from ..operators.gate import make_divisible
from ..operators.algebra.term import Term
from .registry import register_model

__all__ = ["mobilenetv2", "MBV2_CFG"]

MBV2_CFG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))


def _chain(items):
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


def mobilenetv2(width: float = 1.0, num_classes: int = 1000, in_chans: int = 3, cifar: bool = False,
                output_stride: int = 32, features_only: bool = False, drop: float = 0.2,
                repeat_block: Optional[Callable[[int, float], Term]] = None) -> Term:
    """MobileNetV2 term. ``repeat_block(width, t)``, when given, replaces the
    stride-1 blocks that keep the width (the MGIC variant uses it).

    >>> from operad import Field, cost
    >>> round(cost(mobilenetv2(), Field(3), size=(224, 224)).params / 1e6, 3)
    3.505
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"mobilenetv2 output_stride must be 8, 16 or 32; got {output_stride!r}")
    stem_stride = 1 if cifar else 2
    stem = ops.conv(make_divisible(32 * width), k=3, stride=stem_stride, bias=False) >> ops.bn() >> ops.relu6()
    stages = [stem.named("stem")]
    stride, dilation = stem_stride, 1
    for i, (t, c, n, s) in enumerate(MBV2_CFG):
        if cifar and i == 1:
            s = 1
        out = make_divisible(c * width)
        blocks = []
        for j in range(n):
            blk_stride = s if j == 0 else 1
            blk_dilation = dilation
            if blk_stride == 2 and stride * 2 > output_stride:
                blk_stride = 1
                dilation *= 2
            elif blk_stride == 2:
                stride *= 2
            if j > 0 and repeat_block is not None:
                blocks.append(repeat_block(out, t))
            else:
                blocks.append(ops.inverted_residual(out, blk_stride, t, dilation=blk_dilation))
        stages.append(_chain(blocks).named(f"stage{i + 1}"))
    if features_only:
        return _chain(stages)
    head_c = make_divisible(1280 * max(1.0, width))
    stages.append((ops.conv(head_c, k=1, bias=False) >> ops.bn() >> ops.relu6()).named("conv_head"))
    stages.append((ops.global_pool() >> ops.dropout(drop) >> ops.linear(num_classes)).named("head"))
    return _chain(stages)


def _reg(name, width, cifar=False):
    size = (3, 32, 32) if cifar else (3, 224, 224)
    classes = 10 if cifar else 1000

    def fn(num_classes: int = classes, in_chans: int = 3, output_stride: int = 32, features_only: bool = False,
           drop: float = 0.2) -> Term:
        return mobilenetv2(width, num_classes, in_chans, cifar, output_stride, features_only, drop)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"MobileNetV2 {width}x ({'CIFAR stem, ' if cifar else ''}input {size})."
    globals()[name] = register_model(fn, input_size=size, tags=("mobilenet", "zoo2"))
    __all__.append(name)


for _name, _w in (("mobilenetv2_050", 0.5), ("mobilenetv2_075", 0.75), ("mobilenetv2_100", 1.0),
                  ("mobilenetv2_140", 1.4)):
    _reg(_name, _w)
    _reg(_name + "_cifar", _w, cifar=True)
