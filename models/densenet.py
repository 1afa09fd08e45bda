"""DenseNets as operator expressions (Huang et al. 2017), built with ``ops.dense``.

A DenseNet-BC layer is ``bn >> relu >> conv1x1(bn_size * k) >> bn >> relu >> conv3x3(k)``
(dropout after it only when ``drop > 0``); ``ops.dense(layer, n)`` feeds layer
i the concatenation of the block input and all earlier outputs. A transition
is ``bn >> relu >> conv1x1(floor(compression * C)) >> avg_pool(2)``.

Top-level items: ``stem, stage1, ..., stageN, head``; stage i is the previous
transition (or the stem's max pool) followed by dense block i, so the
features of every stage are the concatenated maps before the next pooling.

>>> import operad
>>> from operad import Field
>>> operad.cost(densenet_bc(100, 12), Field(3), size=(32, 32)).params
769162
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from .. import ops
from ..operators.algebra.field import Field
from ..operators.algebra.term import Term
from .registry import register_model
from .resnet import chain

__all__ = ["dense_layer", "transition", "densenet", "densenet_bc"]


def dense_layer(growth: int, bn_size: Optional[int] = 4, drop: float = 0.0) -> Term:
    """One DenseNet(-B) layer producing ``growth`` channels; ``bn_size=None`` drops
    the 1x1 bottleneck (plain DenseNet)."""
    items = []
    if bn_size:
        items += [ops.bn(), ops.relu(), ops.conv(bn_size * growth, k=1, bias=False)]
    items += [ops.bn(), ops.relu(), ops.conv(growth, k=3, bias=False)]
    if drop:
        items.append(ops.dropout(drop))
    return chain(items)


def transition(out: int) -> Term:
    """``bn >> relu >> conv1x1(out) >> avg_pool(2)``."""
    return ops.bn() >> ops.relu() >> ops.conv(out, k=1, bias=False) >> ops.avg_pool(2)


def densenet(blocks: Sequence[int], growth: int = 32, num_classes: int = 1000, in_chans: int = 3,
             stem: Optional[Term] = None, stem_width: Optional[int] = None, bn_size: Optional[int] = 4,
             compression: float = 0.5, drop: float = 0.0, features_only: bool = False,
             imagenet_stem: bool = True) -> Term:
    """A DenseNet with ``blocks[i]`` layers in dense block i and growth rate ``growth``.

    ``imagenet_stem``: 7x7/2 conv-BN-ReLU then a 3x3/2 max pool opening stage1;
    otherwise a 3x3 conv to ``stem_width`` (default ``2 * growth``). The head
    is ``bn >> relu >> global_pool >> linear``.
    """
    width = stem_width or 2 * growth
    if stem is None:
        stem = (ops.conv(width, k=7, stride=2, bias=False) >> ops.bn() >> ops.relu() if imagenet_stem
                else ops.conv(width, k=3, bias=False))
    items = [stem.named("stem")]
    c = stem._infer(Field(in_chans)).channels
    layer = dense_layer(growth, bn_size, drop)
    for i, n in enumerate(blocks):
        block = ops.dense(layer, n)
        if i == 0:
            st = ops.max_pool(3, stride=2, padding=1) >> block if imagenet_stem else block
        else:
            c = int(math.floor(c * compression))
            st = transition(c) >> block
        c = c + n * growth
        items.append(st.named(f"stage{i + 1}"))
    if not features_only:
        items.append((ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(num_classes)).named("head"))
    return chain(items)


def densenet_bc(depth: int = 100, growth: int = 12, num_classes: int = 10, in_chans: int = 3,
                drop: float = 0.0, features_only: bool = False) -> Term:
    """The CIFAR DenseNet-BC of ``depth`` (3 blocks of ``(depth - 4) / 6`` bottleneck
    layers, compression 0.5, a 3x3 stem to ``2 * growth`` channels)."""
    if (depth - 4) % 6:
        raise ValueError(f"DenseNet-BC depth must be 6n + 4 (e.g. 100, 190, 250); got {depth}")
    n = (depth - 4) // 6
    return densenet((n, n, n), growth, num_classes, in_chans, drop=drop, features_only=features_only,
                    imagenet_stem=False)


@register_model(input_size=(3, 32, 32), tags=("densenet", "cifar"))
def densenet_bc100_k12(num_classes: int = 10, in_chans: int = 3, drop: float = 0.0,
                       features_only: bool = False) -> Term:
    """DenseNet-BC (L=100, k=12) for CIFAR: 0.77M parameters (the paper rounds to 0.8M)."""
    return densenet_bc(100, 12, num_classes, in_chans, drop, features_only)


@register_model(input_size=(3, 224, 224), tags=("densenet", "imagenet"))
def densenet121(num_classes: int = 1000, in_chans: int = 3, drop: float = 0.0, features_only: bool = False) -> Term:
    """DenseNet-121 (blocks 6/12/24/16, k=32, bn_size 4): 7.98M parameters."""
    return densenet((6, 12, 24, 16), 32, num_classes, in_chans, drop=drop, features_only=features_only)
