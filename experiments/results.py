"""Collect finished runs (their ``summary.json``) into a Markdown table and a plot.

    >>> rows = collect_results(["/nonexistent"])
    >>> rows
    []
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["collect_results", "results_table", "plot_results", "UnreadableSummary"]


class UnreadableSummary(UserWarning):
    """A run's ``summary.json`` could not be read; the run is left out of the table."""


def collect_results(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """Every ``summary.json`` below the given folders, sorted by experiment and
    name. One that cannot be read or is not a JSON object is left out with an
    :class:`UnreadableSummary` warning naming the file (``operad results``
    prints it)."""
    rows = []
    for p in paths:
        if os.path.isfile(p) and p.endswith(".json"):
            files = [p]
        else:
            files = [os.path.join(d, "summary.json") for d, _, fs in sorted(os.walk(p)) if "summary.json" in fs]
        for f in files:
            try:
                with open(f, encoding="utf-8") as fh:
                    r = json.load(fh)
                if not isinstance(r, dict):
                    raise ValueError(f"a JSON {type(r).__name__}, not an object")
            except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                warnings.warn(f"skipped {f}: unreadable summary ({type(e).__name__}: {e}); the run is not in the "
                              f"table (rerun it, or delete the file if the run is gone)", UnreadableSummary,
                              stacklevel=2)
                continue
            r.setdefault("run_dir", os.path.dirname(os.path.abspath(f)))
            rows.append(r)
    rows.sort(key=lambda r: (r.get("experiment") or "", r.get("name") or ""))
    return rows


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}" if pct else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


COLUMNS = [
    ("run", lambda r: r.get("name"), False),
    ("model", lambda r: (r.get("model") or "")[:40], False),
    ("params", lambda r: r.get("params"), False),
    ("epochs", lambda r: r.get("epochs"), False),
    ("top-1 %", lambda r: r.get("top1"), True),
    ("top-5 %", lambda r: r.get("top5"), True),
    ("mIoU %", lambda r: r.get("mean_iou"), True),
    ("pixel acc %", lambda r: r.get("pixel_accuracy"), True),
    ("JPEG q75 %", lambda r: (r.get("jpeg") or {}).get("clean"), True),
    ("JPEG mean C %", lambda r: (r.get("jpeg") or {}).get("mean_corrupted"), True),
    ("shift consist. %", lambda r: (r.get("shift") or {}).get("consistency"), True),
    ("rotation mean %", lambda r: (r.get("rotation") or {}).get("mean"), True),
    ("train img/s", lambda r: r.get("train_img_per_s"), False),
    ("infer img/s", lambda r: r.get("infer_img_per_s"), False),
    ("device", lambda r: r.get("device"), False),
]


def results_table(rows: Sequence[Dict[str, Any]]) -> str:
    """A Markdown table per experiment; columns that are empty everywhere are left out."""
    out = []
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("experiment") or "(no experiment)", []).append(r)
    for exp, rs in groups.items():
        cols = [c for c in COLUMNS if any(c[1](r) is not None for r in rs)]
        out.append(f"### {exp}\n")
        claims = sorted({r.get("claim") for r in rs if r.get("claim")})
        for c in claims:
            out.append(f"Claim: {c}\n")
        out.append("| " + " | ".join(c[0] for c in cols) + " |")
        out.append("|" + "|".join("---" for _ in cols) + "|")
        for r in rs:
            out.append("| " + " | ".join(_fmt(c[1](r), c[2]) for c in cols) + " |")
        out.append("")
    return "\n".join(out) if out else "(no runs found)\n"


def plot_results(rows: Sequence[Dict[str, Any]], path: str) -> Optional[str]:
    """Bars of each run's main metric (top-1 or mIoU), grouped by experiment."""
    if not rows:
        return None
    from operad.experiments.plots import _plt, _save

    plt = _plt()
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("experiment") or "-", []).append(r)
    fig, axes = plt.subplots(1, len(groups), figsize=(max(5, 3.2 * len(groups)), 4), squeeze=False)
    for ax, (exp, rs) in zip(axes[0], groups.items()):
        key = "mean_iou" if any("mean_iou" in r for r in rs) else "top1"
        vals = [100 * (r.get(key) or 0) for r in rs]
        ax.bar(range(len(rs)), vals, color=[f"C{i}" for i in range(len(rs))])
        ax.set_xticks(range(len(rs)))
        ax.set_xticklabels([r.get("name", "?") for r in rs], rotation=35, ha="right", fontsize=8)
        ax.set_title(exp, fontsize=9)
        ax.set_ylabel("mIoU %" if key == "mean_iou" else "top-1 %")
        ax.grid(alpha=0.3, axis="y")
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    return _save(fig, path)
