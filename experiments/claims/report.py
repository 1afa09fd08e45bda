"""Claim results as a Markdown table (``RESULTS.md``) and one PNG per claim.

>>> fmt_value(0.2745, "top1"), fmt_value(269722.0, "params")
('27.45%', '269,722')
"""
from __future__ import annotations

import glob
import json
import math
import os
from typing import Any, Dict, List, Sequence

__all__ = ["fmt_value", "results_markdown", "write_results", "plot_claim"]

_PCT = ("top1", "jpeg_top1", "jpeg_drop", "shift_consistency", "rotation_top1", "miou", "map50")


def fmt_value(v: Any, metric: str) -> str:
    """A metric value for the table: percentages for accuracies, grouped digits for counts."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if metric in _PCT:
        return f"{100 * v:.2f}%"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _pm(m: float, s: float, metric: str) -> str:
    if metric in _PCT:
        return f"{100 * m:.2f} ± {100 * s:.2f}%"
    return f"{m:.4g} ± {s:.2g}"


def _top1(arm: Dict[str, Any], metric: str) -> str:
    """The arm's plain top-1 beside another metric (a robustness figure means little without it)."""
    t = [x for x in arm.get("top1") or [] if x is not None]
    if metric in ("top1", "miou", "map50") or not t:
        return ""
    return f" (top-1 {100 * sum(t) / len(t):.1f}%)"


def _row(r: Dict[str, Any]) -> str:
    g, metric = r["grade"], r["metric"]
    if r["kind"] == "trained":
        arms = " vs ".join(f"`{a}`" for a in r["arms"])
        per = "<br>".join(f"{a}: {_pm(v['mean'], v['std'], metric)}" + _top1(v, metric) for a, v in r["arms"].items())
        lo, hi = g["ci"]
        scale = 100 if metric in _PCT else 1
        unit = " pt" if metric in _PCT else ""
        diff = f"{scale * g['diff_mean']:+.2f}{unit} [{scale * lo:+.2f}, {scale * hi:+.2f}]"
        target = {"greater": "> 0", "less": "< 0", "match": f"within ±{scale * g['margin']:g}{unit}",
                  "noninferior": f"> -{scale * g['margin']:g}{unit}"}[g["direction"]]
        diff += f" (claim: {target})"
        if r.get("floor"):
            f = r["floor"]
            flo, fhi = f["grade"]["ci"]
            diff += (f"; subject - {f['metric']} ({fmt_value(f['mean'], metric)}): "
                     f"{scale * f['grade']['diff_mean']:+.2f}{unit} [{scale * flo:+.2f}, {scale * fhi:+.2f}]")
    else:
        arms = "measured"
        vals = r["values"]
        per = fmt_value(r["summary"]["mean"], metric) + (f" ± {r['summary']['std']:.2g}" if len(vals) > 1
                                                         and r["summary"]["std"] else "")
        if "published" in g:
            diff = f"paper {fmt_value(g['published'], metric)}; rel. error {100 * g['rel_error']:.2f}% " \
                   f"(tolerance {100 * g['rel_tol']:g}%)"
        elif g.get("check"):  # a claim's own grade states its check
            diff = g["check"]
        else:
            lo, hi = g["ci"]
            op = "<" if g["direction"] == "less" else ">"
            diff = f"bound {op} {g['bound']:g}; value - bound {g['diff_mean']:+.3g} [{lo:+.3g}, {hi:+.3g}]"
    verdict = f"**{r['verdict']}**" + (f" ({g['reason']})" if g.get("reason") else "") \
        + (f" — {r['note']}" if r.get("note") else "")
    return (f"| `{r['claim']}` | {r['system']} | {r['sentence']} | {arms} | {metric} | {per} | {diff} | {verdict} "
            f"| {r['profile']}, {r['seeds']} seeds | {r['device']} | {r['commit']} |")


def _not_run_row(c) -> str:
    arms = "measured" if c.kind == "measured" else " vs ".join(f"`{a.name}`" for a in c.arms)
    return f"| `{c.name}` | {c.system} | {c.claim} | {c.kind} | {arms} | {c.metric} |"


def results_markdown(results: List[Dict[str, Any]], not_run: Sequence[Any] = ()) -> str:
    """The RESULTS.md text for a list of claim results, and a table of the registered
    claims ``not_run`` (no result in this folder), marked as such.

    >>> from operad.experiments.claims.base import Claim
    >>> c = Claim("demo", "a paper", "Demo", "demo is small", metric="params", measure=lambda s, p: 1.0, bound=2.0,
    ...           direction="less")
    >>> text = results_markdown([], [c])
    >>> "not run 1" in text and "| `demo` | Demo | demo is small | measured |" in text
    True
    """
    counts: Dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    if not_run:
        counts["not run"] = len(not_run)
    head = ["# Claims: measured verdicts", "",
            "Each row is one claim of a seed paper, run by `operad reproduce CLAIM --profile P --seeds N`. "
            "Trained claims: per-arm mean ± std over paired seeds, and the paired difference (first arm minus "
            "second) with its 95% t-interval; `reproduced` when the interval lies on the claimed side, "
            "`contradicted` when it lies on the other, `inconclusive` otherwise. Measured claims: the figure "
            "operad computes, against the paper's figure (within the stated tolerance) or a bound. "
            "CPU-profile runs train on small subsets of CIFAR-10 for a few epochs: they test the claims at "
            "that scale only, and an `inconclusive` or `contradicted` verdict there says nothing about the "
            "paper's schedule.", "",
            "Verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), "",
            "| claim | system | claim sentence | arms | metric | value per arm | difference [95% CI] / check | "
            "verdict | profile | device | commit |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    tail: List[str] = []
    if not_run:
        tail = ["", "## Not run", "",
                "Registered claims with no result in this folder (no verdict: they have not been run in this "
                "profile yet; `operad reproduce CLAIM --profile P` runs them).", "",
                "| claim | system | claim sentence | kind | arms | metric |", "|---|---|---|---|---|---|"]
        tail += [_not_run_row(c) for c in not_run]
    return "\n".join(head + [_row(r) for r in results] + tail) + "\n"


def write_results(out: str, list_not_run: bool = True) -> str:
    """Rebuild ``OUT/RESULTS.md`` from every claim JSON in ``OUT`` (and, with ``list_not_run``,
    a table of the registered claims that have none); returns its path."""
    rs = []
    for p in sorted(glob.glob(os.path.join(out, "*.json"))):
        with open(p) as f:
            r = json.load(f)
        if isinstance(r, dict) and "claim" in r and "grade" in r:
            rs.append(r)
    rs.sort(key=lambda r: (r["system"].lower(), r["kind"] != "trained", r["claim"]))
    not_run = []
    if list_not_run:
        from . import all_claims

        done = {r["claim"] for r in rs}
        not_run = sorted((c for c in all_claims().values() if c.name not in done),
                         key=lambda c: (c.system.lower(), c.kind != "trained", c.name))
    path = os.path.join(out, "RESULTS.md")
    with open(path, "w") as f:
        f.write(results_markdown(rs, not_run))
    return path


def plot_claim(r: Dict[str, Any], path: str) -> str:
    """Per-seed points with mean ± std error bars per arm (or per-seed measurements against the paper)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if r["kind"] == "trained":
        for i, (a, v) in enumerate(r["arms"].items()):
            xs = [i + 0.06 * (k - (len(v["values"]) - 1) / 2) for k in range(len(v["values"]))]
            ax.scatter(xs, v["values"], s=18, alpha=0.7, label=f"{a} (seeds)" if i == 0 else None, color=f"C{i}")
            ax.errorbar([i + 0.3], [v["mean"]], yerr=[v["std"]], fmt="o", capsize=4, color=f"C{i}")
        if r.get("floor"):
            ax.axhline(r["floor"]["mean"], color="C3", ls="--", lw=1, label=r["floor"]["metric"])
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(r["arms"])))
        ax.set_xticklabels(list(r["arms"]), fontsize=8)
        g = r["grade"]
        ax.set_title(f"{r['claim']}: {r['verdict']}\ndiff {g['diff_mean']:+.4f} "
                     f"[{g['ci'][0]:+.4f}, {g['ci'][1]:+.4f}]", fontsize=9)
    else:
        ax.scatter(range(len(r["values"])), r["values"], color="C0", label="measured (per seed)")
        ref = r["grade"].get("published", r["grade"].get("bound"))
        ax.axhline(ref, color="C3", ls="--", label="paper" if "published" in r["grade"] else "bound")
        ax.set_xlabel("seed")
        ax.set_xticks(range(len(r["values"])))
        ax.legend(fontsize=8)
        ax.set_title(f"{r['claim']}: {r['verdict']}", fontsize=9)
    ax.set_ylabel(r["metric"], fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
