"""Structural coverage of pruning (issue 18): operad and Torch-Pruning on the structures tracing tools find
hard (dense growth, depthwise and grouped convolutions, Ghost and SE modules, SK attention, option-A
padding), no training.

Per network: operad prunes to 2x fewer MACs (:func:`~operad.rewrite.amount_for_macs`, L1 filter norms); its
result must have an exact cost (``operad.cost`` of the pruned term equals :func:`operad.theory.count` on the
pruned module), reach the target and run with the output shape kept. Torch-Pruning (``MetaPruner``,
``MagnitudeImportance(p=1)``, the classifier's outputs kept) prunes the same network with the same uniform
fraction per layer; the row says whether it succeeds (its error's first line if not), whether its result runs
and keeps the output shape, and the MACs it reaches. A last row gives Torch-Pruning ResNet-56 written as a plain ``nn.Module`` with the same
weights (:mod:`.plain_resnet`), the form it meets outside operad.

    OMP_NUM_THREADS=1 python -m operad.experiments.studies.pruning_structures --seed 0 \\
        --out experiments/results/cpu/pruning_structures

>>> [n for n, _ in STRUCTURES][:2]
['resnet56', 'densenet_bc100_k12']
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .pruning_compare import first_line, macs_of, params_of, tp_available, tp_prune

__all__ = ["STRUCTURES", "operad_row", "tp_row", "structure_row", "plain_row", "operad_ok", "table",
           "plot_structures", "measure", "main"]

#: (registered model, input side): CIFAR-sized variants where registered; GhostNet (ImageNet) at 32x32, the
#: smallest input whose stride-32 trunk still leaves one pixel
STRUCTURES = (("resnet56", 32), ("densenet_bc100_k12", 32), ("mobilenetv2_100_cifar", 32),
              ("ghostnet_100", 32), ("ghost_resnet56", 32), ("sk_resnext29", 32))


def _output_shape(model: nn.Module, x: torch.Tensor) -> tuple:
    with torch.no_grad():
        return tuple(model.eval()(x).shape)


def operad_row(model: nn.Module, size: int, speedup: float = 2.0, x: Optional[torch.Tensor] = None
               ) -> Dict[str, Any]:
    """operad at ``speedup`` fewer MACs: amount, params, MACs counted on the module and by the formula
    (``exact`` when equal), the speed-up reached (``reached``), whether it runs with the output shape kept."""
    import operad
    from operad.rewrite import amount_for_macs, prune
    from operad.theory import count

    x = torch.randn(2, model.in_type.channels, size, size) if x is None else x
    t0 = time.time()
    row: Dict[str, Any] = {}
    try:
        a = amount_for_macs(model, 1.0 / speedup, size=(size, size))
        p = prune(model, amount=a)
        formula, counted = operad.cost(p, size=(size, size)), count(p, (1, x.shape[1], size, size))
        row.update(amount=a, params=int(counted.params), macs=int(counted.macs), formula_macs=int(formula.macs),
                   formula_params=int(formula.params), exact=formula == counted)
        row["speedup"] = macs_of(model, (size, size), x.shape[1]) / row["macs"]
        row["reached"] = row["speedup"] >= speedup
        row["runs"] = _output_shape(p, x) == _output_shape(model, x)
    except Exception as e:  # a failure is a row of the table
        row["error"] = first_line(e)
    row["seconds"] = round(time.time() - t0, 2)
    return row


def tp_row(model: nn.Module, size: int, ratio: float, x: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """Torch-Pruning with ``ratio`` of every group's channels removed: ``pruned`` (no exception), ``runs``
    (a forward pass on a batch), ``shape_kept``, params, MACs and speed-up, or the error's first line."""
    x = torch.randn(2, 3, size, size) if x is None else x
    t0 = time.time()
    row: Dict[str, Any] = {"ratio": ratio, "pruned": False}
    try:
        q = tp_prune(model, ratio, x)
        row["pruned"] = True
        shape = _output_shape(q, x)
        row.update(runs=True, shape_kept=shape == _output_shape(model, x), params=params_of(q),
                   macs=macs_of(q, (size, size), x.shape[1]))
        row["speedup"] = macs_of(model, (size, size), x.shape[1]) / row["macs"]
    except Exception as e:
        row["error"] = first_line(e)
        if row["pruned"]:
            row["runs"] = False
    row["seconds"] = round(time.time() - t0, 2)
    return row


def operad_ok(row: Dict[str, Any]) -> bool:
    """operad's part of a row passes: exact cost, target reached, runs with the output shape kept."""
    o = row["operad"]
    return bool(o.get("exact") and o.get("reached") and o.get("runs"))


def structure_row(name: str, size: int, seed: int = 0, speedup: float = 2.0, model: Optional[nn.Module] = None
                  ) -> Dict[str, Any]:
    """Both tools on one network (registered ``name``, or ``model`` when given), weights drawn with ``seed``."""
    from operad.models import create_model

    torch.manual_seed(seed)
    m = (model if model is not None else create_model(name)).eval()
    x = torch.randn(2, m.in_type.channels, size, size)
    row: Dict[str, Any] = {"model": name, "size": size, "params": params_of(m), "macs": macs_of(m, (size, size)),
                           "operad": operad_row(m, size, speedup, x)}
    ratio = row["operad"].get("amount", 1 - 1 / speedup ** 0.5)
    row["torch_pruning"] = tp_row(m, size, ratio, x) if tp_available() else {"error": "torch-pruning not installed"}
    return row


def plain_row(seed: int, ratio: float, size: int = 32) -> Dict[str, Any]:
    """Torch-Pruning on ResNet-56 written as a plain ``nn.Module`` (:func:`~.plain_resnet.plain_resnet`, the
    same weights and function; operad does not prune it: it is not an expression)."""
    from operad.models import create_model

    from .plain_resnet import plain_resnet

    torch.manual_seed(seed)
    m = create_model("resnet56").eval()
    p = plain_resnet(m).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        same = bool(torch.allclose(p(x), m(x), atol=1e-5))
    tp = tp_row(p, size, ratio, x) if tp_available() else {"error": "torch-pruning not installed"}
    return {"model": "resnet56_plain", "size": size, "params": params_of(p), "macs": macs_of(p, (size, size)),
            "same_function": same, "operad": {"skipped": "plain nn.Module, not an expression"}, "torch_pruning": tp}


def table(rows: Sequence[Dict[str, Any]]) -> str:
    """The rows as Markdown."""
    lines = ["| network | input | params | MACs | operad: params / MACs (speed-up) | exact cost | runs | "
             "Torch-Pruning: params / MACs (speed-up) | TP runs, shape kept | TP error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, t = r["operad"], r["torch_pruning"]
        op = o.get("error") or o.get("skipped") or f"{o['params']:,} / {o['macs']:,} ({o['speedup']:.3f}x)"
        tp = f"{t['params']:,} / {t['macs']:,} ({t['speedup']:.3f}x)" if "macs" in t else "-"
        lines.append(f"| {r['model']} | {r['size']}x{r['size']} | {r['params']:,} | {r['macs']:,} | {op} | "
                     f"{o.get('exact', '-')} | {o.get('runs', '-')} | {tp} | "
                     f"{t.get('runs', '-')}, {t.get('shape_kept', '-')} | {t.get('error', '')} |")
    return "\n".join(lines) + "\n"


def plot_structures(rows: Sequence[Dict[str, Any]], path: str, title: str = "") -> str:
    """MAC reduction per network and tool; a red cross where the tool failed."""
    from operad.experiments.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    labelled = set()

    def label(key: str) -> Optional[str]:
        if key in labelled:
            return None
        labelled.add(key)
        return key

    for j, (tool, color) in enumerate((("operad", "C0"), ("torch_pruning", "C3"))):
        for i, r in enumerate(rows):
            v = r[tool]
            xpos = i + (j - 0.5) * 0.36
            if v.get("skipped"):
                continue
            if v.get("speedup") and v.get("runs", True):
                ax.bar(xpos, v["speedup"], 0.34, color=color, label=label(tool))
            else:
                ax.scatter([xpos], [0.25], marker="x", s=60, color=color, label=label(f"{tool} failed"))
    ax.axhline(2.0, color="0.4", ls=":", lw=1)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["model"] for r in rows], rotation=20, fontsize=7)
    ax.set_ylabel("MACs before / after (dotted: operad's 2x target)")
    ax.set_title(title or "Structural pruning: operad vs Torch-Pruning (same uniform fraction)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def measure(seed: int, profile: str = "cpu") -> Dict[str, Any]:
    """The claim's measure: every :data:`STRUCTURES` row, then Torch-Pruning on the plain-module ResNet-56 at
    operad's ResNet-56 fraction; ``value`` is the fraction of the networks operad passes."""
    rows = [structure_row(n, s, seed) for n, s in STRUCTURES]
    value = sum(operad_ok(r) for r in rows) / len(rows)
    r56 = [r for r in rows if r["model"] == "resnet56"]
    if r56 and "amount" in r56[0]["operad"]:
        rows.append(plain_row(seed, r56[0]["operad"]["amount"]))
    return {"value": value, "seed": seed, "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=[n for n, _ in STRUCTURES])
    p.add_argument("--out", default=os.path.join("experiments", "results", "cpu", "pruning_structures"))
    a = p.parse_args(argv)
    sizes = dict(STRUCTURES)
    rows = []
    for n in a.models:
        rows.append(structure_row(n, sizes.get(n, 32), a.seed))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    r56 = [r for r in rows if r["model"] == "resnet56" and "amount" in r["operad"]]
    if r56:
        rows.append(plain_row(a.seed, r56[0]["operad"]["amount"]))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "pruning_structures.json"), "w") as f:
        json.dump({"seed": a.seed, "rows": rows}, f, indent=2)
    plot_structures(rows, os.path.join(a.out, "pruning_structures.png"))
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
