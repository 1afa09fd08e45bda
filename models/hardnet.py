"""HarDNet (Chao et al. 2019, "HarDNet: A Low Memory Traffic Network") and
ThreshNet (Ju et al. 2022, "ThreshNet: An Efficient DenseNet Using Threshold
Mechanism to Reduce Connections"), built with ``ops.harmonic_block`` and ``ops.dense``.

HarDNet: a stem (3x3/2 conv, 3x3 conv, 3x3/2 max pool), then per stage a
harmonic dense block (layer k linked to k - 2^i, width multiplier 1.7), a 1x1
conv-BN-act transition to the stage width and, where the layout says so, a 2x2
max pool. ThreshNet keeps full dense connectivity (DenseNet-BC layers) while
blocks are shallow and switches to harmonic blocks past the threshold, which
drops the connections of the deep blocks.

Top-level items: ``stem, stage1..stageN, head``; the 2x2 max pool that ends a
stage opens the next, so stage outputs are the maps before downsampling.
"""
from __future__ import annotations

from typing import Sequence

from .. import ops
from ..operators.algebra.field import Field
from ..operators.algebra.term import Term
from .densenet import dense_layer
from .registry import register_model
from .resnet import chain

__all__ = ["hardnet", "threshnet"]


def _cba(out: int, k: int = 3, stride: int = 1, act=ops.relu6) -> Term:
    return ops.conv(out, k=k, stride=stride, bias=False) >> ops.bn() >> act()


def _assemble(stem, blocks, widths, down, num_classes, drop, act, features_only):
    items = [stem.named("stem")]
    pending = ops.max_pool(3, stride=2, padding=1)
    for i, (blk, w, d) in enumerate(zip(blocks, widths, down)):
        st = blk >> _cba(w, 1, act=act)
        if pending is not None:
            st = pending >> st
        items.append(st.named(f"stage{i + 1}"))
        pending = ops.max_pool(2) if d else None
    if not features_only:
        head = [ops.global_pool()] + ([ops.dropout(drop)] if drop else []) + [ops.linear(num_classes)]
        items.append(chain(head).named("head"))
    return chain(items)


def hardnet(stem_widths: Sequence[int], widths: Sequence[int], growth: Sequence[int], layers: Sequence[int],
            down: Sequence[int], grmul: float = 1.7, num_classes: int = 1000, in_chans: int = 3,
            drop: float = 0.1, act=ops.relu6, features_only: bool = False) -> Term:
    """A HarDNet from its layout (the paper's tables): stage i is a harmonic block of
    ``layers[i]`` layers with growth ``growth[i]``, a 1x1 transition to ``widths[i]``,
    and a 2x2 max pool after it when ``down[i]``."""
    stem = _cba(stem_widths[0], 3, 2, act) >> _cba(stem_widths[1], 3, 1, act)
    layer = lambda w: _cba(w, 3, act=act)  # noqa: E731
    blocks = [ops.harmonic_block(g, n, grmul, layer=layer) for g, n in zip(growth, layers)]
    return _assemble(stem, blocks, widths, down, num_classes, drop, act, features_only)


_H68 = dict(stem_widths=(32, 64), widths=(128, 256, 320, 640, 1024), growth=(14, 16, 20, 40, 160),
            layers=(8, 16, 16, 16, 4), down=(1, 0, 1, 1, 0))
_H85 = dict(stem_widths=(48, 96), widths=(192, 256, 320, 480, 720, 1280), growth=(24, 24, 28, 36, 48, 256),
            layers=(8, 16, 16, 16, 16, 4), down=(1, 0, 1, 0, 1, 0))


@register_model(input_size=(3, 224, 224), tags=("hardnet", "imagenet"))
def hardnet68(num_classes: int = 1000, in_chans: int = 3, drop: float = 0.1, features_only: bool = False) -> Term:
    """HarDNet-68: 17.6M parameters, 4.3G MACs at 224 (the paper's figures)."""
    return hardnet(**_H68, num_classes=num_classes, in_chans=in_chans, drop=drop, features_only=features_only)


@register_model(input_size=(3, 224, 224), tags=("hardnet", "imagenet"))
def hardnet85(num_classes: int = 1000, in_chans: int = 3, drop: float = 0.2, features_only: bool = False) -> Term:
    """HarDNet-85: 36.7M parameters, 9.1G MACs at 224 (the paper's figures)."""
    return hardnet(**_H85, num_classes=num_classes, in_chans=in_chans, drop=drop, features_only=features_only)


@register_model(input_size=(3, 32, 32), tags=("hardnet", "cifar"))
def hardnet68_cifar(num_classes: int = 10, in_chans: int = 3, drop: float = 0.1, features_only: bool = False) -> Term:
    """HarDNet-68 on 32x32 inputs (the ImageNet layout, ending at 1x1; as in the ThreshNet comparison)."""
    return hardnet(**_H68, num_classes=num_classes, in_chans=in_chans, drop=drop, features_only=features_only)


def threshnet(dense_layers: Sequence[int] = (6, 8, 12), harmonic_layers: Sequence[int] = (16, 4),
              harmonic_growth: Sequence[int] = (40, 160), widths: Sequence[int] = (128, 192, 288, 480, 960),
              down: Sequence[int] = (1, 1, 0, 1, 0), growth: int = 32, grmul: float = 1.7, num_classes: int = 10,
              in_chans: int = 3, features_only: bool = False) -> Term:
    """ThreshNet: dense blocks (DenseNet-BC layers, growth 32, 1x1 bottleneck of 4 x 32)
    for the first stages, harmonic blocks after the threshold; 1x1 conv-BN-ReLU
    transitions and 2x2 max pools as in ``down``."""
    act = ops.relu
    stem = _cba(32, 3, 2, act) >> _cba(64, 3, 1, act)
    blocks = [ops.dense(dense_layer(growth, 4), n) for n in dense_layers]
    blocks += [ops.harmonic_block(g, n, grmul, layer=lambda w: _cba(w, 3, act=act))
               for g, n in zip(harmonic_growth, harmonic_layers)]
    return _assemble(stem, blocks, widths, down, num_classes, 0.0, act, features_only)


@register_model(input_size=(3, 32, 32), tags=("threshnet", "cifar"))
def threshnet79(num_classes: int = 10, in_chans: int = 3, features_only: bool = False) -> Term:
    """ThreshNet-79 for CIFAR: dense blocks of 6/8/12 layers, then harmonic blocks of 16 and 4."""
    return threshnet(num_classes=num_classes, in_chans=in_chans, features_only=features_only)
