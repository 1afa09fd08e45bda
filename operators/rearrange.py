"""einops patterns as typed operators.

``ops.rearrange("b (g c) h w -> b (c g) h w", g=4)`` is a channel shuffle;
``ops.rearrange("b c (h p) (w q) -> b (c p q) h w", p=2, q=2)`` is
space-to-depth. The output field is inferred from the pattern when the term is
composed with an input (symbolic channel counts included); the pattern is
parsed once and cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Tuple

import einops
import sympy
from einops.parsing import ParsedExpression
from torch import nn

from .algebra.field import Field, TypeMismatch
from .algebra.term import ALL_TRANSFORMS, Term, op, register_family

__all__ = ["Rearrange", "rearrange"]


@lru_cache(maxsize=256)
def _parse(pattern: str) -> Tuple[list, list]:
    if "->" not in pattern:
        raise ValueError(f"rearrange pattern needs '->': {pattern!r}")
    left, right = (ParsedExpression(s.strip()) for s in pattern.split("->"))
    if left.has_ellipsis or right.has_ellipsis:
        raise ValueError(f"rearrange patterns with '...' are not typed; name every axis: {pattern!r}")
    if left.identifiers != right.identifiers:
        raise ValueError(f"rearrange pattern must use the same axes on both sides "
                         f"(left {sorted(left.identifiers)}, right {sorted(right.identifiers)}): {pattern!r}")
    for comp in (left.composition, right.composition):
        if any(isinstance(g, str) for g in comp) or any(not g for g in comp):
            raise ValueError(f"rearrange: anonymous or empty axes are not supported in {pattern!r}")
    return left.composition, right.composition


class _RearrangeModule(nn.Module):
    def __init__(self, pattern: str, sizes: Dict[str, int]):
        super().__init__()
        self.pattern = pattern
        self.sizes = dict(sizes)

    def forward(self, x):
        return einops.rearrange(x, self.pattern, **self.sizes)

    def extra_repr(self):
        return repr(self.pattern)


def _examples(draw):
    from hypothesis import strategies as st
    g = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    which = draw(st.sampled_from(["shuffle", "s2d", "d2s"]))
    if which == "shuffle":
        return rearrange("b (g c) h w -> b (c g) h w", g=g), Field(g * c), (5, 6)
    if which == "s2d":
        return rearrange("b c (h p) (w q) -> b (c p q) h w", p=2, q=2), Field(c), (4 * g, 6)
    return rearrange("b (c p q) h w -> b c (h p) (w q)", p=2, q=2), Field(4 * c), (3, 2 + g)


@register_family("rearrange", examples=_examples)
@dataclass(frozen=True, repr=False)
class Rearrange(Term):
    """A permutation of tensor entries described by an einops pattern (linear, 1-Lipschitz)."""

    pattern: str
    sizes: Tuple[Tuple[str, int], ...] = ()
    linear = True

    def __post_init__(self):
        left, right = _parse(self.pattern)
        if len(left) not in (2, 4) or len(right) not in (2, 4):
            raise ValueError(f"rearrange maps (b, c, h, w) or (b, c) tensors; got {self.pattern!r}")
        unknown = set(dict(self.sizes)) - {a for g in left for a in g}
        if unknown:
            raise ValueError(f"rearrange got sizes for axes {sorted(unknown)} that {self.pattern!r} does not use")

    def _solve(self, t: Field, size=None) -> Dict[str, object]:
        left, right = _parse(self.pattern)
        dims = [None, t.tensor_channels] + (list(size) if size is not None else [None, None])
        if len(left) != 2 + t.rank:
            raise TypeMismatch(f"expects a rank-{len(left) - 2} field for pattern {self.pattern!r}; got {t!r}",
                               op="rearrange")
        known: Dict[str, object] = dict(self.sizes)
        for group, dim in zip(left, dims):
            missing = [a for a in group if a not in known]
            if dim is None:
                continue
            prod = 1
            for a in group:
                if a in known:
                    prod *= known[a]
            if len(missing) > 1:
                raise ValueError(f"rearrange {self.pattern!r}: give sizes for all but one of {missing}")
            if missing:
                val = dim / prod if not isinstance(dim, int) else dim // prod
                if isinstance(dim, int) and dim % prod:
                    raise TypeMismatch(f"expects an axis of size divisible by {prod} for {group} in "
                                       f"{self.pattern!r}; got {dim} ({t!r})", op="rearrange")
                known[missing[0]] = val
            elif isinstance(dim, int) and prod != dim:
                raise TypeMismatch(f"expects axis {group} of size {prod}; got {dim} ({t!r})", op="rearrange")
        return known

    def _out_dim(self, group, known):
        out = 1
        for a in group:
            if a not in known:
                return None
            out *= known[a]
        return out

    def out_type(self, t):
        if t.is_complex:
            self.reject("a real field (a complex field's interleaved parts would be scrambled)", t)
        known = self._solve(t)
        left, right = _parse(self.pattern)
        c = self._out_dim(right[1], known)
        if c is None:
            raise TypeMismatch(f"cannot infer output channels of {self.pattern!r} from {t!r} alone "
                               f"(the channel axis mixes spatial axes; give their sizes)", op="rearrange")
        return Field(sympy.simplify(c) if isinstance(c, sympy.Basic) else int(c), rank=len(right) - 2)

    def out_size(self, t, size):
        left, right = _parse(self.pattern)
        if len(right) == 2:
            return None
        known = self._solve(t, size)
        return tuple(self._out_dim(g, known) for g in right[2:])

    def equivariance(self, t):
        left, right = _parse(self.pattern)
        if len(left) == 2 or left[2:] == right[2:] and all(len(g) == 1 for g in left[2:]):
            return ALL_TRANSFORMS
        return frozenset()

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return _RearrangeModule(self.pattern, dict(self.sizes))

    def __repr__(self):
        extra = "".join(f", {k}={v}" for k, v in self.sizes)
        return f"rearrange({self.pattern!r}{extra})"


@op("rearrange")
def rearrange(pattern: str, **sizes: int) -> Rearrange:
    """An einops rearrangement as a typed operator.

    >>> from operad import ops, Field
    >>> ops.rearrange("b (g c) h w -> b (c g) h w", g=4).out_type(Field(16))
    Field(16)
    >>> ops.rearrange("b c (h p) (w q) -> b (c p q) h w", p=2, q=2).out_type(Field(3))
    Field(12)
    """
    return Rearrange(pattern, tuple(sorted(sizes.items())))
