"""Macro terms: families defined by what they expand to.

A macro family states its hyper-parameters and an :meth:`Macro.expand` that
returns an ordinary expression for a given input field (the expansion may
depend on the input width, e.g. an inverted residual's hidden width or whether
it keeps a residual). Types, sizes, costs, equivariance and Lipschitz bounds
all follow from the expansion (and the output's sign), and binding binds the expansion, so the
property suite checks the family through it.

Sub-terms a macro holds as fields (an activation, a gate) are its
``children``, so ``substitute`` reaches inside: swapping ``relu6`` for
``gelu`` in a MobileNetV2 rewrites every inverted residual.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

from torch import nn

from .field import Field
from .term import Term, attach

__all__ = ["Macro"]


class Macro(Term):
    """Base of macro families: subclasses implement ``expand(t) -> Term``.

    ``_sub`` names the dataclass fields that hold sub-terms (children).
    """

    _sub: Tuple[str, ...] = ()
    keeps_bits = True  # the type its expansion infers

    def expand(self, t: Field) -> Term:  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self):
        return tuple(getattr(self, f) for f in self._sub if getattr(self, f) is not None)

    def with_children(self, children):
        kids = iter(children)
        changes = {f: next(kids) for f in self._sub if getattr(self, f) is not None}
        return dataclasses.replace(self, **changes)

    def out_type(self, t):
        return self.expand(t)._infer(t)

    def out_size(self, t, size):
        return self.expand(t).out_size(t, size)

    def cost(self, t, size):
        return self.expand(t).cost(t, size)

    def equivariance(self, t):
        return self.expand(t).equivariance(t)

    def nonnegative(self, t, input_nonnegative=False):
        return self.expand(t).nonnegative(t, input_nonnegative)

    def lipschitz_bound(self, m: nn.Module, size=None):
        return self.expand(m.in_type).lipschitz_bound(m, size)

    def _bind(self, t, path):
        out = self._infer(t)
        m = self.expand(t)._bind(t, path)
        return attach(m, self, t, out, path)
