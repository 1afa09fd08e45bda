"""Shift stability: how much a block's output moves under small input translations.

Equivariance checks (``verify.equivariance``) shift by multiples of the
stride, where a periodic block is exactly equivariant. Shift *stability* asks
what happens between those: translate the input by 1 or 2 pixels, which after
the block's own down-sampling is a sub-sample shift of the output, and
measure the relative change of the output. A max-pooled real filter bank
(RMax) aliases and changes a lot; the modulus of analytic filters (CMod)
changes little (Leterme et al.)::

    >>> import torch
    >>> from operad import ops, Field, verify
    >>> m = ops.cmod(8, levels=2).bind(Field(3))
    >>> rep = verify.shift_stability(m, torch.randn(2, 3, 32, 32))
    >>> 0 <= rep.measured < 1
    True
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["shift_stability", "small_shifts"]


def small_shifts(radii: Iterable[int] = (1, 2)) -> Tuple[Tuple[int, int], ...]:
    """Every shift ``(dy, dx)`` with ``max(|dy|, |dx|)`` in ``radii`` (8 at radius 1, 16 at 2)."""
    out = []
    for r in radii:
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if max(abs(dy), abs(dx)) == r:
                    out.append((dy, dx))
    return tuple(out)


def shift_stability(module: nn.Module, x: torch.Tensor, shifts: Optional[Sequence[Tuple[int, int]]] = None,
                    tol: Optional[float] = None):
    """Mean relative output change ``||f(T x) - f(x)|| / ||f(x)||`` over circular
    input shifts T (default: every 1- and 2-pixel shift, see :func:`small_shifts`),
    per sample then averaged, in eval mode.

    Returns a :class:`operad.verify.Report` whose ``measured`` (and ``error``)
    is that mean; ``ok`` is ``measured <= tol`` when ``tol`` is given, else None.
    """
    from .verify import Report, _eval

    shifts = tuple(shifts) if shifts is not None else small_shifts()
    if not shifts:
        raise ValueError("shift_stability needs at least one shift")
    if x.dim() != 4:
        raise ValueError(f"shift_stability needs a batch of images (B, C, H, W); got shape {tuple(x.shape)}")
    errs = []
    with _eval(module), torch.no_grad():
        y = module(x).flatten(1)
        den = y.norm(dim=1).clamp_min(1e-12)
        for dy, dx in shifts:
            ys = module(torch.roll(x, (dy, dx), dims=(-2, -1))).flatten(1)
            errs.append((ys - y).norm(dim=1) / den)
    err = float(torch.stack(errs).mean())
    detail = f"{len(shifts)} shifts, mean relative change"
    rep = Report("shift_stability", err, tol, None if tol is None else err <= tol, detail)
    rep.error = err
    rep.per_shift = {s: float(e.mean()) for s, e in zip(shifts, errs)}
    return rep
