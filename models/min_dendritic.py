"""Min-Nets and dendritic (DAC) networks, each the rewrite of its standard
counterpart of the same depth (:mod:`operad.operators.rewrites`).

=========================  =====================================================  ====================
name                       what                                                   counterpart
=========================  =====================================================  ====================
``min_resnet20``           ResNet-20, first block of each stage a Min block        ``resnet20``
``min_resnet56``           ResNet-56 (N = 9 blocks per stage), the reference       ``resnet56``
                           Min-ResNet: first block of each stage a Min block
``min_densenet_bc100``     DenseNet-BC (L=100, k=12), every layer a Min unit       ``densenet_bc100_k12``
``dendritic_resnet20``     ResNet-20, every ReLU moved onto the connections        ``resnet20``
``dendritic_resnet56``     of the conv / FC layer it feeds (dendritic head)        ``resnet56``
``dendritic_resnet18``     ResNet-18 (torchvision layout), the same                ``resnet18``
=========================  =====================================================  ====================

``blocks="all"`` makes every residual unit of a Min-ResNet a Min block. The
dendritic networks start (dendrite biases 0) as exactly their counterparts'
functions, with twice the conv/FC weights and the same counted MACs. Their
``impl`` picks the dendritic layers' implementation: ``"compiled"`` trains about
30x faster than the default ``"fused"`` where ``torch.compile`` works.

>>> from operad.models import create_model
>>> create_model("min_resnet20").stage2[0].term
min_block(32, stride=2)
"""
from __future__ import annotations

from typing import Optional

from .. import ops
from ..operators.algebra.combinators import Dense
from ..operators.min_unit import MinUnit
from ..operators.algebra.term import Term
from ..operators.rewrites import to_dendritic, to_min
from ..operators.rewrites import substitute
from .registry import model_term, register_model

__all__ = ["min_densenet_bc100", "min_resnet20", "min_resnet56", "dendritic_resnet20",
           "dendritic_resnet56", "dendritic_resnet18"]

_CIFAR = dict(input_size=(3, 32, 32))


def _min_resnet(depth: int, num_classes: int, in_chans: int, blocks: str, k: int, q: int, n: int) -> Term:
    return to_min(model_term(f"resnet{depth}", num_classes=num_classes, in_chans=in_chans), blocks, k, q, n)


@register_model(tags=("min", "resnet", "cifar"), **_CIFAR)
def min_resnet20(num_classes: int = 10, in_chans: int = 3, blocks: str = "first", k: int = 3, q: int = 2,
                 n: int = 2) -> Term:
    """Min-ResNet-20: ResNet-20 whose first residual unit per stage is a Min block."""
    return _min_resnet(20, num_classes, in_chans, blocks, k, q, n)


@register_model(tags=("min", "resnet", "cifar"), **_CIFAR)
def min_resnet56(num_classes: int = 10, in_chans: int = 3, blocks: str = "first", k: int = 3, q: int = 2,
                 n: int = 2) -> Term:
    """The reference Min-ResNet (N = 9 blocks per stage, depth 56): the first unit of
    each stage is a Min block (1x1 to 2*out + BN + ReLU, min of two depthwise 3x3 +
    IN + ReLU, 1x1 + BN + ReLU; 2x2 average-pool shortcut; no ReLU after the sum)."""
    return _min_resnet(56, num_classes, in_chans, blocks, k, q, n)


def _dendritic(name: str, num_classes: int, in_chans: int, impl: str) -> Term:
    return to_dendritic(model_term(name, num_classes=num_classes, in_chans=in_chans), impl=impl)


@register_model(tags=("dendritic", "resnet", "cifar"), **_CIFAR)
def dendritic_resnet20(num_classes: int = 10, in_chans: int = 3, impl: str = "fused") -> Term:
    """Dendritic ResNet-20: per-connection biases before every ReLU, dendritic FC head."""
    return _dendritic("resnet20", num_classes, in_chans, impl)


@register_model(tags=("dendritic", "resnet", "cifar"), **_CIFAR)
def dendritic_resnet56(num_classes: int = 10, in_chans: int = 3, impl: str = "fused") -> Term:
    """Dendritic ResNet-56: per-connection biases before every ReLU, dendritic FC head."""
    return _dendritic("resnet56", num_classes, in_chans, impl)


@register_model(tags=("dendritic", "resnet", "imagenet"), input_size=(3, 224, 224))
def dendritic_resnet18(num_classes: int = 1000, in_chans: int = 3, impl: str = "fused") -> Term:
    """Dendritic ResNet-18 (torchvision layout), dendritic FC head."""
    return _dendritic("resnet18", num_classes, in_chans, impl)


# ---------------------------------------------------------------------------
# Min-DenseNet-BC: DenseNet-BC-100 (models/densenet.py) with Min-unit layers
# ---------------------------------------------------------------------------
def _min_layer(growth: int, q: int = 4) -> Term:
    # BN-ReLU, then the Min unit: 1x1 to q*growth + BN + ReLU, min of two depthwise
    # 3x3 (+ IN + ReLU), 1x1 to growth + BN + ReLU
    return ops.bn() >> ops.relu() >> MinUnit(growth, 3, q, 2)


def _growth(layer: Term) -> int:
    convs = [t for t in layer.walk() if t.family == "conv"]
    return convs[-1].out


@register_model(tags=("min", "densenet", "cifar"), **_CIFAR)
def min_densenet_bc100(num_classes: int = 10, in_chans: int = 3, q: int = 4) -> Term:
    """Min-DenseNet-BC (L = 100, k = 12), counterpart ``densenet_bc100_k12``: every dense
    layer (BN-ReLU-1x1(4k)-BN-ReLU-3x3(k)) becomes BN-ReLU + a Min unit (1x1 to q*k +
    BN + ReLU, min of two depthwise 3x3 + IN + ReLU, 1x1 to k + BN + ReLU)."""
    base = model_term("densenet_bc100_k12", num_classes=num_classes, in_chans=in_chans)
    return substitute(base, Dense, lambda d: ops.dense(_min_layer(_growth(d.layer), q), d.n))
