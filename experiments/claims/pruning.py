"""Structural pruning against Torch-Pruning (issue 18).

``prune_resnet56_vs_torch_pruning`` (trained, run as a measured claim whose
measure is one seed of :mod:`operad.experiments.studies.pruning_compare`):
ResNet-56 pruned to 2x and 2.5x fewer MACs by ``operad.rewrite.prune`` and by
Torch-Pruning (magnitude importance), fine-tuned with the same budget. Graded
per target on the paired per-seed top-1 difference (operad minus
Torch-Pruning): noninferior within the profile's margin, and operad's counted
MAC reduction at least the target on every seed. The paper-scale profiles
(gpu, full) add Torch-Pruning's published anchor: operad at 2.57x fewer MACs
within 0.3 points of its own unpruned base.

``prune_structures_vs_torch_pruning`` (measured, no training): on DenseNet-BC,
MobileNetV2, GhostNet, SKNet (and ResNet-56, Ghost-ResNet-56), operad prunes to
2x fewer MACs with an exact cost formula and a result that runs; the fraction
of networks where it does is graded against 1. Torch-Pruning's outcome per
network is recorded beside it (:mod:`operad.experiments.studies.pruning_structures`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

from .base import Claim, register
from .stats import interval, verdict

TP_PAPER = "Fang, Ma, Song, Mi, Wang. DepGraph: Towards Any Structural Pruning (Torch-Pruning). CVPR 2023"
ZHOU = "Zhou, Lian, Yin, Wang. Neural Network Compression via Effective Filter Analysis and Hierarchical " \
       "Pruning. 2022 (issue 18: pruning as a typed rewrite, side by side with Torch-Pruning)"

#: top-1 margin of the noninferiority check per profile: 1 point on the CPU subset (1,000 test images), 0.3
#: points at paper scale (the anchor's tolerance)
MARGIN = {"smoke": 0.01, "cpu": 0.01, "gpu": 0.003, "full": 0.003}


def _target_grade(details: Sequence[Dict[str, Any]], i: int, margin: float) -> Dict[str, Any]:
    """One target over seeds: paired top-1 differences (operad - Torch-Pruning), the check that operad's
    counted speed-up reaches the target on every seed, and the verdict."""
    rows = [d["targets"][i] for d in details]
    target = rows[0]["target"]
    op = [r["operad"] for r in rows]
    tp = [r["torch_pruning"] for r in rows]
    g: Dict[str, Any] = {"target": target,
                         "operad_speedup": [o.get("speedup") for o in op],
                         "tp_speedup": [t.get("speedup") for t in tp]}
    if any("top1" not in o for o in op):
        g.update(verdict="contradicted", reason=f"operad produced no fine-tuned model at {target:g}x: "
                 + "; ".join(sorted({o.get("error", "no result") for o in op if "top1" not in o})))
        return g
    if any(o["speedup"] < target for o in op):
        g.update(verdict="contradicted", reason=f"operad's MAC reduction {min(g['operad_speedup']):.3f}x is "
                                                f"below the target {target:g}x")
        return g
    if any("top1" not in t for t in tp):
        g.update(verdict="inconclusive", reason=f"Torch-Pruning produced no fine-tuned model at {target:g}x: "
                 + "; ".join(sorted({t.get("error", "no result") for t in tp if "top1" not in t})))
        return g
    diffs = [o["top1"] - t["top1"] for o, t in zip(op, tp)]
    iv = interval(diffs)
    g.update(diffs=diffs, diff_mean=iv["mean"], ci=[iv["lo"], iv["hi"]],
             verdict=verdict(iv["lo"], iv["hi"], "noninferior", margin))
    return g


def _anchor_grade(details: Sequence[Dict[str, Any]], anchor: Dict[str, float]) -> Dict[str, Any]:
    """The published anchor: operad at ``anchor['speedup']`` loses at most ``max_drop`` top-1 against its base."""
    i = [t["target"] for t in details[0]["targets"]].index(anchor["speedup"])
    rows = [(d["base"]["top1"], d["targets"][i]["operad"]) for d in details]
    if any("top1" not in o for _, o in rows):
        return {"verdict": "contradicted", "reason": "operad produced no model at the anchor"}
    drops = [o["top1"] - b for b, o in rows]
    iv = interval(drops)
    return {"speedup": anchor["speedup"], "max_drop": anchor["max_drop"], "changes": drops,
            "ci": [iv["lo"], iv["hi"]], "verdict": verdict(iv["lo"], iv["hi"], "noninferior", anchor["max_drop"])}


def _combine(verdicts: Sequence[str]) -> str:
    """Contradicted if any part is, reproduced if all are, else inconclusive.

    >>> _combine(["reproduced", "inconclusive"]), _combine(["reproduced", "contradicted"])
    ('inconclusive', 'contradicted')
    """
    if "contradicted" in verdicts:
        return "contradicted"
    return "reproduced" if verdicts and all(v == "reproduced" for v in verdicts) else "inconclusive"


def grade_resnet_compare(values: List[float], details: List[Dict[str, Any]], profile: str) -> Dict[str, Any]:
    """The grade of ``prune_resnet56_vs_torch_pruning`` from the per-seed study records (see the module doc)."""
    from operad.experiments.studies.pruning_compare import PROFILES

    margin = MARGIN[profile]
    parts = [_target_grade(details, i, margin) for i in range(len(details[0]["targets"]))]
    anchor = PROFILES[profile].get("anchor")
    g: Dict[str, Any] = {"direction": "noninferior", "margin": margin, "bound": 0.0, "per_target": parts}
    verdicts = [p["verdict"] for p in parts]
    if anchor:
        g["anchor"] = _anchor_grade(details, anchor)
        verdicts.append(g["anchor"]["verdict"])
    finite = [v for v in values if not math.isnan(v)]
    iv = interval(finite) if finite else {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")}
    g.update(diff_mean=iv["mean"], ci=[iv["lo"], iv["hi"]], verdict=_combine(verdicts))
    base = [d["base"]["top1"] for d in details]
    if sum(base) / len(base) < 0.15 and g["verdict"] != "contradicted":  # CIFAR-10 chance is 10%
        g.update(verdict="inconclusive", reason="the unpruned base is at chance top-1 (< 15%)")
    reasons = [g["reason"]] if g.get("reason") else []
    reasons += [f"{p['target']:g}x: {p['reason']}" for p in parts if p.get("reason")]
    if reasons:
        g["reason"] = "; ".join(reasons)
    g["check"] = "; ".join(
        f"{p['target']:g}x: " + (f"operad - TP {100 * p['diff_mean']:+.2f} pt [{100 * p['ci'][0]:+.2f}, "
                                 f"{100 * p['ci'][1]:+.2f}] (claim: > -{100 * margin:g} pt), operad "
                                 f"{min(p['operad_speedup']):.3f}x, TP {min(p['tp_speedup']):.3f}x fewer MACs"
                                 if "diffs" in p else p["verdict"]) for p in parts)
    return g


def _structures_measure(seed: int, profile: str) -> Dict[str, Any]:
    from operad.experiments.studies.pruning_structures import measure

    return measure(seed, profile)


def _structures_plot(res: Dict[str, Any], path: str) -> str:
    from operad.experiments.studies.pruning_structures import plot_structures

    return plot_structures(res["details"][0]["rows"], path, f"{res['claim']}: {res['verdict']} (seed 0)")


def _resnet_measure(seed: int, profile: str, data_root: str = "") -> Dict[str, Any]:
    from operad.experiments.studies.pruning_compare import run_seed

    return run_seed(seed, profile, data_root)


def _resnet_plot(res: Dict[str, Any], path: str) -> str:
    from operad.experiments.studies.pruning_compare import plot_accuracy_vs_macs

    return plot_accuracy_vs_macs(res["details"], path, f"{res['claim']} ({res['profile']}): {res['verdict']}")


register(
    Claim("prune_structures_vs_torch_pruning", ZHOU, "pruning", "operad prunes DenseNet-BC-100, MobileNetV2, "
          "GhostNet, Ghost-ResNet-56, SKNet (SK-ResNeXt-29) and ResNet-56 (option A) to 2x fewer MACs with a cost "
          "formula equal to the count on the pruned module, and every result runs with its output shape kept "
          "(Torch-Pruning's outcome on the same networks recorded beside it)", metric="fraction of networks",
          measure=_structures_measure, published=1.0, rel_tol=0.0, plot=_structures_plot, dataset_classes=0,
          note="no training: randomly initialised weights per seed; Torch-Pruning prunes with the same uniform "
               "fraction per layer (the details list its MACs, whether it ran, and its errors verbatim), and "
               "also prunes ResNet-56 written as a plain nn.Module with the same weights (a Torch-Pruning-only row)"),
    Claim("prune_resnet56_vs_torch_pruning", TP_PAPER, "pruning", "operad's structural pruning (L1 filter "
          "norms, exact MACs) is not less accurate than Torch-Pruning's (magnitude importance) on ResNet-56 "
          "(CIFAR-10, option-A shortcuts) at equal MACs (2x and 2.5x fewer), after the same fine-tuning, and "
          "reaches the MAC reduction it is asked for; anchor (gpu/full): Torch-Pruning reports 93.53% -> 93.64% "
          "at 2.57x fewer MACs, so operad at 2.57x within 0.3 points of its base",
          metric="top-1 operad - TP", measure=_resnet_measure, bound=0.0, direction="noninferior",
          margin=MARGIN["cpu"], grade=grade_resnet_compare, plot=_resnet_plot, needs_data=True,
          note="cpu profile: the base trains 6 epochs on 4,000 images (batch 32) and each pruned net fine-tunes 2 epochs; "
               "Torch-Pruning fails on the option-A shortcuts with every layer prunable and prunes the inner "
               "block widths only (the residual-stream convolutions ignored); operad prunes the streams too"),
)
