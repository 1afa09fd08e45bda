"""Circular harmonics, symbolically: why a harmonic filter is rotation-equivariant
and how rotation orders add along a chain.

Conventions (those of :mod:`operad.operators.harmonic` and
:mod:`operad.theory.transforms`): polar angle ``phi`` counter-clockwise as
displayed, a rotation by ``theta`` acts on a field by ``f_theta(r, phi) =
e^{i k theta} f(r, phi - theta)`` for a stream of order ``k``, and a filter
responds by correlation, ``psi[f] = int W(r, phi) f(r, phi) r dr dphi`` at the
origin (every other point by translation).

For ``W = R(r) e^{i (m phi + beta)}`` and ``f = sum_n a_n(r) e^{i n phi}``::

    psi[f_theta] = e^{i k theta} int W(r, phi) f(r, phi - theta)
                 = e^{i k theta} int W(r, phi + theta) f(r, phi)     (phi -> phi + theta)
                 = e^{i (k + m) theta} psi[f]

>>> equivariance_identity(2)
True
>>> chain_order(1, (1, -1, 2))
3
"""
from __future__ import annotations

from typing import Iterable, Sequence, Tuple

import sympy as sp

__all__ = ["circular_harmonic", "response_ratio", "equivariance_identity", "chain_order", "chain_phase",
           "reachable_orders"]

r, phi, theta, beta = sp.symbols("r phi theta beta", real=True)


def circular_harmonic(m: int, R=None) -> sp.Expr:
    """``R(r) e^{i (m phi + beta)}`` with an undefined radial profile ``R``."""
    R = sp.Function("R")(r) if R is None else R
    return R * sp.exp(sp.I * (m * phi + beta))


def response_ratio(m: int, n: int, k: int = 0, sign: int = 1) -> sp.Expr:
    """``psi[f_theta] / psi[f]`` for a filter of order ``m`` and one angular mode
    ``e^{i n phi}`` of an order-``k`` input, integrated over ``phi`` in closed
    form (0 when the mode is orthogonal to the filter). ``sign=-1`` rotates the
    input the other way, a control that must *not* give ``e^{i (k+m) theta}``."""
    W = circular_harmonic(m, R=1)
    f_rot = sp.exp(sp.I * k * sign * theta) * sp.exp(sp.I * n * (phi - sign * theta))
    f = sp.exp(sp.I * n * phi)
    num = sp.integrate(sp.expand(W * f_rot), (phi, 0, 2 * sp.pi))
    den = sp.integrate(sp.expand(W * f), (phi, 0, 2 * sp.pi))
    if sp.simplify(den) == 0:
        return sp.Integer(0) if sp.simplify(num) == 0 else sp.nan
    return sp.simplify(num / den)


def equivariance_identity(m: int, k: int = 0, modes: Iterable[int] = range(-4, 5), sign: int = 1) -> bool:
    """True when, for every angular mode of the input that the filter sees,
    rotating the input by ``theta`` multiplies the response by ``e^{i (k + m) theta}``
    (derived by sympy, symbolic in ``theta`` and ``beta``)."""
    target = sp.exp(sp.I * (k + m) * theta)
    seen = False
    for n in modes:
        ratio = response_ratio(m, n, k, sign)
        if ratio == 0:
            continue
        seen = True
        if sp.simplify(ratio - target) != 0:
            return False
    return seen


def chain_phase(k: int, filter_orders: Sequence[int]) -> sp.Expr:
    """The phase a rotation by ``theta`` puts on the output of a chain of harmonic
    filters of ``filter_orders`` fed an order-``k`` stream (point-wise magnitude
    maps in between add nothing): ``e^{i k theta} prod_j e^{i m_j theta}``."""
    ph = sp.exp(sp.I * k * theta)
    for m in filter_orders:
        ph = ph * sp.exp(sp.I * m * theta)
    return sp.powsimp(sp.simplify(ph))


def chain_order(k: int, filter_orders: Sequence[int]) -> int:
    """The rotation order at the end of a chain, read off :func:`chain_phase`
    (it is ``k + sum(filter_orders)``)."""
    ph = chain_phase(k, filter_orders)
    order = sp.simplify(sp.log(ph).expand(force=True) / (sp.I * theta))
    return int(order)


def reachable_orders(in_orders: Sequence[int], filter_orders: Sequence[int]) -> Tuple[int, ...]:
    """Orders one harmonic layer can produce from ``in_orders`` with ``filter_orders``."""
    return tuple(sorted({k + m for k in in_orders for m in filter_orders}))
