"""The binarize rewrite: a network's convolutions and linear layers become
binary (Binary-Weight-Networks or XNOR-Net, Rastegari et al. 2016).

``binarize(term, scheme="bwn")``
    every ``conv``/``linear`` except the first and the last (``keep_first_last``,
    as the papers do) becomes ``binary_conv``/``binary_linear`` with the same
    hyper-parameters; nothing else changes.
``binarize(term, scheme="xnor")``
    also reorders each block to the paper's BN -> sign -> binary conv -> pool:
    ``conv >> bn [>> act]`` becomes ``bn >> binary_conv(scheme="xnor")`` and
    ``conv >> pool >> bn [>> act]`` (BinaryNet's VGG) ``bn >> binary_conv >> pool``
    (the XNOR layer binarizes its input, so the sign sits inside it and
    replaces the activation; the moved BN normalizes the layer's input). The
    XNOR-Net reference code keeps a ReLU after each binary conv; the paper's
    block, followed here, has none.

Given a bound module, the result is bound to the same input and takes every
state entry whose name and shape still match (for BWN: all of them, so a
trained float network starts its binary training from its own weights).

>>> from operad import ops
>>> net = ops.conv(16) >> ops.conv(32, bias=False) >> ops.bn() >> ops.relu() >> ops.conv(10)
>>> binarize(net, "xnor")
conv(16) >> bn() >> binary_conv(32, bias=False, scheme='xnor') >> conv(10)
"""
from __future__ import annotations

from typing import Callable, List, Union

from torch import nn

from ..activation import ACTIVATIONS
from ..algebra.combinators import Seq
from ..algebra.term import Term
from ..binary import BinaryConv, BinaryLinear
from ..conv import Conv
from ..linear import Linear

__all__ = ["binarize", "replace_layers", "carry_state", "conv_args"]


def _is_layer(t: Term) -> bool:
    return type(t) in (Conv, Linear)


def replace_layers(term: Term, make: Callable[[Term], Term], keep_first_last: bool = True) -> Term:
    """Replace every plain ``conv``/``linear`` leaf by ``make(leaf)``, except the
    first and last in walk order when ``keep_first_last``."""
    n = sum(1 for t in term.walk() if _is_layer(t))
    keep = {0, n - 1} if keep_first_last else set()
    seen = [0]

    def fn(t: Term) -> Term:
        if not _is_layer(t):
            return t
        i = seen[0]
        seen[0] += 1
        return t if i in keep else make(t)

    return term.map(fn)


def carry_state(old: nn.Module, new: nn.Module) -> nn.Module:
    """Copy into ``new`` every state entry of ``old`` with the same name and shape."""
    mine = new.state_dict()
    take = {k: v for k, v in old.state_dict().items() if k in mine and mine[k].shape == v.shape}
    new.load_state_dict(take, strict=False)
    return new


def conv_args(t: Conv) -> dict:
    """The geometry of a conv term, as keywords (its init does not carry over)."""
    return dict(out=t.out, k=t.k, stride=t.stride, dilation=t.dilation, groups=t.groups, bias=t.bias,
                padding=t.padding, padding_mode=t.padding_mode)


def _binary(scheme: str, center: bool, scale_input: bool) -> Callable[[Term], Term]:
    def make(t: Term) -> Term:
        if isinstance(t, Linear):
            return BinaryLinear(out=t.out, bias=t.bias, scheme=scheme, center=center)
        return BinaryConv(**conv_args(t), scheme=scheme, center=center, scale_input=scale_input)
    return make


def _is_xnor(t: Term) -> bool:
    return isinstance(t, (BinaryConv, BinaryLinear)) and t.scheme == "xnor"


def _reorder(t: Term) -> Term:
    """In a sequence, ``xnor >> bn [>> act]`` -> ``bn >> xnor`` and
    ``xnor >> pool >> bn [>> act]`` -> ``bn >> xnor >> pool``: BN -> sign -> conv -> pool."""
    if not isinstance(t, Seq):
        return t
    items: List[Term] = list(t.items)
    fam = lambda j: items[j].family if j < len(items) else None
    out: List[Term] = []
    i = 0
    while i < len(items):
        it = items[i]
        if _is_xnor(it) and fam(i + 1) == "bn":
            out += [items[i + 1], it]
            i += 2
        elif _is_xnor(it) and fam(i + 1) in ("max_pool", "avg_pool") and fam(i + 2) == "bn":
            out += [items[i + 2], it, items[i + 1]]
            i += 3
        else:
            out.append(it)
            i += 1
            continue
        if fam(i) in ACTIVATIONS:  # sign, inside the XNOR layer, replaces it
            i += 1
    return out[0] if len(out) == 1 else Seq(tuple(out))


def binarize(model_or_term: Union[Term, nn.Module], scheme: str = "xnor", keep_first_last: bool = True,
             center: bool = False, scale_input: bool = False) -> Union[Term, nn.Module]:
    """The binary version of a network (see the module docstring).

    >>> from operad import ops
    >>> binarize(ops.conv(8) >> ops.conv(8) >> ops.conv(8), "bwn")
    conv(8) >> binary_conv(8) >> conv(8)
    """
    if scheme not in ("bwn", "xnor"):
        raise ValueError(f"binarize scheme must be 'bwn' or 'xnor'; got {scheme!r}")
    if isinstance(model_or_term, nn.Module):
        m = model_or_term
        if not hasattr(m, "term"):
            raise TypeError(f"binarize takes a term or a bound operad module; got {type(m).__name__}")
        new = binarize(m.term, scheme, keep_first_last, center, scale_input).bind(m.in_type)
        return carry_state(m, new)
    term = replace_layers(model_or_term, _binary(scheme, center, scale_input), keep_first_last)
    return term.map(_reorder) if scheme == "xnor" else term
