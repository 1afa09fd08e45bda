"""Shared pieces of the CIFAR ResNet family used by the zoo-II networks
(Ghost-ResNet, G-Ghost ResNet, MGIC-ResNet): option-A shortcuts, the basic
block with pluggable convolutions, and the three-stage layout (widths 16, 32,
64; ``(depth - 2) / 6`` blocks per stage; named ``stem``, ``stage1`` .. ``stage3``)."""
from __future__ import annotations

from typing import Callable, Optional

from .. import ops
from ..operators.term import Term

__all__ = ["option_a", "basic_block", "cifar_resnet_term", "chain"]


def chain(items):
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


def option_a(cin: int, out: int, stride: int) -> Optional[Term]:
    """The parameter-free shortcut: subsample by the stride, zero-pad the new channels
    (None when the shape is kept)."""
    if stride == 1 and cin == out:
        return None
    d = out - cin
    short = ops.avg_pool(1, stride=stride) if stride > 1 else ops.identity()
    return short >> ops.channel_pad(d // 2, d - d // 2) if d else short


def _conv_bn(out, stride, relu):
    t = ops.conv(out, k=3, stride=stride, bias=False) >> ops.bn()
    return t >> ops.relu() if relu else t


def basic_block(cin: int, out: int, stride: int = 1, conv: Callable = _conv_bn) -> Term:
    """relu(shortcut(x) + conv(out, stride, relu=False)(conv(out, stride, relu=True)(x))),
    where ``conv(out, stride, relu)`` makes a conv + BN (+ ReLU) replacement."""
    body = conv(out, stride, True) >> conv(out, 1, False)
    return ops.residual(body, option_a(cin, out, stride)) >> ops.relu()


def cifar_resnet_term(depth: int, block: Callable[[int, int, int], Term], num_classes: int = 10,
                      widths=(16, 32, 64), stem: Optional[Term] = None, stage: Optional[Callable] = None,
                      features_only: bool = False) -> Term:
    """A CIFAR ResNet of ``depth`` (6n + 2) with ``block(cin, out, stride)``; ``stage(cin, out,
    stride, n)``, when given, builds a whole stage instead."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110); got {depth}")
    n = (depth - 2) // 6
    items = [(stem or (ops.conv(widths[0], k=3, bias=False) >> ops.bn() >> ops.relu())).named("stem")]
    cin = widths[0]
    for i, w in enumerate(widths):
        stride = 1 if i == 0 else 2
        if stage is not None:
            st = stage(cin, w, stride, n)
        else:
            st = chain([block(cin if j == 0 else w, w, stride if j == 0 else 1) for j in range(n)])
        items.append(st.named(f"stage{i + 1}"))
        cin = w
    if features_only:
        return chain(items)
    items.append(ops.global_pool() >> ops.linear(num_classes))
    return chain(items)
