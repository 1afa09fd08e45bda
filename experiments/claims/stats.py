"""Grading statistics: Student-t quantiles, paired differences with a 95%
confidence interval, and the verdict rule.

>>> round(t_quantile(0.975, 2), 3)
4.303
>>> g = paired([0.52, 0.53, 0.54], [0.50, 0.50, 0.50], "greater")
>>> g["verdict"], round(g["diff_mean"], 4)
('reproduced', 0.03)
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

__all__ = ["t_quantile", "mean_std", "interval", "paired", "one_sample", "verdict", "DIRECTIONS"]

DIRECTIONS = ("greater", "less", "match", "noninferior")


def _t_cdf(t: float, df: float) -> float:
    """Student-t CDF through the regularised incomplete beta function (continued fraction)."""
    x = df / (df + t * t)
    ib = _betainc(df / 2.0, 0.5, x)
    return 1.0 - 0.5 * ib if t >= 0 else 0.5 * ib


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):  # symmetry for convergence
        return 1.0 - _betainc(b, a, 1.0 - x)
    # Lentz's continued fraction
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return front * h / a


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF).

    >>> round(t_quantile(0.975, 1), 3), round(t_quantile(0.975, 30), 3)
    (12.706, 2.042)
    """
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_std(xs: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    xs = [float(x) for x in xs]
    n = len(xs)
    m = sum(xs) / n if n else float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"mean": m, "std": sd, "n": n}


def interval(xs: Sequence[float], level: float = 0.95) -> Dict[str, float]:
    """Mean of ``xs`` with a two-sided t confidence interval (``lo``/``hi`` are nan for n < 2)."""
    s = mean_std(xs)
    n = s["n"]
    if n < 2:
        return {**s, "lo": float("nan"), "hi": float("nan")}
    half = t_quantile(0.5 + level / 2.0, n - 1) * s["std"] / math.sqrt(n)
    return {**s, "lo": s["mean"] - half, "hi": s["mean"] + half}


def verdict(lo: float, hi: float, direction: str, margin: float = 0.0) -> str:
    """``reproduced`` / ``contradicted`` / ``inconclusive`` from an interval on
    (subject - baseline). ``greater``/``less``: the interval excludes 0 on the
    claimed/opposite side. ``match``: the interval lies within +-margin /
    entirely outside it. ``noninferior``: lo > -margin / hi < -margin.

    >>> verdict(0.01, 0.03, "greater"), verdict(-0.03, -0.01, "greater"), verdict(-0.01, 0.02, "greater")
    ('reproduced', 'contradicted', 'inconclusive')
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS}")
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if direction == "greater":
        return "reproduced" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    if direction == "less":
        return "reproduced" if hi < 0 else "contradicted" if lo > 0 else "inconclusive"
    if direction == "match":
        if -margin <= lo and hi <= margin:
            return "reproduced"
        return "contradicted" if hi < -margin or lo > margin else "inconclusive"
    return "reproduced" if lo > -margin else "contradicted" if hi < -margin else "inconclusive"


def paired(subject: Sequence[float], baseline: Sequence[float], direction: str, margin: float = 0.0,
           level: float = 0.95) -> Dict[str, object]:
    """Grade per-seed values of a subject arm against a baseline arm, paired by seed."""
    if len(subject) != len(baseline):
        raise ValueError(f"paired seeds differ in number: {len(subject)} vs {len(baseline)}")
    d = [float(a) - float(b) for a, b in zip(subject, baseline)]
    iv = interval(d, level)
    return {"diffs": d, "diff_mean": iv["mean"], "diff_std": iv["std"], "ci": [iv["lo"], iv["hi"]],
            "level": level, "direction": direction, "margin": margin,
            "verdict": verdict(iv["lo"], iv["hi"], direction, margin)}


def one_sample(values: Sequence[float], reference: float, direction: str, margin: float = 0.0,
               level: float = 0.95) -> Dict[str, object]:
    """Grade per-seed measurements against a fixed reference (e.g. a speed-up against 1)."""
    return paired(list(values), [reference] * len(values), direction, margin, level)


