"""``operad.summary``: one table of a bound network, node by node."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import nn

from ..operators.algebra.combinators import lipschitz_of
from ..operators.algebra.term import Cost
from ..operators.algebra.sizes import check_input_shape
from .cost import cost as _cost

__all__ = ["summary", "Summary"]

_SHORT = {"shift": "T", "rot90": "R4", "flip": "F", "rotation": "SO2"}


@dataclass
class Row:
    depth: int
    path: str
    op: str
    in_type: str
    out_type: str
    params: object
    macs: object
    lipschitz: Optional[float]
    equivariance: str
    leaf: bool
    bytes: object = None  # parameter storage at the parameters' bit widths


@dataclass
class Summary:
    """Rows per node, the totals at the input size, and the symbolic cost."""

    rows: List[Row]
    input_shape: Sequence[int]
    total: Cost
    formula: Cost
    lipschitz: Optional[float]

    def __str__(self) -> str:
        head = ("path", "operator", "in", "out", "params", "bytes", "MACs", "Lip", "equiv")
        body = []
        for r in self.rows:
            lip = "-" if r.lipschitz is None else f"{r.lipschitz:.3g}"
            op = r.op if len(r.op) <= 40 else r.op[:37] + "..."
            body.append(("  " * r.depth + r.path, op, r.in_type, r.out_type,
                         f"{r.params:,}", _bytes(r.bytes), f"{r.macs:,}", lip, r.equivariance or "-"))
        widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
        fmt = lambda row: "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
        lines = [fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
        lines += [fmt(r) for r in body]
        lines.append("-" * len(lines[1]))
        lip = "-" if self.lipschitz is None else f"{self.lipschitz:.4g}"
        lines.append(f"input {tuple(self.input_shape)}: {self.total.params:,} params, "
                     f"{_bytes(self.total.bytes)} bytes, {self.total.macs:,} MACs, "
                     f"{_bytes(self.total.bops)} BOPs, Lipschitz bound {lip}")
        lines.append(f"params = {self.formula.params}")
        lines.append(f"MACs   = {self.formula.macs}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def _short(term) -> str:
    kids = term.children()
    if type(term).__name__ in ("Seq", "Repeat") and kids:
        return _short(kids[0]) + " >> ..." if type(term).__name__ == "Seq" else f"({_short(kids[0])}) * {term.n}"
    r = repr(term)
    return r if len(r) <= 40 else r[:37] + "..."


def summary(module: nn.Module, input_shape: Sequence[int], max_depth: Optional[int] = None) -> Summary:
    """A table with path, operator, in and out type, params, MACs, Lipschitz
    bound and equivariance (T shifts, R4 90-degree rotations, F flips, SO2 all
    rotations) for every node, the totals, and the exact symbolic cost in H, W.

    >>> from operad import ops, Field, summary
    >>> m = (ops.conv(8) >> ops.relu() >> ops.global_pool() >> ops.linear(10)).bind(Field(3))
    >>> print(summary(m, (1, 3, 32, 32)))  # doctest: +ELLIPSIS
    path ...
    """
    if not hasattr(module, "term"):
        raise TypeError("summary needs a bound operad module (term.bind(Field(...)))")
    check_input_shape(module, input_shape)  # channels and sizes the model can run on, else a SizeError
    size = tuple(input_shape[2:]) if module.in_type.rank == 2 else None
    rows: List[Row] = []

    def visit(m: nn.Module, depth: int, size):
        t = m.term
        c = t.cost(m.in_type, size)
        kids = [k for k in m.children() if hasattr(k, "term")]
        eq = t.equivariance(m.in_type)
        rows.append(Row(depth, m.path, _short(t), repr(m.in_type), repr(m.out_type), _num(c.params),
                        _num(c.macs), lipschitz_of(m, size), ",".join(_SHORT[e] for e in sorted(eq, key=list(_SHORT).index)),
                        not kids, c.bytes))
        if max_depth is not None and depth >= max_depth:
            return
        # children see sizes in sequence for Seq, the same size for branches
        from ..operators.algebra.combinators import SeqModule
        cur = size
        sizes = m.child_sizes(size) if hasattr(m, "child_sizes") else None  # e.g. ops.multibox's levels
        for j, k in enumerate(kids):
            visit(k, depth + 1, sizes[j] if sizes is not None else cur)
            if isinstance(m, SeqModule):
                cur = k.term.out_size(k.in_type, cur) if cur is not None else None

    visit(module, 0, size)
    total = _cost(module, size=size)
    formula = _cost(module)
    return Summary(rows, input_shape, total, formula, lipschitz_of(module, size))


def _bytes(v) -> str:
    """Bytes (or BOPs) for the table: an int with separators, or one decimal for a fraction."""
    try:
        f = float(v)
    except TypeError:
        return str(v)
    return f"{int(f):,}" if f == int(f) else f"{f:,.1f}"


def _num(v):
    try:
        return int(v)
    except TypeError:
        return v
