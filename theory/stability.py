"""Stability of PDE-style steps: ``operad.verify.stability(block, x)``.

The forward propagation ``x <- step(x)`` does not amplify perturbations when the
linearised step has l2 norm at most 1. :func:`stability` measures that norm at ``x``
by power iteration on ``J^T J`` (``torch.func.jvp``/``vjp``; for a symmetric step such as
``x - h L x`` with symmetric L it equals the spectral radius), and, for every
``pde_step`` inside the block, the largest eigenvalue of its operator L (power iteration
at the step's own input, and the exact value where L states its spectrum) and the
step-size condition ``h lambda_max <= 2`` (:func:`operad.theory.pide.euler_condition`).

    >>> import torch
    >>> from operad import ops, Field, verify
    >>> step = ops.pde_step(ops.fractional_laplacian(1.0), h=0.2).bind(Field(1))
    >>> rep = verify.stability(step, torch.randn(1, 1, 8, 8))
    >>> rep.ok, rep.condition
    (True, True)
    >>> verify.stability(ops.pde_step(ops.fractional_laplacian(1.0), h=0.3).bind(Field(1)),
    ...                  torch.randn(1, 1, 8, 8)).ok      # h * 8 = 2.4 > 2
    False
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import nn

from .verify import Report, _eval, operator_norm

__all__ = ["StabilityReport", "stability", "operator_norm"]


@dataclass
class StabilityReport(Report):
    """A :class:`Report` with the figures of the step condition.

    ``measured`` is the norm of the linearised step (``radius``), ``claimed`` the largest
    ``h * lambda_max`` over the block's pde steps (None if it has none), ``ok`` whether the
    step is non-expansive (``radius <= 1 + rtol``); ``condition`` whether every step satisfies
    ``h lambda_max <= 2`` (None without pde steps)."""

    radius: float = float("nan")
    steps: List[dict] = field(default_factory=list)
    condition: Optional[bool] = None


def _pde_steps(block: nn.Module):
    from ..operators.pde import PdeStep
    return [m for m in block.modules() if isinstance(getattr(m, "term", None), PdeStep) and hasattr(m, "L")]


def stability(block: nn.Module, x: torch.Tensor, iters: int = 100, rtol: float = 1e-3,
              seed: int = 0) -> StabilityReport:
    """Spectral radius (norm) of the linearised step at ``x``, the step-size condition of each
    ``pde_step`` in ``block``, and a verdict (``ok``: the step does not amplify; ``condition``:
    ``h lambda_max <= 2`` holds). Runs in eval mode."""
    steps = _pde_steps(block)
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args[0].detach()))
             for i, m in enumerate(steps)]
    try:
        with _eval(block):
            with torch.no_grad():
                block(x)
            radius = operator_norm(lambda inp: block(inp), x, iters, seed)
            infos = []
            for i, m in enumerate(steps):
                xi = inputs.get(i)
                if xi is None:
                    continue
                lam_est = operator_norm(lambda inp: m.L(inp), xi, iters, seed)
                cond = m.term.condition(m, tuple(xi.shape[-2:]))
                lam_exact = None if cond is None else cond[0] / m.term.h
                lam = lam_exact if lam_exact is not None else lam_est
                infos.append({"path": m.path, "h": m.term.h, "lambda_max": lam, "lambda_max_estimate": lam_est,
                              "h_lambda_max": m.term.h * lam, "holds": m.term.h * lam <= 2 + 1e-12})
    finally:
        for hk in hooks:
            hk.remove()
    ok = radius <= 1 + rtol
    if infos:
        worst = max(infos, key=lambda d: d["h_lambda_max"])
        condition = all(d["holds"] for d in infos)
        detail = (f"h*lambda_max = {worst['h_lambda_max']:.4g} {'<=' if condition else '>'} 2 at "
                  f"{worst['path']}; linearised step norm {radius:.4g}")
        if condition and not ok:
            detail += " (condition holds but the step amplifies: L is not symmetric PSD here)"
        claimed = worst["h_lambda_max"]
    else:
        condition, claimed = None, None
        detail = f"no pde_step in the block; linearised step norm {radius:.4g}"
    return StabilityReport("stability", radius, claimed, ok, detail, radius=radius, steps=infos,
                           condition=condition)
