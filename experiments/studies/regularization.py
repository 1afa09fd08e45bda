"""The regularization study (issue 19): each method of
``experiments/configs/regularization_<method>.toml`` against the same network
and schedule without it, over seeds; a table and a plot that ranks the
methods by their accuracy gain (mean over seeds, error bars one standard
deviation of the paired per-seed gains)::

    OMP_NUM_THREADS=1 python -m operad.experiments.studies.regularization \\
        --methods label_smoothing cutout --seeds 0 1 2 --data /work/shared/data \\
        --runs runs/regularization --out experiments/results/cpu/regularization

Runs whose ``summary.json`` exists are not trained again, and a baseline is
trained once per (network, seed) and shared by every method on that network.
Extra ``key=value`` arguments override every run (e.g. ``epochs=2``).

``--from-claims DIR`` trains nothing: it ranks every method from the claims
registry's results in DIR (``<method>_vs_baseline.json``, written by
``operad reproduce``), pairing the method's and its baseline's top-1 by seed.

    >>> rank_gains({"a": [0.01, 0.03], "b": [0.05, 0.05]})[0]["method"]
    'b'
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any, Dict, List, Sequence

__all__ = ["run_study", "rank_gains", "summarize", "plot_ranking", "from_claims", "METHODS"]

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
METHODS = sorted(f[len("regularization_"):-5] for f in os.listdir(CONFIGS)
                 if f.startswith("regularization_") and f.endswith(".toml"))


def _baseline_key(cfg) -> str:
    args = "_".join(f"{k}-{v}" for k, v in sorted(cfg.model_args.items()))
    return f"baseline_{cfg.model}" + (f"_{args}" if args else "")


def run_study(methods: Sequence[str], seeds: Sequence[int], runs_dir: str, overrides: Dict[str, Any],
              profile: str = "cpu") -> List[Dict[str, Any]]:
    """Train (or reuse) every method and baseline run; returns their summaries,
    each with ``method``, ``role`` (``"method"`` or ``"baseline"``) and ``seed``."""
    from operad.experiments.config import expand_runs, load_config
    from operad.experiments.train import train_run

    out = []
    for method in methods:
        raw = load_config(os.path.join(CONFIGS, f"regularization_{method}.toml"))
        for seed in seeds:
            for cfg in expand_runs(raw, dict(overrides, seed=seed), profile=profile):
                role = "baseline" if cfg.name == "baseline" else "method"
                name = _baseline_key(cfg) if role == "baseline" else method
                d = os.path.join(runs_dir, f"seed{seed}")
                summary = os.path.join(d, name, "summary.json")
                if not os.path.isfile(summary):
                    import dataclasses
                    train_run(dataclasses.replace(cfg, name=name, out_dir=d), overwrite=True)
                with open(summary) as f:
                    r = json.load(f)
                out.append(dict(r, method=method, role=role, seed=seed))
    return out


def rank_gains(gains: Dict[str, List[float]]) -> List[Dict[str, Any]]:
    """``{method: [gain per seed]}`` -> rows sorted by mean gain, best first."""
    rows = []
    for m, g in gains.items():
        rows.append({"method": m, "gain_mean": statistics.fmean(g),
                     "gain_std": statistics.stdev(g) if len(g) > 1 else 0.0, "seeds": len(g), "gains": list(g)})
    return sorted(rows, key=lambda r: -r["gain_mean"])


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Paired per-seed top-1 gains of each method over its baseline, ranked."""
    gains: Dict[str, List[float]] = {}
    acc: Dict[str, Dict[str, List[float]]] = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        for seed in sorted({r["seed"] for r in mine}):
            m = [r for r in mine if r["seed"] == seed and r["role"] == "method"]
            b = [r for r in mine if r["seed"] == seed and r["role"] == "baseline"]
            if m and b:
                gains.setdefault(method, []).append(m[0]["top1"] - b[0]["top1"])
                a = acc.setdefault(method, {"method": [], "baseline": []})
                a["method"].append(m[0]["top1"])
                a["baseline"].append(b[0]["top1"])
    ranked = rank_gains(gains)
    for r in ranked:
        a = acc[r["method"]]
        r.update(top1_mean=statistics.fmean(a["method"]), baseline_top1_mean=statistics.fmean(a["baseline"]))
    return ranked


def from_claims(results_dir: str) -> List[Dict[str, Any]]:
    """Rows for :func:`summarize` from the claims results in ``results_dir``: for every
    method with a ``<method>_vs_baseline.json``, its arm's and the baseline arm's top-1
    per seed (the claim's first arm is the method, the second its baseline)."""
    rows = []
    for method in METHODS:
        path = os.path.join(results_dir, f"{method}_vs_baseline.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            res = json.load(f)
        arms = list(res.get("arms", {}).values())
        if len(arms) != 2:
            raise ValueError(f"{path}: expected two arms (method, baseline); found {len(arms)}")
        for role, arm in zip(("method", "baseline"), arms):
            for seed, v in enumerate(arm.get("top1") or arm.get("values") or []):
                rows.append({"method": method, "role": role, "seed": seed, "top1": v,
                             "profile": res.get("profile"), "commit": res.get("commit")})
    return rows


def plot_ranking(ranked: List[Dict[str, Any]], path: str, title: str = "") -> str:
    """Horizontal bars: top-1 gain (percentage points) per method, best on top,
    error bars one standard deviation over seeds."""
    from operad.experiments.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 0.5 * len(ranked) + 1.4))
    ys = list(range(len(ranked)))[::-1]
    means = [100 * r["gain_mean"] for r in ranked]
    stds = [100 * r["gain_std"] for r in ranked]
    ax.barh(ys, means, xerr=stds, color=["C2" if m >= 0 else "C3" for m in means], capsize=4)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['method']} (n={r['seeds']})" for r in ranked])
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("top-1 gain over the same network without it (points; mean +- sd over seeds)")
    ax.set_title(title or "Regularization methods ranked by accuracy gain", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def _table(ranked: List[Dict[str, Any]]) -> str:
    lines = ["| rank | method | seeds | baseline top-1 % | with method % | gain (points, mean +- sd) | per seed |",
             "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(ranked, 1):
        per = ", ".join(f"{100 * g:+.1f}" for g in r["gains"])
        lines.append(f"| {i} | {r['method']} | {r['seeds']} | {100 * r['baseline_top1_mean']:.2f} | "
                     f"{100 * r['top1_mean']:.2f} | {100 * r['gain_mean']:+.2f} +- {100 * r['gain_std']:.2f} | {per} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    from operad.experiments.config import parse_overrides

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data", default="", help="data_root for every run")
    p.add_argument("--runs", default="runs/regularization", help="where the runs train")
    p.add_argument("--out", default="experiments/results/cpu/regularization", help="table, JSON and plot")
    p.add_argument("--profile", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--from-claims", default="", metavar="DIR",
                   help="train nothing: rank from the claims results in DIR (operad reproduce's output)")
    p.add_argument("overrides", nargs="*", help="key=value for every run")
    a = p.parse_args(argv)
    ov = parse_overrides(a.overrides)
    if a.data:
        ov["data_root"] = a.data
    if a.from_claims:
        rows = [r for r in from_claims(a.from_claims) if r["method"] in a.methods]
        if not rows:
            raise SystemExit(f"no <method>_vs_baseline.json claims results in {a.from_claims}")
        ov = {"from_claims": a.from_claims}
    else:
        rows = run_study(a.methods, a.seeds, a.runs, ov, a.profile)
    ranked = summarize(rows)
    os.makedirs(a.out, exist_ok=True)
    keep = ("name", "method", "role", "seed", "model", "params", "train_size", "val_size", "epochs", "steps",
            "top1", "top5", "loss", "train_time_s", "train_img_per_s")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"overrides": ov, "profile": a.profile, "ranking": ranked,
                   "runs": [{k: r.get(k) for k in keep} for r in rows]}, f, indent=2)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(_table(ranked))
    plot_ranking(ranked, os.path.join(a.out, "ranking.png"))
    print(_table(ranked))


if __name__ == "__main__":
    main()
