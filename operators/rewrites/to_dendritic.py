"""The dendritic rewrite: ReLUs move onto the connections they feed.

``to_dendritic(term)``
    moves every ReLU onto the connections of the linear operator it feeds:
    ``relu >> conv`` becomes ``dendritic_conv`` and ``relu >> linear`` becomes
    ``dendritic_linear`` (same out, k, stride, dilation, padding, bias). A ReLU
    travels forward through operators that commute with it (max pooling, zero
    channels, subsampling, identity, dropout) and into both branches of a
    residual (``relu >> residual(f, s) == residual(relu >> f, relu >> s)``);
    where it meets anything else it stays. A linear operator whose input is
    already non-negative (a ReLU followed by average pooling, e.g. the head
    ``relu >> global_pool >> linear``) also becomes dendritic (``heads=True``),
    since ``ReLU(x + 0) = x`` there. With the dendrite biases at zero (their
    initial value) the rewritten network computes exactly the original
    function with the same weights; ``tests/test_units.py`` checks it.

>>> from operad import ops
>>> to_dendritic(ops.conv(8) >> ops.relu() >> ops.conv(8))
conv(8) >> dendritic_conv(8, bias=True)
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from ..activation import Activation
from ..algebra.combinators import Named, Repeat, Residual, Seq
from ..algebra.term import Term
from ..conv import Conv, _DepthwiseMultiplier
from ..dendritic import DendriticConv, DendriticLinear
from ..linear import Dropout, Identity, Linear
from ..pooling import GlobalPool, Pool

__all__ = ["to_dendritic", "is_relu", "seq_of"]

_NONE, _PENDING, _NONNEG = 0, 1, 2


def is_relu(t: Term) -> bool:
    return isinstance(t, Activation) and t.fn == "relu"


def _commutes_with_relu(t: Term) -> bool:
    """Operators f with f(relu(x)) == relu(f(x)) for every x."""
    if isinstance(t, (Identity, Dropout)):
        return True
    if isinstance(t, Pool) and t.kind == "max":
        return True
    return t.family in ("channel_pad", "pad_channels", "subsample")


def _keeps_nonneg(t: Term) -> bool:
    """Linear operators with non-negative coefficients: non-negative in, non-negative out."""
    return _commutes_with_relu(t) or isinstance(t, (Pool, GlobalPool)) or t.family == "min_shortcut"


def _settle(t: Optional[Term], state: int) -> Term:
    """``t`` followed by the pending ReLU, if any (a term in every case)."""
    if state != _PENDING:
        return t if t is not None else Identity()
    if t is None or isinstance(t, Identity):
        return Activation("relu")
    return t >> Activation("relu")


def seq_of(items: List[Term]) -> Optional[Term]:
    if not items:
        return None
    return items[0] if len(items) == 1 else Seq(tuple(items))


def _push(t: Term, state: int, heads: bool, impl: str) -> Tuple[Optional[Term], int]:
    """The rewrite of ``relu >> t`` (``state == _PENDING``) or of ``t`` on a
    non-negative input (``_NONNEG``) or on any input (``_NONE``): a term (None for
    the identity) that, followed by a ReLU when the returned state is pending,
    computes the same function."""
    if is_relu(t):
        return None, _PENDING
    if isinstance(t, Named):
        inner, st = _push(t.inner, state, heads, impl)
        return (None if inner is None else Named(inner, t.name)), st
    if isinstance(t, Repeat):
        return _push(Seq((t.block,) * t.n), state, heads, impl)
    if isinstance(t, Seq):
        items: List[Term] = []
        for item in t.items:
            new, state = _push(item, state, heads, impl)
            if new is not None:
                items.append(new)
        return seq_of(items), state
    fed = state == _PENDING or (state == _NONNEG and heads)
    if type(t) is Conv and t.groups == 1 and fed:
        return DendriticConv(t.out, t.k, t.stride, t.dilation, t.bias, t.padding, t.padding_mode, impl), _NONE
    if type(t) is Linear and fed:
        return DendriticLinear(t.out, t.bias, impl), _NONE
    if isinstance(t, Residual):
        if state == _PENDING:
            body, bs = _push(t.body, _PENDING, heads, impl)
            short, ss = _push(t._short(), _PENDING, heads, impl)
        else:
            body, bs = _push(t.body, _NONE, heads, impl)
            short, ss = (None, _NONE) if t.shortcut is None else _push(t.shortcut, _NONE, heads, impl)
        short_t = _settle(short, ss) if (short is not None or ss == _PENDING) else None
        if isinstance(short_t, Identity):
            short_t = None
        return Residual(_settle(body, bs), short_t), _NONE
    if state == _PENDING and _commutes_with_relu(t):
        return t, _PENDING
    if state in (_PENDING, _NONNEG) and _keeps_nonneg(t) and not _commutes_with_relu(t):
        return (Activation("relu") >> t if state == _PENDING else t), _NONNEG
    if state == _NONNEG and _commutes_with_relu(t):
        return t, _NONNEG
    # anything else: settle the ReLU before it and rewrite inside it
    kids = t.children()
    if kids and not isinstance(t, (Conv, _DepthwiseMultiplier)):
        t = t.with_children([_settle(*_push(k, _NONE, heads, impl)) for k in kids])
    return (Activation("relu") >> t if state == _PENDING else t), _NONE


def to_dendritic(term: Term, heads: bool = True, impl: str = "fused") -> Term:
    """The dendritic version of a network: every ReLU moves onto the connections of
    the convolution or fully connected layer it feeds (see the module docstring);
    ``impl`` is the dendritic layers' implementation (``"fused"``, ``"naive"`` or
    ``"compiled"``, see :mod:`operad.operators.dendritic`).

    >>> from operad import ops
    >>> to_dendritic(ops.conv(8) >> ops.relu() >> ops.global_pool() >> ops.linear(10))
    conv(8) >> relu() >> global_pool() >> dendritic_linear(10, bias=True)
    """
    new, state = _push(term, _NONE, heads, impl)
    return _settle(new, state)
