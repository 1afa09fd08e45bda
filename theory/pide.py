"""Symbolic facts of PIDE networks (sympy): the constants of the fractional Laplacian
and its inverse, the symbol of the discrete Laplacian and its maximum, and the
explicit-Euler stability condition.

    >>> import sympy
    >>> from operad.theory import pide
    >>> pide.frac_const(2, sympy.Rational(1, 2))
    1/(2*pi)
    >>> pide.symbol_max(sympy.Symbol("s", positive=True))
    8**s
    >>> pide.euler_condition()
    h*lambda_max <= 2
"""
from __future__ import annotations

from typing import Optional

import sympy
from sympy import Abs, gamma, pi, sin, exp, I

__all__ = ["frac_const", "inv_frac_const", "stencil_symbol", "symbol_1d", "grid_symbol", "symbol_max",
           "min_nonzero_symbol", "euler_condition", "euler_amplification", "max_stable_step"]

s, n, h, mu, lam = sympy.symbols("s n h mu lambda_max", positive=True)
theta1, theta2 = sympy.symbols("theta1 theta2", real=True)


def frac_const(n=n, s=s):
    """``c(n, s) = 4^s Gamma(n/2 + s) / (pi^(n/2) |Gamma(-s)|)``: the constant that makes the
    singular integral ``c int (u(x) - u(y)) / |x - y|^(n+2s) dy`` have the symbol ``|xi|^(2s)``."""
    n, s = sympy.sympify(n), sympy.sympify(s)
    return sympy.simplify(4 ** s * gamma(n / 2 + s) / (pi ** (n / 2) * Abs(gamma(-s))))


def inv_frac_const(n=n, s=s):
    """``Gamma(n/2 - s) / (4^s pi^(n/2) Gamma(s))``: the Riesz-potential constant of ``(-Delta)^-s``."""
    n, s = sympy.sympify(n), sympy.sympify(s)
    return sympy.simplify(gamma(n / 2 - s) / (4 ** s * pi ** (n / 2) * gamma(s)))


def stencil_symbol():
    """The symbol of the 5-point ``-Delta_h`` (stencil 4 at the centre, -1 at the four neighbours):
    ``sum_offsets c exp(-i theta . offset) = 4 - 2 cos theta1 - 2 cos theta2``, which equals
    ``4 sin^2(theta1/2) + 4 sin^2(theta2/2)``."""
    stencil = {(0, 0): 4, (1, 0): -1, (-1, 0): -1, (0, 1): -1, (0, -1): -1}
    expr = sum(c * exp(-I * (theta1 * a + theta2 * b)) for (a, b), c in stencil.items())
    return sympy.simplify(sympy.expand_complex(expr).rewrite(sympy.cos))


def symbol_1d(k, N):
    """``4 sin^2(pi k / N)``: the eigenvalue of the periodic 1-D ``-D^2_h`` at frequency k."""
    return 4 * sin(pi * k / N) ** 2


def grid_symbol(k1, k2, N1, N2, s=s):
    """``(4 sin^2(pi k1/N1) + 4 sin^2(pi k2/N2))^s``: the eigenvalue of ``(-Delta_h)^s``."""
    return (symbol_1d(k1, N1) + symbol_1d(k2, N2)) ** s


def symbol_max(s=s, N1: Optional[int] = None, N2: Optional[int] = None):
    """The largest eigenvalue of ``(-Delta_h)^s``: ``8^s`` (attained at ``k = N/2`` when both sizes
    are even); with sizes given, the exact value ``max_k`` of the symbol on that grid."""
    if N1 is None:
        # sin^2 <= 1 in each term, with equality at theta = pi: max (4 + 4)^s, s > 0 keeps the order
        t = sympy.Symbol("t", real=True)
        m1 = sympy.maximum(4 * sin(t / 2) ** 2, t, sympy.Interval(0, 2 * pi))
        return sympy.powsimp((2 * m1) ** s)
    best = lambda N: max((symbol_1d(k, N) for k in range(N)), key=lambda e: float(e))
    return (best(N1) + best(N2)) ** s


def min_nonzero_symbol(N1: int, N2: int, s=s):
    """The smallest non-zero eigenvalue of ``(-Delta_h)^s`` on an N1 x N2 periodic grid:
    ``(4 sin^2(pi / max(N1, N2)))^s`` (the inverse's norm on mean-free inputs is its reciprocal)."""
    vals = [symbol_1d(k, N) for N in (N1, N2) if N > 1 for k in (1,)]
    return min(vals, key=lambda e: float(e)) ** s


def euler_amplification(h=h, mu=mu):
    """``1 - h mu``: the factor by which one explicit Euler step of ``x' = -L x`` multiplies an
    eigen-component of L with eigenvalue mu."""
    return 1 - h * mu


def euler_condition(h=h, lam=lam):
    """The explicit-Euler stability condition for symmetric PSD L with eigenvalues in ``[0, lambda_max]``:
    ``|1 - h mu| <= 1`` for all such mu, which sympy reduces to ``h lambda_max <= 2`` (the worst mu
    is lambda_max since ``1 - h mu <= 1`` always)."""
    x = sympy.Symbol("x", positive=True)  # x = h * mu
    sol = sympy.solve_univariate_inequality(Abs(1 - x) <= 1, x, relational=False)
    upper = sol.sup  # the set is (0, 2]
    return sympy.Le(h * lam, upper)


def max_stable_step(lam_max):
    """The largest stable explicit step size ``2 / lambda_max``."""
    return 2 / sympy.sympify(lam_max)
