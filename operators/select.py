"""Attention-weighted branches: ``select(a, b, ...)``, and the selective-kernel
unit of SKNet (Li et al. 2019) built on it.

``select(b_1, ..., b_n, attention=A)``: every branch sees x and gives a field
of C channels; U = sum_i b_i(x); s = global_pool(U); the attention term A maps
s (a rank-0 field of C channels) to n*C logits, a softmax across the n
branches turns them into weights a_i (per channel), and the output is
sum_i a_i * b_i(x). Without ``attention`` the SK default is used: FC to
``d = max(C / r, L)`` (no bias), BN, ReLU, and one FC per branch d -> C
(stored as one FC d -> n*C, which is the same map, the same parameters and the
same multiply-adds).

``sk(out, kernels=(3, 5), groups=32, r=16, L=32, stride=1)``: the SK unit; a
k x k branch is a 3x3 convolution with dilation (k - 1) / 2 (as in the paper),
each followed by BN and ReLU.

The output mixes branches with weights that depend on x, so no global
Lipschitz bound is stated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .activation import Activation
from .algebra.combinators import _BranchTerm, _branches
from .conv import Conv
from .algebra.field import Field, TypeMismatch
from .linear import Linear
from .norm import BatchNorm
from .pooling import GlobalPool
from .algebra.term import Term, _join, attach, op, register_family

__all__ = ["Select", "select", "sk"]


class SelectModule(nn.Module):
    def __init__(self, branches, attention):
        super().__init__()
        self.branch = nn.ModuleList(branches)
        self.attention = attention

    def forward(self, x):
        feats = torch.stack([b(x) for b in self.branch], 1)  # (B, n, C, H, W)
        s = feats.sum(1).mean(dim=(-2, -1))
        a = self.attention(s).unflatten(1, (feats.shape[1], feats.shape[2])).softmax(1)
        return (feats * a[..., None, None]).sum(1)


def _examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 6))
    out = draw(st.integers(1, 6))
    n = draw(st.integers(2, 3))
    stride = draw(st.sampled_from([1, 2]))
    size = (draw(st.integers(5, 10)), draw(st.integers(5, 10)))
    if draw(st.booleans()):
        return sk(out, kernels=(3, 5, 7)[:n], groups=1, r=2, L=2, stride=stride), Field(c), size
    branches = [Conv(out, draw(st.sampled_from([1, 3])), stride, bias=False) >> BatchNorm() for _ in range(n)]
    attn = None if draw(st.booleans()) else Linear(n * out)
    return select(*branches, attention=attn, r=2, L=draw(st.integers(1, 4))), Field(c), size


@register_family("select", examples=_examples)
@dataclass(frozen=True, repr=False)
class Select(_BranchTerm):
    items: Tuple[Term, ...]
    attention: Optional[Term] = None
    r: int = 16
    L: int = 32

    def with_children(self, children):
        n = len(self.items)
        att = children[n] if len(children) > n else self.attention
        return Select(tuple(children[:n]), att, self.r, self.L)

    def children(self):
        return self.items + ((self.attention,) if self.attention is not None else ())

    def _attention(self, c) -> Term:
        if self.attention is not None:
            return self.attention
        d = max(c // self.r, self.L)
        return (Linear(d, bias=False) >> BatchNorm() >> Activation("relu") >> Linear(len(self.items) * c))

    def out_type(self, t):
        types = self._branch_types(t)
        for i, o in enumerate(types):
            if o != types[0] or o.rank != 2 or o.is_complex:
                raise TypeMismatch(f"expects real rank-2 branches that produce one field; branch[0] gives "
                                   f"{types[0]!r}, branch[{i}] gives {o!r}", op="select")
        c = types[0].channels
        want = Field(len(self.items) * c, rank=0)
        try:
            got = self._attention(c)._infer(Field(c, rank=0))
        except TypeMismatch as e:
            raise e.at("attention") from None
        if got != want:
            raise TypeMismatch(f"expects an attention term mapping Field({c}, rank=0) to {want!r} "
                               f"(one logit per branch and channel); got {got!r}", op="select")
        return types[0]

    def cost(self, t, size):
        total = super().cost(t, size)
        c = self.items[0]._infer(t).channels
        return total + self._attention(c).cost(Field(c, rank=0), None)

    def equivariance(self, t):
        return super().equivariance(t) & frozenset({"shift", "rot90", "flip"})

    def lipschitz_bound(self, m, size=None):
        return None  # weights depend on x

    def _bind(self, t, path):
        out = self._infer(t)
        branches = [b._bind(t, _join(path, f"branch[{i}]")) for i, b in enumerate(self.items)]
        att = self._attention(out.channels)._bind(Field(out.channels, rank=0), _join(path, "attention"))
        return attach(SelectModule(branches, att), self, t, out, path)

    def __repr__(self):
        extra = f", attention={self.attention!r}" if self.attention is not None else f", r={self.r}, L={self.L}"
        return f"select({', '.join(map(repr, self.items))}{extra})"


@op("select")
def select(*branches: Term, attention: Optional[Term] = None, r: int = 16, L: int = 32) -> Select:
    """Attention-weighted sum of branches (softmax across branches, per channel).

    >>> from operad import ops, Field
    >>> ops.select(ops.conv(8), ops.conv(8, k=5), r=2, L=4).bind(Field(3)).out_type
    Field(8)
    """
    return Select(_branches(branches, "select", 2), attention, r, L)


@op("select")
def sk(out: int, kernels: Sequence[int] = (3, 5), groups: int = 32, r: int = 16, L: int = 32,
       stride: int = 1) -> Select:
    """The SK unit: branches of grouped 3x3 convolutions dilated to k x k receptive
    fields (+ BN + ReLU), fused by ``select``.

    >>> from operad import ops, Field
    >>> ops.sk(64, groups=8).bind(Field(64)).out_type
    Field(64)
    """
    branches = []
    for k in kernels:
        if k % 2 == 0 or k < 3:
            raise ValueError(f"sk kernels must be odd and >= 3; got {k}")
        d = (k - 1) // 2
        branches.append(Conv(out, 3, stride, dilation=d, groups=groups, bias=False) >> BatchNorm()
                        >> Activation("relu"))
    return Select(tuple(branches), None, r, L)
