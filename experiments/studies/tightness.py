"""How tight are the algebra's Lipschitz bounds? Per operator family (its registered
examples) and per registered CIFAR model (at initialisation, eval mode): the declared
bound, a lower estimate of the true Lipschitz constant, and their ratio.

The estimate is the largest ``||J_f(x)||_2`` found by power iteration on ``J^T J``
(``torch.func.jvp``/``vjp``, :func:`operad.theory.verify.operator_norm`) at several random
inputs: every such figure is a lower bound of the Lipschitz constant, so ``ratio =
bound / estimate >= 1`` always, and the closer to 1 the tighter the bound. Families and
models that declare no bound say so ("none").

    python -m operad.experiments.studies.tightness                       # every family and CIFAR model
    python -m operad.experiments.studies.tightness --models 'resnet*' --families conv seq
    python -m operad.experiments.studies.tightness --models none --examples 5 --json tight.json
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["family_examples", "family_row", "model_row", "table", "main"]


def family_examples(name: str, n: int = 3) -> list:
    """``n`` reproducible examples ``(term, in_type, size)`` of a registered family, drawn
    by its own hypothesis strategy (derandomized)."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from operad.operators import FAMILIES

    fam = FAMILIES[name]
    if fam.examples is None:
        return []
    out: list = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data):
        if len(out) < n:
            out.append(fam.examples(data.draw))

    collect()
    return out


def _settle(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial batch-norm statistics, as the property suite uses, and eval mode."""
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            c = mod.num_features
            mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            mod.running_mean.copy_(torch.randn(c, generator=g))
            if mod.weight is not None:
                mod.weight.data.copy_(torch.randn(c, generator=g))
                mod.bias.data.copy_(torch.randn(c, generator=g))
    return m.eval()


def estimate(m: torch.nn.Module, shape: Sequence[int], dtype=torch.float64, points: int = 2, iters: int = 30,
             seed: int = 0) -> float:
    """The largest Jacobian norm found at ``points`` random inputs of ``shape`` (a lower
    bound of the Lipschitz constant)."""
    from operad.theory.verify import operator_norm

    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for i in range(points):
        x = torch.randn(*shape, generator=g, dtype=dtype)
        best = max(best, operator_norm(lambda v: m(v), x, iters, seed + i))
    return best


def _ratio(bound: Optional[float], est: float) -> Optional[float]:
    if bound is None:
        return None
    return math.inf if est == 0 else bound / est


def family_row(name: str, examples: int = 3, points: int = 2, iters: int = 30) -> Dict[str, object]:
    """Bound, estimate and ratio over a family's examples (the median and the worst ratio)."""
    from operad.theory.verify import declared_lipschitz

    rows = []
    for i, (term, t, size) in enumerate(family_examples(name, examples)):
        torch.manual_seed(i)
        m = _settle(term.bind(t).double(), i)
        with torch.no_grad():
            bound = declared_lipschitz(m, size)
        est = estimate(m, t.shape(1, size), points=points, iters=iters, seed=i)
        rows.append((None if bound is None else float(bound), est))
    bounded = [(b, e) for b, e in rows if b is not None]
    ratios = [_ratio(b, e) for b, e in bounded]
    return dict(name=name, kind="family", examples=len(rows), bounded=len(bounded),
                bound=statistics.median(b for b, _ in bounded) if bounded else None,
                estimate=statistics.median(e for _, e in rows) if rows else None,
                ratio=statistics.median(ratios) if ratios else None,
                worst=max(ratios) if ratios else None,
                violated=sum(e > b * (1 + 1e-3) + 1e-7 for b, e in bounded))


def model_row(name: str, points: int = 2, iters: int = 20) -> Dict[str, object]:
    """Bound, estimate and ratio of a registered model at initialisation (eval mode, float32)."""
    from operad.models import create_model, model_info
    from operad.theory.verify import declared_lipschitz

    torch.manual_seed(0)
    info = model_info(name)
    m = create_model(name).eval()
    size = tuple(info.input_size[1:])
    t0 = time.perf_counter()
    with torch.no_grad():
        bound = declared_lipschitz(m, size)
    est = estimate(m, (1, *info.input_size), torch.float32, points, iters)
    bound = None if bound is None else float(bound)
    return dict(name=name, kind="model", examples=1, bounded=int(bound is not None), bound=bound, estimate=est,
                ratio=_ratio(bound, est), worst=_ratio(bound, est),
                violated=int(bound is not None and est > bound * (1 + 1e-3)), seconds=time.perf_counter() - t0)


def _g(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.4g}"


def table(rows: List[Dict[str, object]], title: str) -> str:
    """A Markdown table of rows from :func:`family_row` or :func:`model_row`."""
    lines = [f"### {title}", "", "| name | examples (bounded) | bound | estimate | bound / estimate | worst ratio | violated |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['examples']} ({r['bounded']}) | {_g(r['bound'])} | {_g(r['estimate'])} | "
                     f"{_g(r['ratio'])} | {_g(r['worst'])} | {r['violated']} |")
    return "\n".join(lines)


def _cifar_models() -> List[str]:
    from operad.models import list_models, model_info
    return [n for n in list_models() if tuple(model_info(n).input_size) == (3, 32, 32)]


def main(argv=None) -> Dict[str, List[Dict[str, object]]]:
    from operad.operators import FAMILIES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="*", default=["*"], help="glob patterns over the families ('none': skip)")
    p.add_argument("--models", nargs="*", default=["*"], help="glob patterns over the CIFAR models ('none': skip)")
    p.add_argument("--examples", type=int, default=3, help="examples per family")
    p.add_argument("--points", type=int, default=2, help="random inputs per estimate")
    p.add_argument("--iters", type=int, default=30, help="power-iteration steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    pick = lambda names, pats: [n for n in names if "none" not in pats and any(fnmatch.fnmatch(n, q) for q in pats)]
    out: Dict[str, List[Dict[str, object]]] = {"families": [], "models": []}
    for name in pick(sorted(n for n, f in FAMILIES.items() if f.examples is not None), a.families):
        out["families"].append(family_row(name, a.examples, a.points, a.iters))
    if out["families"]:
        print(table(out["families"], f"Operator families ({a.examples} registered examples each, float64; "
                                     f"median bound / estimate and the worst)"), flush=True)
        print()
    for name in pick(_cifar_models(), a.models):
        out["models"].append(model_row(name, a.points, min(a.iters, 20)))
    if out["models"]:
        print(table(out["models"], "Registered CIFAR models (at initialisation, eval mode, 32x32, float32)"))
    missing = [r["name"] for r in out["families"] + out["models"] if r["bounded"] == 0]
    if missing:
        print(f"\nno Lipschitz bound declared: {', '.join(missing)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
