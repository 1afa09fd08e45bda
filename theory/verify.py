"""Numerical verification of the algebra's claims.

Each check measures a figure on a bound module and compares it with what the
algebra claims for it, returning a :class:`Report`::

    >>> import torch
    >>> from operad import ops, Field, verify
    >>> m = (ops.conv(4, padding_mode="circular") >> ops.relu()).bind(Field(3))
    >>> verify.lipschitz(m, torch.randn(1, 3, 8, 8)).ok
    True
    >>> verify.equivariance(m, "shift", torch.randn(1, 3, 8, 8)).ok
    True
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp, vjp

from ..operators.algebra.combinators import lipschitz_of
from .cost import cost as _cost, count as _count
from .transforms import TRANSFORMS, act, disk_mask

__all__ = ["Report", "operator_norm", "lipschitz", "equivariance", "cost", "smooth_input", "run_all", "declared_lipschitz"]

DEFAULT_TOL = {"shift": 1e-4, "rot90": 1e-4, "flip": 1e-4, "rotation": 0.1}


@dataclass
class Report:
    """The outcome of one check: what was measured, what was claimed, the verdict.

    ``ok`` is True when the claim holds, False when it is violated, and None
    when nothing is claimed (no bound known, equivariance not declared).
    """

    check: str
    measured: Any
    claimed: Any
    ok: Optional[bool]
    detail: str = ""

    @property
    def verdict(self) -> str:
        return {True: "ok", False: "VIOLATED", None: "not claimed"}[self.ok]

    def __str__(self) -> str:
        m = f"{self.measured:.6g}" if isinstance(self.measured, float) else str(self.measured)
        c = f"{self.claimed:.6g}" if isinstance(self.claimed, float) else str(self.claimed)
        extra = f"  ({self.detail})" if self.detail else ""
        return f"{self.check:<22} measured {m:<14} claimed {c:<14} {self.verdict}{extra}"

    def __bool__(self) -> bool:
        return self.ok is not False


@contextmanager
def _eval(module: nn.Module):
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def operator_norm(f, x: torch.Tensor, iters: int = 100, seed: int = 0) -> float:
    """``||J_f(x)||_2`` by power iteration on ``J^T J`` with ``torch.func.jvp``/``vjp``
    (an estimate that converges to the norm from below)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    v = v / v.norm()
    _, vjp_fn = vjp(f, x)
    sigma = 0.0
    for _ in range(iters):
        _, jv = jvp(f, (x,), (v,))
        (u,) = vjp_fn(jv)
        u = u.detach()
        n = u.norm()
        if n == 0:
            return 0.0
        sigma = math.sqrt(n.item())
        v = u / n
    return sigma


def declared_lipschitz(module: nn.Module, size=None) -> Optional[float]:
    """The algebra's Lipschitz bound for a bound module (eval mode, per sample)."""
    return lipschitz_of(module, size)


def _size(x: torch.Tensor, module: nn.Module):
    return tuple(x.shape[-2:]) if module.in_type.rank == 2 else None


def lipschitz(module: nn.Module, x: torch.Tensor, iters: int = 50, seed: int = 0,
              rtol: float = 1e-3) -> Report:
    """Estimate the local Lipschitz constant at ``x`` (the largest singular value
    of the Jacobian) by power iteration on J^T J with ``torch.func.jvp``/``vjp``,
    and compare it with the algebra's bound.

    The estimate converges from below to ||J(x)||_2, which no valid Lipschitz
    bound can be below: ``ok`` is ``estimate <= bound * (1 + rtol)``.
    """
    with _eval(module):
        sigma = operator_norm(lambda inp: module(inp), x, iters, seed)
        bound = declared_lipschitz(module, _size(x, module))
    if bound is None:
        return Report("lipschitz", sigma, None, None, "no bound known")
    return Report("lipschitz", sigma, float(bound), sigma <= bound * (1 + rtol) + 1e-7,
                  f"power iteration, {iters} steps")


_PROBE = 720720  # divisible by every stride up to 16


def nominal_stride(term, t) -> Optional[tuple]:
    """The down-sampling factor per axis (e.g. (2, 2)); <1 for up-sampling; None for rank 0
    and for a fixed output size (adaptive pooling), where no stride relates the grids."""
    out = term.out_size(t, (_PROBE, _PROBE))
    if out is None or term.out_size(t, (2 * _PROBE, 2 * _PROBE)) == out:
        return None
    return tuple(_PROBE / o for o in out)


def smooth_input(shape: Sequence[int], seed: int = 0, dtype=torch.float32, scale: int = 4) -> torch.Tensor:
    """Random smooth images (bicubic up-sampling of coarse noise): inputs for
    the ``rotation`` check, where interpolation error must stay small."""
    gen = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    coarse = torch.randn(b, c, max(2, h // scale) + 2, max(2, w // scale) + 2, generator=gen, dtype=torch.float64)
    fine = F.interpolate(coarse, size=(h + 2 * scale, w + 2 * scale), mode="bicubic", align_corners=False)
    return fine[..., scale:scale + h, scale:scale + w].to(dtype).contiguous()


def equivariance(module: nn.Module, transform: str, x: torch.Tensor, amount=None,
                 tol: Optional[float] = None, seed: int = 0) -> Report:
    """Measure ``||f(T x) - T' f(x)|| / ||T' f(x)||`` for a transform T of the
    input and its action T' on the output field, and compare with the
    module's declared equivariance.

    ``shift`` uses circular shifts by multiples of the module's total stride
    (the input size must be divisible by it); ``rotation`` compares inside a
    disk, on an input first restricted to a slightly larger disk.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
    t_in, t_out = module.in_type, module.out_type
    claimed = transform in module.term.equivariance(t_in)
    rng = random.Random(seed)
    in_amount = out_amount = amount
    mask = None
    with _eval(module), torch.no_grad():
        if t_in.rank == 2:
            size = tuple(x.shape[-2:])
            stride = nominal_stride(module.term, t_in)
            if stride is not None and any(si >= 1 and n % round(si) for n, si in zip(size, stride)):
                return Report(f"equivariance[{transform}]", float("nan"), claimed, None,
                              f"not applicable: input size {size} is not a multiple of the stride {stride}")
        if transform == "shift":
            if t_in.rank != 2:
                raise ValueError("shift needs a rank-2 input")
            if stride is None:
                s = (1, 1)
            else:
                s = tuple(int(round(v)) if v >= 1 else v for v in stride)
            if amount is None:
                in_amount = tuple(int(rng.choice([1, 2, -1, 3]) * max(1, si)) for si in s)
            if stride is not None:
                if any(si >= 1 and a % si for a, si in zip(in_amount, s)):
                    raise ValueError(f"shift {in_amount} is not a multiple of the stride {stride}")
                out_amount = tuple(a // si if si >= 1 else int(a * round(1 / si)) for a, si in zip(in_amount, s))
        elif transform == "rot90":
            in_amount = out_amount = 1 if amount is None else amount
            if t_in.rank == 2 and x.shape[-1] != x.shape[-2]:
                raise ValueError("rot90 needs a square input")
        elif transform == "rotation":
            in_amount = out_amount = rng.uniform(0.3, 1.2) if amount is None else amount
            if t_in.rank == 2:
                x = x * disk_mask(*x.shape[-2:], 0.45, taper=2.0, dtype=x.dtype, device=x.device)
        y = module(x)
        a = module(act(x, t_in, transform, in_amount))
        b = act(y, t_out, transform, out_amount)
        if transform == "rotation" and t_out.rank == 2:
            mask = disk_mask(*y.shape[-2:], 0.3, dtype=y.dtype, device=y.device)
            a, b = a * mask, b * mask
        denom = float(b.norm())
        err = float((a - b).norm()) / denom if denom > 0 else float((a - b).norm())
    tol = DEFAULT_TOL[transform] if tol is None else tol
    detail = f"amount {in_amount}, tol {tol:g}"
    if not claimed:
        return Report(f"equivariance[{transform}]", err, False, None, detail)
    return Report(f"equivariance[{transform}]", err, True, err <= tol, detail)


def cost(module: nn.Module, x: torch.Tensor) -> Report:
    """Compare the algebra's exact cost with the counted one (params and MACs)."""
    claimed = _cost(module, size=tuple(x.shape[-2:]) if module.in_type.rank == 2 else None)
    measured = _count(module, x)
    ok = claimed == measured
    return Report("cost", f"{measured.params} params, {measured.macs} MACs",
                  f"{claimed.params} params, {claimed.macs} MACs", ok)


def run_all(module: nn.Module, input_shape: Sequence[int], seed: int = 0,
            transforms: Sequence[str] = TRANSFORMS) -> List[Report]:
    """Every check on one module: cost, Lipschitz bound, and each transform
    (the declared ones must hold; the others are measured for information)."""
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*input_shape, generator=gen, dtype=dtype)
    reports = [cost(module, x), lipschitz(module, x, seed=seed)]
    if module.in_type.rank == 2 and input_shape[-1] == input_shape[-2]:
        for tr in transforms:
            xin = smooth_input(input_shape, seed, dtype) if tr == "rotation" else x
            try:
                reports.append(equivariance(module, tr, xin, seed=seed))
            except ValueError as e:
                reports.append(Report(f"equivariance[{tr}]", float("nan"), False, None, str(e)))
    return reports


from .shift_stability import shift_stability  # noqa: E402  (small input translations; see that module)

__all__ += ["shift_stability"]

from .stability import stability  # noqa: E402  (PDE step-size condition and linearised step norm)

__all__ += ["stability"]
