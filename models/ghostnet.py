"""GhostNet (Han et al., CVPR 2020), Ghost-ResNet-56 and Ghost-VGG-16 for CIFAR,
and a G-GhostNet (G-Ghost stages, IJCV 2022) on a CIFAR ResNet-56 backbone.

GhostNet's table (k, expansion, out, SE ratio, stride) per stage; widths scale
by ``width`` rounded to multiples of 4; stem 16 channels stride 2; head 1x1 to
960, global pool, FC 960 -> 1280 with bias, ReLU, dropout, classifier.
Named stages: ``stem``, ``stage1`` .. ``stage9``, ``conv_head`` and the classifier ``head``
(dropped by ``features_only``).
"""
from __future__ import annotations

from .. import ops
from ..operators.gate import make_divisible
from ..operators.algebra.term import Term
from .resnet import basic_block, chain, cifar_resnet
from .registry import register_model

__all__ = ["ghostnet", "GHOSTNET_CFG", "ghost_block", "ghost_resnet", "ghost_vgg", "g_ghost_resnet", "VGG16"]

GHOSTNET_CFG = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
)


def _chain(items):
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


def ghostnet(width: float = 1.0, num_classes: int = 1000, in_chans: int = 3, drop: float = 0.2,
             features_only: bool = False) -> Term:
    """GhostNet term.

    >>> from operad import Field, cost
    >>> round(cost(ghostnet(), Field(3), size=(224, 224)).params / 1e6, 2)
    5.18
    """
    stem_c = make_divisible(16 * width, 4)
    stages = [(ops.conv(stem_c, k=3, stride=2, bias=False) >> ops.bn() >> ops.relu()).named("stem")]
    for i, cfg in enumerate(GHOSTNET_CFG):
        blocks = [ops.ghost_bottleneck(make_divisible(c * width, 4), make_divisible(e * width, 4), k=k, stride=s,
                                       se=se or None) for k, e, c, se, s in cfg]
        stages.append(_chain(blocks).named(f"stage{i + 1}"))
    stages.append((ops.conv(make_divisible(960 * width, 4), k=1, bias=False) >> ops.bn() >> ops.relu())
                  .named("conv_head"))
    if features_only:
        return _chain(stages)
    stages.append((ops.global_pool() >> ops.linear(1280) >> ops.relu() >> ops.dropout(drop)
                   >> ops.linear(num_classes)).named("head"))
    return _chain(stages)


@register_model(input_size=(3, 224, 224), tags=("ghostnet", "zoo2"))
def ghostnet_100(num_classes: int = 1000, in_chans: int = 3, drop: float = 0.2, features_only: bool = False) -> Term:
    """GhostNet 1.0x (5.18M parameters, 141M MACs at 224)."""
    return ghostnet(1.0, num_classes, in_chans, drop, features_only)


@register_model(input_size=(3, 224, 224), tags=("ghostnet", "zoo2"))
def ghostnet_130(num_classes: int = 1000, in_chans: int = 3, drop: float = 0.2, features_only: bool = False) -> Term:
    """GhostNet 1.3x."""
    return ghostnet(1.3, num_classes, in_chans, drop, features_only)


# ---------------------------------------------------------------------------
# CIFAR: Ghost-ResNet-56, Ghost-VGG-16, G-Ghost ResNet-56
# ---------------------------------------------------------------------------
def ghost_block(cin: int, out: int, stride: int = 1, ratio: int = 2, dw: int = 1) -> Term:
    """A CIFAR basic block whose two 3x3 conv + BN (+ ReLU) are Ghost modules (k = 3)."""
    body = (ops.ghost(out, ratio=ratio, k=3, dw=dw, stride=stride, relu=True)
            >> ops.ghost(out, ratio=ratio, k=3, dw=dw, relu=False))
    short = None if stride == 1 and cin == out else ops.option_a(out, stride)
    return ops.residual(body, short) >> ops.relu()


def ghost_resnet(depth: int = 56, num_classes: int = 10, ratio: int = 2, dw: int = 1, in_chans: int = 3,
                 features_only: bool = False) -> Term:
    """A CIFAR ResNet (option-A shortcuts) whose 3x3 convolutions are Ghost modules (s = ratio, d = dw).

    >>> from operad import Field, cost
    >>> round(cost(ghost_resnet(56, dw=1), Field(3), size=(32, 32)).params / 1e6, 3)
    0.43
    """
    return cifar_resnet(depth, num_classes, in_chans, block=lambda c, o, s: ghost_block(c, o, s, ratio, dw),
                        features_only=features_only)


@register_model(input_size=(3, 32, 32), tags=("ghostnet", "zoo2", "cifar"))
def ghost_resnet56(num_classes: int = 10, in_chans: int = 3, ratio: int = 2, dw: int = 1,
                   features_only: bool = False) -> Term:
    """Ghost-ResNet-56 (s = 2): 0.430M parameters and 63.2M MACs, the published 0.43M
    and 63M, which correspond to d = 1 cheap operations (``dw=3`` gives 0.438M, 65.3M)."""
    return ghost_resnet(56, num_classes, ratio, dw, in_chans, features_only)


VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def ghost_vgg(cfg=VGG16, num_classes: int = 10, ratio: int = 2, dw: int = 3, hidden: int = 512,
              features_only: bool = False) -> Term:
    """VGG (with BN) for CIFAR whose convolutions are Ghost modules, classifier
    FC(hidden)-ReLU-FC (the 15.0M-parameter VGG-16 of the GhostNet paper); named
    ``stage1`` .. ``stage5`` (a stage ends at each max pool)."""
    stages, cur = [], []
    for v in cfg:
        if v == "M":
            cur.append(ops.max_pool(2))
            stages.append(chain(cur).named(f"stage{len(stages) + 1}"))
            cur = []
        else:
            cur.append(ops.ghost(v, ratio=ratio, k=3, dw=dw, relu=True))
    if features_only:
        return chain(stages)
    head = ops.global_pool() >> (ops.linear(hidden) >> ops.relu() >> ops.linear(num_classes) if hidden
                                 else ops.linear(num_classes))
    return chain(stages + [head.named("head")])


@register_model(input_size=(3, 32, 32), tags=("ghostnet", "zoo2", "cifar"))
def ghost_vgg16(num_classes: int = 10, in_chans: int = 3, ratio: int = 2, dw: int = 3,
                features_only: bool = False) -> Term:
    """Ghost-VGG-16 (s = 2, d = 3) for CIFAR: 7.65M parameters, 158M MACs (published 7.7M, 158M)."""
    return ghost_vgg(VGG16, num_classes, ratio, dw, 512, features_only)


def g_ghost_resnet(depth: int = 56, num_classes: int = 10, cheap_ratio: float = 0.5,
                   features_only: bool = False) -> Term:
    """A CIFAR ResNet whose stages are G-Ghost stages: the first block (``base``)
    changes width and stride, the middle blocks run on ``(1 - cheap_ratio)`` of the
    channels, the cheap channels come from the first block's output and a pooled mix."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2; got {depth}")
    n = (depth - 2) // 6

    def stage(cin, out, stride, _):
        return ops.g_ghost_stage(basic_block(cin, out, stride), lambda c: basic_block(c, c, 1),
                                 basic_block(out, out, 1), n=n, cheap_ratio=cheap_ratio)
    # one "block" per stage: the whole G-Ghost stage
    return cifar_resnet(depth, num_classes, block=lambda c, o, s: stage(c, o, s, n), blocks_per_stage=1,
                        features_only=features_only)


@register_model(input_size=(3, 32, 32), tags=("ghostnet", "zoo2", "cifar"))
def g_ghost_resnet56(num_classes: int = 10, in_chans: int = 3, cheap_ratio: float = 0.5,
                     features_only: bool = False) -> Term:
    """G-Ghost ResNet-56: G-Ghost stages (cheap ratio 0.5) on the CIFAR ResNet-56 layout."""
    return g_ghost_resnet(56, num_classes, cheap_ratio, features_only)
