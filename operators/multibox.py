"""``multibox(stages, heads, parts)``: multi-scale prediction heads on a chain of
stages, flattened into one sequence of default-box predictions (SSD, SSDLite).

Stage ``i`` runs on the output of stage ``i - 1`` (stage 0 on the input); head
``i`` runs on the output of stage ``i`` and gives ``A_i * sum(parts)`` channels
laid out part by part (``A_i * parts[0]`` channels, then ``A_i * parts[1]``,
...; within a part, anchor-major). Every head output is flattened to
``(B, sum(parts), H_i * W_i * A_i)`` in (row, column, anchor) order and the
levels are concatenated along the last axis, so the result is a rank-1 field
with ``sum(parts)`` channels, one sample per default box: for SSD with
``parts=(4, C)`` the first four channels are box offsets, the rest class logits.

Cost: the stages' and heads' costs at their sizes, added. Lipschitz: the
output is a permutation of the stacked head outputs, so the bound is
``sqrt(sum_i (L(head_i) * prod_{j<=i} L(stage_j))**2)``. No symmetry is kept
(the flattening fixes an order of pixels and anchors).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from torch import nn

from .algebra.combinators import lipschitz_of
from .algebra.field import Field, TypeMismatch
from .algebra.term import Cost, Term, _join, attach, op, register_family

__all__ = ["MultiBox", "multibox"]


class MultiBoxModule(nn.Module):
    """Children ``stage0, head0, stage1, head1, ...`` (so ``summary`` walks them in order)."""

    def __init__(self, stages: Sequence[nn.Module], heads: Sequence[nn.Module], parts: Tuple[int, ...],
                 anchors: Tuple[int, ...]):
        super().__init__()
        for i, (s, h) in enumerate(zip(stages, heads)):
            self.add_module(f"stage{i}", s)
            self.add_module(f"head{i}", h)
        self.parts = tuple(parts)
        self.anchors = tuple(anchors)

    @property
    def stages(self):
        return [getattr(self, f"stage{i}") for i in range(len(self.anchors))]

    @property
    def heads(self):
        return [getattr(self, f"head{i}") for i in range(len(self.anchors))]

    def child_sizes(self, size):
        """The input size of each child, in ``children()`` order (for ``operad.summary``)."""
        out = []
        for s in self.stages:
            out.append(size)
            size = s.term.out_size(s.in_type, size) if size is not None else None
            out.append(size)
        return out

    def forward(self, x):
        outs = []
        for stage, head, a in zip(self.stages, self.heads, self.anchors):
            x = stage(x)
            y = head(x)
            b, _, h, w = y.shape
            pieces = torch.split(y, [a * p for p in self.parts], dim=1)
            flat = [q.reshape(b, a, p, h, w).permute(0, 2, 3, 4, 1).reshape(b, p, h * w * a)
                    for q, p in zip(pieces, self.parts)]
            outs.append(torch.cat(flat, dim=1))
        return torch.cat(outs, dim=2)


def _examples(draw):
    from hypothesis import strategies as st
    from .activation import Activation
    from .conv import Conv
    parts = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    n = draw(st.integers(1, 3))
    stages, heads = [], []
    for i in range(n):
        stride = 1 if i == 0 else draw(st.sampled_from([1, 2]))
        s = Conv(draw(st.integers(1, 4)), 3, stride, bias=False)
        if draw(st.booleans()):
            s = s >> Activation("relu")
        stages.append(s)
        a = draw(st.integers(1, 3))
        h = Conv(a * sum(parts), draw(st.sampled_from([1, 3])))
        if draw(st.booleans()):
            h = Conv(None, 3, groups=0, bias=False) >> h
        heads.append(h)
    size = (draw(st.integers(4, 10)), draw(st.integers(4, 10)))
    return multibox(stages, heads, parts), Field(draw(st.integers(1, 4))), size


@register_family("multibox", examples=_examples)
@dataclass(frozen=True, repr=False)
class MultiBox(Term):
    stages: Tuple[Term, ...]
    heads: Tuple[Term, ...]
    parts: Tuple[int, ...] = (4, 2)

    def __post_init__(self):
        if len(self.stages) != len(self.heads) or not self.stages:
            raise ValueError(f"multibox needs one head per stage and at least one stage; got "
                             f"{len(self.stages)} stages and {len(self.heads)} heads")
        if not self.parts or any(not isinstance(p, int) or p < 1 for p in self.parts):
            raise ValueError(f"multibox parts must be positive ints; got {self.parts!r}")

    def children(self):
        return tuple(self.stages) + tuple(self.heads)

    def with_children(self, children):
        n = len(self.stages)
        return MultiBox(tuple(children[:n]), tuple(children[n:]), self.parts)

    def _types(self, t: Field):
        """``[(stage_in, stage_out, anchors)]`` per level (checked)."""
        if t.rank != 2 or t.is_complex:
            self.reject("a real rank-2 field", t)
        out, k = [], sum(self.parts)
        for i, (stage, head) in enumerate(zip(self.stages, self.heads)):
            try:
                o = stage._infer(t)
            except TypeMismatch as e:
                raise e.at(f"stage{i}") from None
            try:
                h = head._infer(o)
            except TypeMismatch as e:
                raise e.at(f"head{i}") from None
            if o.rank != 2 or h.rank != 2 or h.is_complex or not isinstance(h.channels, int) or h.channels % k:
                raise TypeMismatch(f"head{i} must give a real rank-2 field whose channels are a multiple of "
                                   f"sum(parts) = {k}; got {h!r}", op="multibox")
            out.append((t, o, h.channels // k))
            t = o
        return out

    def anchors(self, t: Field) -> Tuple[int, ...]:
        """Default boxes per pixel at each level."""
        return tuple(a for _, _, a in self._types(t))

    def level_sizes(self, t: Field, size):
        """The spatial size of each level's feature map."""
        sizes = []
        for stage, (ti, _, _) in zip(self.stages, self._types(t)):
            size = stage.out_size(ti, size)
            sizes.append(size)
        return sizes

    def out_type(self, t):
        self._types(t)
        return Field(sum(self.parts), rank=1)

    def out_size(self, t, size):
        if size is None:
            return None
        total = 0
        for (h, w), a in zip(self.level_sizes(t, size), self.anchors(t)):
            total = total + h * w * a
        return (total,)

    def cost(self, t, size):
        total = Cost()
        for stage, head, (ti, to, _) in zip(self.stages, self.heads, self._types(t)):
            total = total + stage.cost(ti, size)
            size = stage.out_size(ti, size) if size is not None else None
            total = total + head.cost(to, size)
        return total

    @property
    def linear(self):
        return all(c.linear for c in self.children())

    def lipschitz_bound(self, m, size=None):
        acc, prod = 0.0, 1.0
        for stage, head in zip(m.stages, m.heads):
            ls = lipschitz_of(stage, size)
            size = stage.term.out_size(stage.in_type, size) if size is not None else None
            lh = lipschitz_of(head, size)
            if ls is None or lh is None:
                return None
            prod *= ls
            acc += (lh * prod) ** 2
        return math.sqrt(acc)

    def _bind(self, t, path):
        types = self._types(t)
        stages = [s._bind(ti, _join(path, f"stage{i}")) for i, (s, (ti, _, _)) in enumerate(zip(self.stages, types))]
        heads = [h._bind(to, _join(path, f"head{i}")) for i, (h, (_, to, _)) in enumerate(zip(self.heads, types))]
        mod = MultiBoxModule(stages, heads, self.parts, tuple(a for _, _, a in types))
        return attach(mod, self, t, Field(sum(self.parts), rank=1), path)

    def __repr__(self):
        return f"multibox({list(self.stages)!r}, {list(self.heads)!r}, parts={self.parts!r})"


@op("multibox")
def multibox(stages: Sequence[Term], heads: Sequence[Term], parts: Sequence[int] = (4, 2)) -> MultiBox:
    """Heads on a chain of stages, flattened to one rank-1 field of default-box predictions.

    >>> from operad import ops, Field
    >>> t = ops.multibox([ops.conv(8, stride=2), ops.conv(8, stride=2)], [ops.conv(2 * 6), ops.conv(3 * 6)], (4, 2))
    >>> t.bind(Field(3)).out_type, t.out_size(Field(3), (16, 16))
    (Field(6, rank=1), (176,))
    """
    stages, heads = tuple(stages), tuple(heads)
    for x in stages + heads:
        if not isinstance(x, Term):
            raise TypeError(f"ops.multibox takes terms; got {type(x).__name__}")
    return MultiBox(stages, heads, tuple(int(p) for p in parts))
