"""The Min rewrite: residual units become Min blocks (Min-Nets).

``to_min(term, blocks="first")``
    replaces residual units ``residual(body, shortcut) >> relu`` by the reference
    ``min_block(out, stride=...)`` (no ReLU after the sum): the first unit of
    every stage (``blocks="first"``, as FP-/Min-Nets do) or all of them
    (``blocks="all"``). ``blocks="relu"`` instead substitutes every ReLU by
    ``min_filters()`` with :func:`operad.rewrite.substitute` (any network).

>>> from operad import ops
>>> to_min(ops.residual(ops.conv(8) >> ops.relu()) >> ops.relu())
min_block(8)
"""
from __future__ import annotations

from typing import Optional, Tuple

from ..algebra.combinators import Residual, Seq
from ..algebra.term import Term
from ..conv import Conv
from ..min_unit import MinBlock, MinFilters
from .substitute import substitute
from .to_dendritic import is_relu, seq_of

__all__ = ["to_min"]


def _body_shape(body: Term) -> Tuple[Optional[object], int]:
    convs = [t for t in body.walk() if isinstance(t, Conv)]
    if not convs:
        raise ValueError(f"to_min: a residual body without convolutions cannot become a Min block: {body!r}")
    return convs[-1].out, max(c.stride for c in convs)


def to_min(term: Term, blocks: str = "first", k: int = 3, q: int = 2, n: int = 2,
           norm: Optional[str] = "instance") -> Term:
    """The Min version of a network (see the module docstring).

    >>> from operad import ops
    >>> to_min(ops.residual(ops.conv(8) >> ops.relu()) >> ops.relu())
    min_block(8)
    """
    if blocks == "relu":
        return substitute(term, "relu", MinFilters(k, n, 1, norm))
    if blocks not in ("first", "all"):
        raise ValueError(f"to_min blocks must be 'first', 'all' or 'relu'; got {blocks!r}")

    def fn(t: Term) -> Term:
        if not isinstance(t, Seq):
            return t
        items, i, done = [], 0, False
        while i < len(t.items):
            item = t.items[i]
            nxt = t.items[i + 1] if i + 1 < len(t.items) else None
            if isinstance(item, Residual) and nxt is not None and is_relu(nxt) and not (done and blocks == "first"):
                out, stride = _body_shape(item.body)
                items.append(MinBlock(out, k, q, n, stride, norm))
                done = True
                i += 2
                continue
            if isinstance(item, Residual):
                done = True
            items.append(item)
            i += 1
        return seq_of(items)

    return term.map(fn)
