"""Networks whose regularization is part of the architecture: Shake-Shake
ResNets (Gastaldi 2017) and a PyramidNet with ShakeDrop (Yamada et al. 2019).

>>> import operad
>>> from operad import Field
>>> operad.cost(shake_shake_resnet(26, 32), Field(3), size=(32, 32)).params
2923162
"""
from __future__ import annotations

from typing import Optional

from .. import ops
from ..operators.algebra.field import Field
from ..operators.algebra.term import Term
from .registry import register_model
from .resnet import chain, conv_bn

__all__ = ["shake_shake_block", "shake_shake_resnet", "pyramid_shakedrop_block", "pyramidnet_shakedrop"]


def _branch(cout: int, stride: int) -> Term:
    return (ops.relu() >> ops.conv(cout, k=3, stride=stride, bias=False) >> ops.bn() >> ops.relu()
            >> ops.conv(cout, k=3, bias=False) >> ops.bn())


def shake_shake_block(cin: int, cout: int, stride: int = 1, shake: bool = True) -> Term:
    """``x + shake_shake(branch, branch)``, each branch ReLU-conv-BN-ReLU-conv-BN.
    Where the shape changes the shortcut is ReLU, a strided 1x1 conv and BN
    (the paper concatenates two half-width 1x1 paths, one shifted by a pixel).
    ``shake=False`` sums the branches instead (the no-shake control; the
    paper's "Even-Even" up to a scale the last BN absorbs).

    >>> shake_shake_block(16, 32, 2).bind(Field(16)).out_type
    Field(32)
    """
    a, b = _branch(cout, stride), _branch(cout, stride)
    body = ops.shake_shake(a, b) if shake else a + b
    if stride == 1 and cin == cout:
        return ops.residual(body)
    return ops.residual(body, ops.relu() >> conv_bn(cout, 1, stride, None))


def shake_shake_resnet(depth: int = 26, width: int = 32, num_classes: int = 10, in_chans: int = 3,
                       shake: bool = True) -> Term:
    """A CIFAR Shake-Shake ResNet of ``depth = 6n + 2``: a 3x3 conv-BN stem of 16,
    three stages of n blocks at ``width``, ``2 width``, ``4 width`` (stride 2 on
    the first block of stages 2 and 3), then ReLU, global pooling and a linear head.

    >>> shake_shake_resnet(8, 8).bind(Field(3)).out_type
    Field(10, rank=0)
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"Shake-Shake ResNet depth must be 6n + 2 (26 in the paper); got {depth!r}")
    n = (depth - 2) // 6
    items, c = [conv_bn(16, 3, 1, None).named("stem")], 16
    for i, w in enumerate((width, 2 * width, 4 * width)):
        blocks = [shake_shake_block(c if j == 0 else w, w, 2 if i and j == 0 else 1, shake) for j in range(n)]
        items.append(chain(blocks).named(f"stage{i + 1}"))
        c = w
    items.append((ops.relu() >> ops.global_pool() >> ops.linear(num_classes)).named("head"))
    return chain(items)


@register_model(input_size=(3, 32, 32), tags=("resnet", "shake_shake", "cifar"))
def shake_shake_resnet26_2x32d(num_classes: int = 10, in_chans: int = 3, shake: bool = True) -> Term:
    """Shake-Shake-26 2x32d (Gastaldi 2017, CIFAR-10: 3.55% error with
    Shake-Shake-Image in the paper): 4 blocks per stage, two 32/64/128-wide branches
    (``shake=False``: the branches summed, the control)."""
    return shake_shake_resnet(26, 32, num_classes, in_chans, shake)


def pyramid_shakedrop_block(cin: int, cout: int, stride: int = 1, p: float = 0.5) -> Term:
    """PyramidNet's basic block with ShakeDrop: ``shortcut(x) + shake_drop(BN-conv-BN-ReLU-conv-BN)``;
    the shortcut subsamples when strided and zero-pads the added channels (option A; the
    paper average-pools 2x2, which disagrees with a padded strided conv on odd sizes).

    >>> pyramid_shakedrop_block(16, 21, 2).bind(Field(16)).out_type
    Field(21)
    """
    body = (ops.bn() >> ops.conv(cout, k=3, stride=stride, bias=False) >> ops.bn() >> ops.relu()
            >> ops.conv(cout, k=3, bias=False) >> ops.bn() >> ops.shake_drop(p))
    short: Optional[Term] = ops.option_a(cout, stride) if stride > 1 or cout != cin else None
    return ops.residual(body, short)


def pyramidnet_shakedrop(depth: int = 20, alpha: int = 48, p_last: float = 0.5, num_classes: int = 10,
                         in_chans: int = 3) -> Term:
    """PyramidNet (Han et al. 2017) with additive widening ``alpha`` over
    ``depth = 6n + 2`` (basic blocks) and ShakeDrop whose drop probability
    grows linearly to ``p_last`` at the last block (the paper's linear decay
    rule with ``p_L = 0.5``). Block k of N is ``16 + alpha * k / N`` channels wide.

    >>> pyramidnet_shakedrop(8, 12).bind(Field(3)).out_type
    Field(10, rank=0)
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"PyramidNet depth must be 6n + 2 with basic blocks; got {depth!r}")
    n = (depth - 2) // 6
    total = 3 * n
    items, c = [conv_bn(16, 3, 1, None).named("stem")], 16
    for i in range(3):
        blocks = []
        for j in range(n):
            k = i * n + j + 1
            w = int(16 + alpha * k / total)
            blocks.append(pyramid_shakedrop_block(c, w, 2 if i and j == 0 else 1, p_last * k / total))
            c = w
        items.append(chain(blocks).named(f"stage{i + 1}"))
    items.append((ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(num_classes)).named("head"))
    return chain(items)


@register_model(input_size=(3, 32, 32), tags=("pyramidnet", "shake_drop", "cifar"))
def pyramidnet20_a48_shakedrop(num_classes: int = 10, in_chans: int = 3, p_last: float = 0.5) -> Term:
    """A small PyramidNet-ShakeDrop for the CPU study: depth 20, alpha 48 (widths 16 -> 64,
    about ResNet-20's size), ShakeDrop to ``p_last = 0.5`` (0: the plain PyramidNet, the
    control; the paper's PyramidNet-272 a200 is 26M)."""
    return pyramidnet_shakedrop(20, 48, p_last, num_classes, in_chans)
