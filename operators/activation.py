"""Point-wise activations: ``relu``, ``relu6``, ``gelu``, ``silu``, ``sigmoid``,
``tanh``, ``hardswish``, ``hardsigmoid``, ``leaky_relu``.

Each carries its exact Lipschitz constant (the supremum of its derivative),
whether its output is non-negative whatever the input (``relu``, ``relu6``,
``sigmoid``, ``hardsigmoid``), and whether it is the identity on non-negative
inputs (``relu``, ``leaky_relu``), which is what ``remove_residuals`` needs to
carry a block's input through it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .algebra.term import ALL_TRANSFORMS, POINTWISE, Term, op, register_family

__all__ = ["Activation", "ACTIVATIONS", "NONNEGATIVE", "IDENTITY_ON_NONNEGATIVE"]

# name -> (module factory, Lipschitz constant = sup |f'|)
ACTIVATIONS = {
    "relu": (nn.ReLU, 1.0),
    "relu6": (nn.ReLU6, 1.0),
    "gelu": (nn.GELU, 1.1289),       # Phi(x) + x phi(x) peaks at x = sqrt(2): 1.12880...
    "silu": (nn.SiLU, 1.0999),       # sigma(x)(1 + x(1 - sigma(x))) peaks at x = 2.3994: 1.09984...
    "sigmoid": (nn.Sigmoid, 0.25),
    "tanh": (nn.Tanh, 1.0),
    "hardswish": (nn.Hardswish, 1.5),  # (2x + 3) / 6 on [-3, 3]
    "hardsigmoid": (nn.Hardsigmoid, 1.0 / 6.0),
    "leaky_relu": (nn.LeakyReLU, 1.0),
}
#: activations whose output is >= 0 for every input
NONNEGATIVE = frozenset({"relu", "relu6", "sigmoid", "hardsigmoid"})
#: activations with f(x) = x for every x >= 0
IDENTITY_ON_NONNEGATIVE = frozenset({"relu", "leaky_relu"})


def _examples(draw):
    from hypothesis import strategies as st
    from .algebra.field import Field
    name = draw(st.sampled_from(sorted(ACTIVATIONS)))
    c = draw(st.integers(1, 6))
    rank = draw(st.sampled_from([2, 2, 0]))
    size = (draw(st.integers(4, 10)), draw(st.integers(4, 10))) if rank == 2 else None
    return Activation(name), Field(c, rank=rank), size


@register_family("activation", examples=_examples)
@dataclass(frozen=True, repr=False)
class Activation(Term):
    fn: str = "relu"

    def __post_init__(self):
        if self.fn not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.fn!r}; choose from {sorted(ACTIVATIONS)}")

    @property
    def family(self):
        return self.fn

    def out_type(self, t):
        return self.require_real(t, rank=None)

    def equivariance(self, t):
        return ALL_TRANSFORMS if t.rank == 0 else POINTWISE

    def lipschitz_bound(self, m, size=None):
        return ACTIVATIONS[self.fn][1]

    def nonnegative(self, t, input_nonnegative=False):
        return self.fn in NONNEGATIVE or (input_nonnegative and self.fn in IDENTITY_ON_NONNEGATIVE)

    @property
    def identity_on_nonnegative(self) -> bool:
        """``f(x) = x`` for ``x >= 0`` (ReLU, leaky ReLU; not ReLU6, which clips at 6)."""
        return self.fn in IDENTITY_ON_NONNEGATIVE

    def build(self, t):
        return ACTIVATIONS[self.fn][0]()

    def __repr__(self):
        return f"{self.fn}()"


def _make(name):
    def ctor() -> Activation:
        return Activation(name)
    ctor.__name__ = ctor.__qualname__ = name
    ctor.__module__ = __name__
    ctor.__doc__ = f"""The ``{name}`` activation, applied point-wise (Lipschitz constant {ACTIVATIONS[name][1]:.4g}).

    >>> from operad import ops
    >>> ops.{name}()
    {name}()
    """
    return op(name)(ctor)


for _name in ACTIVATIONS:
    globals()[_name] = _make(_name)
    __all__.append(_name)
