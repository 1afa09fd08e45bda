"""PDE steps built on operators: ``pde_step``, the paper's ``nonlocal_block`` and a
``parabolic`` layer.

``ops.pde_step(L, h)`` is one explicit Euler step ``x <- x - h L(x)`` of the diffusion
equation ``x' = -L x`` for a symmetric positive semi-definite operator L. Its Jacobian
``I - h L`` has eigenvalues ``1 - h mu`` for the eigenvalues ``mu`` of L in
``[0, lambda_max]``, so the step is non-expansive exactly when ``h lambda_max <= 2``
(:func:`operad.theory.pide.euler_condition`; checked by :func:`operad.verify.stability`).

``ops.nonlocal_block(F, h)`` is the paper's two-stage block: a 1x1 convolution, batch norm
and ReLU, then the diffusion step with the nonlocal operator F (``x + h F(x)`` for an
operator in the ``+Delta`` convention such as ``weighted_laplacian``, ``x - h F(x)`` for
one in the ``(-Delta)^s`` convention): in both cases a forward-Euler step of diffusion.

``ops.parabolic(L=None, h, alpha)`` is ``x <- x - h (K^T sigma(K x + b) + alpha L x)`` with one
convolution K and its exact adjoint K^T (shared weights), sigma = ReLU or tanh: a step of a
parabolic PDE, stable when ``h (||K||^2 + alpha lambda_max(L)) <= 2``.

    >>> from operad import ops, Field
    >>> step = ops.pde_step(ops.fractional_laplacian(0.5), h=0.2)
    >>> step.bind(Field(4)).out_type
    Field(4)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .algebra.util import check_float, spectral_norm
from .algebra.combinators import _PROBES, lipschitz_of
from .algebra.field import Field, TypeMismatch
from .algebra.term import Cost, Term, _join, attach, op, register_family

__all__ = ["PdeStep", "Parabolic", "pde_step", "nonlocal_block", "parabolic"]


def _spectrum(m: nn.Module, size):
    fn = getattr(m.term, "spectrum", None)
    return None if fn is None else fn(m, size)


def _check_keeps(term: Term, t: Field, who: str) -> None:
    try:
        out = term._infer(t)
    except TypeMismatch as e:
        raise e.at("L") from None
    if out != t:
        raise TypeMismatch(f"expects an operator L that keeps the field (x - h L x); L maps {t!r} to {out!r}",
                           op=who)
    if t.rank == 2 and tuple(term.out_size(t, p) for p in _PROBES) != _PROBES:
        raise TypeMismatch("expects an operator L that keeps the spatial size", op=who)


class PdeStepModule(nn.Module):
    def __init__(self, L: nn.Module, h: float, sign: int):
        super().__init__()
        self.L = L
        self.h = h
        self.sign = sign

    def forward(self, x):
        return x + (self.sign * self.h) * self.L(x)


def _pde_examples(draw):
    from hypothesis import strategies as st
    from .nonlocal_ops import FeatureNonlocal, GridLaplacian
    c = draw(st.integers(1, 5))
    if draw(st.integers(0, 3)) == 0:
        L = FeatureNonlocal(draw(st.sampled_from(["weighted", "fractional"])), 0.5, False, "gaussian",
                            1.0, 1, "rows", None, 2, 0.5)
        c = max(c, 2)
    else:
        L = GridLaplacian(draw(st.sampled_from([0.5, 1.0])), draw(st.booleans()), False, True,
                          draw(st.booleans()))
    sign = 1 if getattr(L, "definite", "positive") == "negative" else -1
    return PdeStep(L, draw(st.floats(0.01, 0.5)), sign), Field(c), (draw(st.integers(4, 10)),
                                                                   draw(st.integers(4, 10)))


@register_family("pde_step", examples=_pde_examples)
@dataclass(frozen=True, repr=False)
class PdeStep(Term):
    """``x + sign * h * L(x)``; ``sign = -1`` (the default): the Euler step of ``x' = -L x``.

    Lipschitz bound: for an operator that states an eigenvalue interval ``[lo, hi]`` (it is
    symmetric, :meth:`GridLaplacian.spectrum`) the exact ``max |1 + sign h mu|`` over it;
    otherwise ``1 + h Lip(L)``.
    """

    L: Term
    h: float = 0.1
    sign: int = -1

    def __post_init__(self):
        if not isinstance(self.L, Term):
            raise TypeError(f"pde_step takes an operator term L; got {type(self.L).__name__}")
        check_float("pde_step", "h", self.h, 0, lo_open=True)
        if self.sign not in (-1, 1):
            raise ValueError(f"pde_step sign must be -1 or +1; got {self.sign!r}")

    def children(self):
        return (self.L,)

    def with_children(self, children):
        return PdeStep(children[0], self.h, self.sign)

    def out_type(self, t):
        _check_keeps(self.L, t, "pde_step")
        return t

    def cost(self, t, size):
        return self.L.cost(t, size)

    def equivariance(self, t):
        return self.L.equivariance(t)

    @property
    def linear(self):
        return self.L.linear

    def lipschitz_bound(self, m, size=None):
        sp = _spectrum(m.L, size)
        if sp is not None:
            lo, hi = sp
            return max(abs(1 + self.sign * self.h * lo), abs(1 + self.sign * self.h * hi))
        lf = lipschitz_of(m.L, size)
        return None if lf is None else 1 + self.h * lf

    def condition(self, m: nn.Module, size=None):
        """``(h * lambda_max, h * lambda_max <= 2)`` from L's stated spectrum (None if it states none)."""
        sp = _spectrum(m.L, size)
        if sp is None or self.sign != -1 or sp[0] < 0:
            return None
        return self.h * sp[1], self.h * sp[1] <= 2

    def _bind(self, t, path):
        out = self._infer(t)
        L = self.L._bind(t, _join(path, "L"))
        return attach(PdeStepModule(L, float(self.h), self.sign), self, t, out, path)

    def __repr__(self):
        s = "" if self.sign == -1 else ", sign=1"
        return f"pde_step({self.L!r}, h={self.h!r}{s})"


@op("pde_step")
def pde_step(L: Term, h: float = 0.1) -> PdeStep:
    """One explicit Euler step ``x - h L(x)`` of the diffusion equation for a positive
    semi-definite operator L (stable exactly when ``h lambda_max(L) <= 2``).

    >>> from operad import ops, Field
    >>> ops.pde_step(ops.fractional_laplacian(1.0), h=0.25)
    pde_step(grid_laplacian(1.0), h=0.25)
    """
    return PdeStep(L, h, -1)


@op("pde_step")
def nonlocal_block(F: Optional[Term] = None, width=None, h: float = 0.1) -> Term:
    """The paper's two-stage block: ``pointwise(width) >> bn >> relu``, then the diffusion step
    with the nonlocal operator F (default: the grid ``fractional_laplacian(0.5)``), i.e.
    ``x + h F(x)`` for ``weighted_laplacian`` (a ``+Delta``) and ``x - h F(x)`` for the
    fractional Laplacians (``(-Delta)^s``).

    >>> from operad import ops, Field
    >>> ops.nonlocal_block(ops.weighted_laplacian(pool=2), 16).bind(Field(8)).out_type
    Field(16)
    """
    from .conv import pointwise
    from .norm import bn
    from .activation import Activation
    if F is None:
        from .nonlocal_ops import GridLaplacian
        F = GridLaplacian(0.5)
    sign = 1 if getattr(F, "definite", "positive") == "negative" else -1
    return pointwise(width, bias=False) >> bn() >> Activation("relu") >> PdeStep(F, h, sign)


# ---------------------------------------------------------------------------
# Parabolic layer
# ---------------------------------------------------------------------------
class ParabolicModule(nn.Module):
    def __init__(self, channels: int, k: int, h: float, alpha: float, act: str, padding_mode: str,
                 L: Optional[nn.Module]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, channels, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        with torch.no_grad():
            self.weight.mul_(0.5)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.k, self.h, self.alpha, self.act, self.padding_mode = k, h, alpha, act, padding_mode
        self.L = L

    def _pad(self, x):
        p = self.k // 2
        return F.pad(x, (p, p, p, p), mode="circular")

    def forward(self, x):
        p = self.k // 2
        if self.padding_mode == "circular":
            z = F.conv2d(self._pad(x), self.weight, self.bias)
        else:
            z = F.conv2d(x, self.weight, self.bias, padding=p)
        a = torch.relu(z) if self.act == "relu" else torch.tanh(z)
        if self.padding_mode == "circular":  # adjoint of a circular conv: circular corr. with the flipped kernel
            kt = self.weight.transpose(0, 1).flip(-1, -2)
            g = F.conv2d(self._pad(a), kt)
        else:
            g = F.conv_transpose2d(a, self.weight, padding=p)
        if self.L is not None:
            g = g + self.alpha * self.L(x)
        return x - self.h * g


def _parabolic_examples(draw):
    from hypothesis import strategies as st
    from .nonlocal_ops import GridLaplacian
    c = draw(st.integers(1, 5))
    L = GridLaplacian(draw(st.sampled_from([0.5, 1.0]))) if draw(st.booleans()) else None
    term = Parabolic(L, draw(st.floats(0.01, 0.5)), draw(st.sampled_from([0.0, 0.5, 1.0])),
                     draw(st.sampled_from([1, 3])), draw(st.sampled_from(["relu", "tanh"])),
                     draw(st.sampled_from(["circular", "zeros"])))
    return term, Field(c), (draw(st.integers(4, 10)), draw(st.integers(4, 10)))


@register_family("parabolic", examples=_parabolic_examples)
@dataclass(frozen=True, repr=False)
class Parabolic(Term):
    """``x - h (K^T sigma(K x + b) + alpha L x)``: K a k x k convolution C -> C, K^T its adjoint.

    The Jacobian is ``I - h (K^T D K + alpha L)`` with D diagonal in [0, 1] (sigma = ReLU or
    tanh), symmetric; with ``alpha >= 0`` and L positive semi-definite its eigenvalues lie in
    ``[1 - h (||K||^2 + alpha lambda_max), 1]``: the Lipschitz bound is
    ``max(1, |1 - h (||K||^2 + alpha lambda_max)|)``, ``||K|| <= k * ||W||_2``.
    """

    L: Optional[Term] = None
    h: float = 0.1
    alpha: float = 1.0
    k: int = 3
    act: str = "relu"
    padding_mode: str = "circular"

    def __post_init__(self):
        if self.act not in ("relu", "tanh"):
            raise ValueError(f"parabolic act must be 'relu' or 'tanh' (monotone, slope <= 1); got {self.act!r}")
        if self.padding_mode not in ("circular", "zeros"):
            raise ValueError(f"parabolic padding_mode must be 'circular' or 'zeros'; got {self.padding_mode!r}")
        if not isinstance(self.k, int) or self.k < 1 or self.k % 2 == 0:
            raise ValueError(f"parabolic k must be an odd positive int; got {self.k!r}")
        check_float("parabolic", "h", self.h, 0, lo_open=True)
        check_float("parabolic", "alpha", self.alpha, 0)

    def children(self):
        return () if self.L is None else (self.L,)

    def with_children(self, children):
        return Parabolic(children[0] if children else None, self.h, self.alpha, self.k, self.act,
                         self.padding_mode)

    def out_type(self, t):
        self.require_real(t)
        if self.L is not None:
            _check_keeps(self.L, t, "parabolic")
        return t

    def cost(self, t, size):
        c = t.channels
        own = Cost(c * c * self.k * self.k + c, 2 * c * c * self.k * self.k * size[0] * size[1])
        return own if self.L is None else own + self.L.cost(t, size)

    def equivariance(self, t):
        eq = frozenset({"shift"}) if self.padding_mode == "circular" else frozenset()
        if self.k == 1:
            eq = frozenset({"shift", "rot90", "flip"})  # a 1x1 conv needs no padding
        if self.L is not None:
            eq = eq & self.L.equivariance(t)
        return eq

    def lipschitz_bound(self, m, size=None):
        knorm2 = (spectral_norm(m.weight) * self.k) ** 2
        if m.L is None:
            return max(1.0, abs(1 - self.h * knorm2))
        sp = _spectrum(m.L, size)
        if sp is not None and sp[0] >= 0 and self.alpha >= 0:
            return max(1.0, abs(1 - self.h * (knorm2 + self.alpha * sp[1])))
        lf = lipschitz_of(m.L, size)
        return None if lf is None else 1 + self.h * (knorm2 + abs(self.alpha) * lf)

    def _bind(self, t, path):
        out = self._infer(t)
        L = None if self.L is None else self.L._bind(t, _join(path, "L"))
        m = ParabolicModule(t.channels, self.k, float(self.h), float(self.alpha), self.act, self.padding_mode, L)
        return attach(m, self, t, out, path)


@op("parabolic")
def parabolic(L: Optional[Term] = None, h: float = 0.1, alpha: float = 1.0, k: int = 3, act: str = "relu",
              padding_mode: str = "circular") -> Parabolic:
    """A parabolic layer ``x - h (K^T sigma(K x + b) + alpha L x)`` (K a k x k conv, K^T its adjoint).

    >>> from operad import ops, Field
    >>> ops.parabolic(ops.fractional_laplacian(0.5), h=0.1).bind(Field(4)).weight.shape
    torch.Size([4, 4, 3, 3])
    """
    return Parabolic(L, h, alpha, k, act, padding_mode)
