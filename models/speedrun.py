"""``cifar10_speedrun``: the CIFAR-10 speed-record network as an operad expression.

The layout follows the published record nets (Keller Jordan's airbench94,
after hlb-cifar10): a frozen 2x2 patch-whitening layer (24 channels from RGB)
and GELU, then three blocks of widths 64, 256, 256, each

    conv 3x3 (identity init) >> max_pool 2 >> bn >> gelu >> conv 3x3 (identity init) >> bn >> gelu

and a head ``max_pool 3 >> flatten >> linear (no bias) >> x 1/9``. The batch
norms use eps 1e-12 and fast running statistics (PyTorch momentum 0.4); the
recipe (:mod:`operad.experiments.speedrun`) fits the whitening layer to the
first training images, keeps the batch-norm scales at 1 and trains the shifts.

>>> import operad
>>> from operad import Field
>>> operad.cost(cifar10_speedrun(), Field(3), size=(32, 32)).params
1972504
"""
from __future__ import annotations

from typing import Sequence

from .. import ops
from ..operators.activation import ACTIVATIONS, Activation
from ..operators.algebra.term import Term
from .registry import register_model
from .resnet import chain

__all__ = ["cifar10_speedrun", "speedrun_block"]


def speedrun_block(width: int, act: str = "gelu", bn_eps: float = 1e-12, bn_momentum: float = 0.4) -> Term:
    """``conv >> max_pool(2) >> bn >> act >> conv >> bn >> act`` with identity-initialised
    3x3 convolutions without bias.

    >>> from operad import Field
    >>> speedrun_block(64).bind(Field(24)).out_type
    Field(64)
    """
    def c():
        return ops.conv(width, k=3, bias=False, init="dirac")

    def n():
        return ops.bn(eps=bn_eps, momentum=bn_momentum) >> Activation(act)
    return chain([c(), ops.max_pool(2), n(), c(), n()])


@register_model(input_size=(3, 32, 32), tags=("speedrun", "cifar"))
def cifar10_speedrun(num_classes: int = 10, in_chans: int = 3, widths: Sequence[int] = (64, 256, 256),
                     whiten_k: int = 2, whiten_eps: float = 5e-4, act: str = "gelu", bn_eps: float = 1e-12,
                     bn_momentum: float = 0.4, logit_scale: float = 1 / 9, features_only: bool = False) -> Term:
    """The speed-record net: patch whitening, three conv-pool-BN blocks, a scaled linear head (1.97M parameters)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"cifar10_speedrun act must be one of {sorted(ACTIVATIONS)}; got {act!r}")
    items = [(ops.patch_whiten(k=whiten_k, eps=whiten_eps) >> Activation(act)).named("stem")]
    items += [speedrun_block(w, act, bn_eps, bn_momentum).named(f"stage{i + 1}") for i, w in enumerate(widths)]
    if not features_only:
        items.append((ops.max_pool(3) >> ops.global_pool("max") >> ops.linear(num_classes, bias=False)
                      >> ops.scale(logit_scale)).named("head"))
    return chain(items)
