"""PNG plots (matplotlib, Agg backend): training curves, sweeps, confusion matrices.

    >>> from operad.experiments.plots import plot_lines
    >>> plot_lines({"a": ([0, 1], [0.5, 0.7])}, "/tmp/operad-doctest.png", "x", "y", "t")
    '/tmp/operad-doctest.png'
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["plot_run", "plot_lines", "plot_sweep", "plot_confusion", "plot_bars", "read_jsonl"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def read_jsonl(path: str) -> List[dict]:
    """Records of a JSONL file (a trailing partial line, as a killed run leaves, is skipped)."""
    out = []
    if not os.path.isfile(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    _plt().close(fig)
    return path


def plot_run(run_dir: str, path: Optional[str] = None) -> Optional[str]:
    """Training loss, evaluation accuracy, mIoU or mAP, and learning rate of a run
    (from its ``metrics.jsonl``) in one PNG, ``curves.png`` by default."""
    recs = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    if train:
        ax[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if evals and "loss" in evals[0]:
        ax[0].plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="val loss")
    ax[0].set_xlabel("step"); ax[0].set_ylabel("loss"); ax[0].legend(); ax[0].grid(alpha=0.3)
    keys = [k for k in ("top1", "mean_iou", "pixel_accuracy", "map50", "ema_top1", "ema_mean_iou", "ema_map50")
            if evals and k in evals[0]]
    if train and "acc" in train[0]:
        ax[1].plot([r["epoch_f"] for r in train], [r["acc"] for r in train], alpha=0.6, label="train acc")
    for k in keys:
        ax[1].plot([r["epoch_f"] for r in evals], [r[k] for r in evals], "o-", label=f"val {k}")
    ax[1].set_xlabel("epoch"); ax[1].set_ylabel("accuracy / mIoU / mAP@0.5"); ax[1].legend(); ax[1].grid(alpha=0.3)
    if train:
        ax[2].plot([r["step"] for r in train], [r["lr"] for r in train])
    ax[2].set_xlabel("step"); ax[2].set_ylabel("learning rate"); ax[2].grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.abspath(run_dir)))
    return _save(fig, path or os.path.join(run_dir, "curves.png"))


def plot_lines(series: Dict[str, Tuple[Sequence[float], Sequence[float]]], path: str, xlabel: str, ylabel: str,
               title: str = "", xticks: Optional[Sequence[float]] = None, logx: bool = False,
               logy: bool = False) -> str:
    """One line per named series ``{name: (xs, ys)}`` (``nan`` points are left out)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, series, xlabel, ylabel, title, xticks, logx, logy)
    return _save(fig, path)


def _lines(ax, series, xlabel: str, ylabel: str, title: str = "", xticks=None, logx: bool = False,
           logy: bool = False, errors: Optional[Dict[str, Sequence[float]]] = None) -> None:
    for name, (xs, ys) in series.items():
        err = (errors or {}).get(name)
        pts = [(x, y, err[i] if err else None) for i, (x, y) in enumerate(zip(xs, ys)) if y == y]
        px, py = [p[0] for p in pts], [p[1] for p in pts]
        if err:
            ax.errorbar(px, py, yerr=[p[2] for p in pts], fmt="o-", capsize=3, label=name)
        else:
            ax.plot(px, py, "o-", label=name)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if xticks is not None:
        ax.set_xticks(list(xticks))
    ax.set_xlabel(xlabel); ax.set_ylabel(ylabel); ax.set_title(title); ax.grid(alpha=0.3)
    if len(series) > 1 or any(series):
        ax.legend()


def plot_sweep(series: Dict[str, Tuple[Sequence[float], Sequence[float]]], path: str, xlabel: str, ylabel: str,
               title: str = "", kid: Optional[Dict[str, Tuple[Sequence[float], Sequence[float], Sequence[float]]]] = None,
               xticks: Optional[Sequence[float]] = None) -> str:
    """A robustness sweep: accuracy against the corruption level, and beside it
    (when ``kid`` is given as ``{name: (xs, means, stds)}``) the KID between the
    clean and the corrupted set in the network's feature space, with its std.

    >>> plot_sweep({"a": ([0, 1], [0.9, 0.7])}, "/tmp/operad-doctest-sweep.png", "x", "top-1", "t",
    ...            kid={"a": ([0, 1], [0.0, 0.2], [0.01, 0.02])})
    '/tmp/operad-doctest-sweep.png'
    """
    if not kid:
        return plot_lines(series, path, xlabel, ylabel, title, xticks)
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    _lines(ax[0], series, xlabel, ylabel, title, xticks)
    _lines(ax[1], {k: (v[0], v[1]) for k, v in kid.items()}, xlabel, "KID (clean vs corrupted)",
           "how far the corruption moves the network's features", xticks, errors={k: v[2] for k, v in kid.items()})
    return _save(fig, path)


def plot_bars(values: Dict[str, float], path: str, ylabel: str, title: str = "") -> str:
    """A bar per named value."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(values) + 2), 4))
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel(ylabel); ax.set_title(title); ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_confusion(matrix: Sequence[Sequence[float]], classes: Sequence[str], path: str, title: str = "") -> str:
    """Row-normalised confusion matrix (rows: true class, columns: prediction)."""
    import numpy as np

    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * n + 2), max(3.5, 0.45 * n + 1.5)))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        ax.set_xticks(range(n)); ax.set_yticks(range(n))
        ax.set_xticklabels(classes, rotation=60, ha="right", fontsize=7); ax.set_yticklabels(classes, fontsize=7)
        for i in range(n):
            for j in range(n):
                if m[i, j] >= 0.01:
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted"); ax.set_ylabel("true"); ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)
