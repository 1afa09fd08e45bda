"""Structural pruning side by side (issue 18): ``operad.rewrite.prune`` against Torch-Pruning on ResNet-56.

Per seed: ResNet-56 (CIFAR, option-A shortcuts) trains through the training engine; a copy is pruned to
each MACs target (2x and 2.5x fewer multiply-adds) by operad (:func:`~operad.rewrite.amount_for_macs` then
:func:`~operad.rewrite.prune`, L1 filter norms) and by Torch-Pruning (``MetaPruner`` with
``MagnitudeImportance(p=1)``, the uniform ``pruning_ratio`` found by bisection to reach the same target).
Both results are counted by the same counter (:func:`operad.theory.count` on the real module), checked to
run, fine-tuned with the same budget and evaluated.

Torch-Pruning is first run on the module as it stands (every layer prunable); on option-A shortcuts it
fails, and its error is recorded per seed. It then prunes with the layers that write the residual streams
ignored (the stem and the last convolution of every block): the usual way to prune option-A ResNets with a
tracing tool, which shrinks only the inner width of each block. operad prunes the streams too.

    OMP_NUM_THREADS=1 python -m operad.experiments.studies.pruning_compare --profile cpu --seeds 0 1 2 \\
        --data /work/shared/data --out experiments/results/cpu/pruning_compare

The claim ``prune_resnet56_vs_torch_pruning`` runs the same per-seed study (:func:`run_seed`) through
``operad reproduce``. Torch-Pruning (pip ``torch-pruning``, the ``compare`` extra) is imported only when a
comparison runs.

>>> first_line(ValueError("no\\nmore"))
'ValueError: no'
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["PROFILES", "tp_available", "tp_version", "first_line", "macs_of", "params_of", "operad_to_target", "residual_writers",
           "tp_prune", "tp_to_target", "check_runs", "prune_both", "run_seed", "summarize", "table",
           "plot_accuracy_vs_macs", "main"]

_ENGINE = {"schedule": "cosine", "weight_decay": 5e-4, "momentum": 0.9, "measure_speed": False, "plot_every": 0,
           "checkpoint_every": 0}
#: per profile: data (images per class; 0 = all), the base schedule, the fine-tuning budget (the same for
#: both tools), the MACs targets (speed-ups) and, where the paper scale runs, the published anchor
PROFILES: Dict[str, Dict[str, Any]] = {
    "smoke": {"per_class": 3, "test_per_class": 3, "batch_size": 10, "base_epochs": 1, "base_lr": 0.05,
              "finetune_epochs": 1, "finetune_lr": 0.01, "targets": (2.0, 2.5), "device": "cpu", "threads": 1},
    # about 20 minutes a seed on one shared CPU thread (ResNet-56 trains at 30-45 img/s there, pruned to 2x
    # fewer MACs at 40-60 img/s); batch 32 and a one-epoch warm-up: at batch 64 without it (234 steps on
    # 2,500 images) the base reached only 16-31% top-1
    "cpu": {"per_class": 400, "test_per_class": 100, "batch_size": 32, "base_epochs": 6, "base_lr": 0.04,
            "base_warmup": 1, "finetune_epochs": 2, "finetune_lr": 0.01, "targets": (2.0, 2.5), "device": "cpu",
            "threads": 1},
    # the paper scale: the full set, He et al.'s schedule for the base, Torch-Pruning's CIFAR recipe for the
    # fine-tuning (100 epochs at lr 0.01); anchor: 93.53% -> 93.64% at 2.57x fewer MACs
    "gpu": {"per_class": 0, "test_per_class": 0, "batch_size": 128, "base_epochs": 180, "base_lr": 0.1,
            "base_warmup": 2, "finetune_epochs": 100, "finetune_lr": 0.01, "targets": (2.0, 2.5, 2.57),
            "device": "auto", "anchor": {"speedup": 2.57, "max_drop": 0.003}},
}
PROFILES["full"] = PROFILES["gpu"]


def tp_available() -> bool:
    """Whether Torch-Pruning (``torch_pruning``) is installed."""
    return importlib.util.find_spec("torch_pruning") is not None


def tp_version() -> str:
    """The installed Torch-Pruning's version (the distribution's, which its ``__version__`` may lag)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch-pruning")
    except PackageNotFoundError:
        return getattr(_tp(), "__version__", "unknown")


def _tp():
    if not tp_available():
        raise ImportError("Torch-Pruning is not installed: pip install torch-pruning (or operad[compare])")
    import torch_pruning

    return torch_pruning


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception (what a report quotes)."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


def macs_of(model: nn.Module, size: Sequence[int], in_chans: int = 3) -> int:
    """Multiply-adds per image, counted on the real module (:func:`operad.theory.count`)."""
    from operad.theory import count

    return int(count(model, (1, in_chans, *size)).macs)


def params_of(model: nn.Module) -> int:
    """Parameters of a module (numel)."""
    return sum(p.numel() for p in model.parameters())


# -- the two tools, each to a MACs target ------------------------------------------------------------------

def operad_to_target(model: nn.Module, speedup: float, size: Sequence[int] = (32, 32),
                     importance: str = "l1") -> Tuple[nn.Module, Dict[str, Any]]:
    """``model`` pruned by operad to at most ``1/speedup`` of its MACs: the uniform amount that reaches it on
    the exact cost formula, then :func:`operad.rewrite.prune` (``model`` is left as it is).

    >>> from operad import ops, Field
    >>> m = (ops.conv(16) >> ops.relu() >> ops.conv(16) >> ops.relu() >> ops.conv(4)).bind(Field(3))
    >>> p, info = operad_to_target(m, 2.0, size=(8, 8))
    >>> macs_of(p, (8, 8)) <= macs_of(m, (8, 8)) / 2
    True
    """
    from operad.rewrite import amount_for_macs, prune

    amount = amount_for_macs(model, 1.0 / speedup, importance=importance, size=tuple(size))
    return prune(model, amount=amount, importance=importance), {"amount": amount}


def residual_writers(model: nn.Module) -> List[nn.Module]:
    """The convolutions whose output channels a residual sum couples: the network's first convolution and
    the last convolution of every residual body (what a tracing pruner is told to leave alone on option-A
    ResNets, whose zero-padded shortcuts it cannot follow)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    out = convs[:1]
    for m in model.modules():
        body = getattr(m, "body", None)
        if type(m).__name__ == "ResidualModule" and body is not None:
            inner = [c for c in body.modules() if isinstance(c, nn.Conv2d)]
            out += inner[-1:]
    return out


def _classifier(model: nn.Module) -> List[nn.Module]:
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return lin[-1:]


def tp_prune(model: nn.Module, ratio: float, example: torch.Tensor, ignore_streams: bool = False) -> nn.Module:
    """A pruned deep copy of ``model`` by Torch-Pruning: ``MetaPruner`` with ``MagnitudeImportance(p=1)``,
    every group losing ``ratio`` of its channels (the classifier's outputs kept; with ``ignore_streams`` the
    :func:`residual_writers` too)."""
    tp = _tp()
    m = copy.deepcopy(model).eval()
    keep = _classifier(m) + (residual_writers(m) if ignore_streams else [])
    pruner = tp.pruner.MetaPruner(m, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=keep)
    pruner.step()
    return m.train(model.training)


def tp_to_target(model: nn.Module, speedup: float, example: torch.Tensor, size: Sequence[int] = (32, 32),
                 ignore_streams: bool = False, nearest: bool = False, tol: float = 2e-3,
                 his: Sequence[float] = (0.9, 0.8, 0.7, 0.6)) -> Tuple[nn.Module, Dict[str, Any]]:
    """``model`` pruned by Torch-Pruning to ``1/speedup`` of its MACs (counted by :func:`macs_of`): the smallest
    uniform ``pruning_ratio`` (bisection to ``tol``) that reaches it, or with ``nearest`` whichever of the two
    ratios around that boundary lands closer to it (a uniform ratio moves the MACs in steps of a few percent).
    The bisection starts below the first of ``his`` that reaches the target (Torch-Pruning leaves a group
    whole when a ratio would empty a layer, so the largest ratios may prune less). Torch-Pruning's own
    counter (``tp.utils.count_ops_and_params``) is reported beside it."""
    base = macs_of(model, size)
    goal = base / speedup
    for hi in his:
        best = tp_prune(model, hi, example, ignore_streams)
        best_macs = macs_of(best, size)
        if best_macs <= goal * (1 + 1e-9):
            break
    else:
        raise ValueError(f"Torch-Pruning at pruning_ratio {', '.join(map(str, his))} keeps at best "
                         f"{best_macs / base:.3f} of the MACs; the target 1/{speedup:.4g} = {1 / speedup:.3f} is "
                         f"out of reach")
    lo, ratio, above = 0.0, hi, None
    while ratio - lo > tol:
        mid = (lo + ratio) / 2
        cand = tp_prune(model, mid, example, ignore_streams)
        c = macs_of(cand, size)
        if c <= goal * (1 + 1e-9):
            ratio, best, best_macs = mid, cand, c
        else:
            lo, above = mid, (mid, cand, c)
    if nearest and above is not None and above[2] - goal < goal - best_macs:
        ratio, best, best_macs = above
    tp_macs, _ = _tp().utils.count_ops_and_params(best.eval(), example[:1])
    return best, {"ratio": ratio, "tp_counted_macs": float(tp_macs)}


def check_runs(model: nn.Module, x: torch.Tensor, shape: Sequence[int]) -> None:
    """Raise unless ``model(x)`` runs, has ``shape`` and is finite."""
    was = model.training
    with torch.no_grad():
        y = model.eval()(x)
    model.train(was)
    if tuple(y.shape) != tuple(shape):
        raise RuntimeError(f"output shape {tuple(y.shape)}, expected {tuple(shape)}")
    if not torch.isfinite(y).all():
        raise RuntimeError("non-finite output")


def prune_both(model: nn.Module, speedup: float, x: torch.Tensor, size: Sequence[int] = (32, 32)
               ) -> Dict[str, Tuple[Optional[nn.Module], Dict[str, Any]]]:
    """Both tools at one MACs target: ``{"operad": (module, info), "torch_pruning": (module, info)}``;
    a tool that fails gives ``(None, {"error": ...})``. operad prunes to the target; Torch-Pruning (the
    residual-stream layers ignored) to the ratio whose MACs come nearest operad's result. Each info has
    params, MACs, the speed-up reached and ``runs`` (a forward pass keeps the output shape)."""
    base = macs_of(model, size)
    with torch.no_grad():
        shape = tuple(model.eval()(x).shape)
    out: Dict[str, Tuple[Optional[nn.Module], Dict[str, Any]]] = {}

    def tp_matched():  # equal MACs: as near operad's result as Torch-Pruning's uniform ratio can land
        done = out["operad"][1].get("macs")
        return tp_to_target(model, base / done if done else speedup, x, size, ignore_streams=True, nearest=True)

    for tool, fn in (("operad", lambda: operad_to_target(model, speedup, size)), ("torch_pruning", tp_matched)):
        t0 = time.time()
        try:
            m, info = fn()
        except Exception as e:  # a tool's failure is a result of the comparison
            out[tool] = (None, {"error": first_line(e), "prune_s": round(time.time() - t0, 2)})
            continue
        info.update(params=params_of(m), macs=macs_of(m, size), prune_s=round(time.time() - t0, 2))
        info["speedup"] = base / info["macs"]
        try:
            check_runs(m, x, shape)
            info["runs"] = True
        except Exception as e:
            info.update(runs=False, error=first_line(e))
        out[tool] = (m, info)
    return out


# -- one seed of the study ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _data(root: str, per_class: int, test_per_class: int):
    from operad.experiments.data import load_dataset

    return (load_dataset("cifar10", "train", root or None, per_class or None),
            load_dataset("cifar10", "test", root or None, test_per_class or None))


def _train(model: nn.Module, seed: int, prof: Dict[str, Any], stage: str, train, val,
           progress: bool) -> Dict[str, Any]:
    """Train ``model`` in place through the engine (``stage``: ``base`` or ``finetune``) in a scratch folder."""
    from operad.experiments.config import expand_runs
    from operad.experiments.train import train_run

    epochs = prof[f"{stage}_epochs"]
    ov = dict(_ENGINE, epochs=epochs, lr=prof[f"{stage}_lr"], warmup_epochs=prof.get(f"{stage}_warmup", 0),
              batch_size=prof["batch_size"], eval_every=epochs, seed=seed, progress=progress,
              device=prof["device"], name=stage)
    if "threads" in prof:
        ov["threads"] = prof["threads"]
    out = tempfile.mkdtemp(prefix=f"pruning_compare_{stage}_")
    try:
        cfg = expand_runs({"model": "resnet56"}, dict(ov, out_dir=out), "cpu" if prof["device"] == "cpu" else "gpu")[0]
        s = train_run(cfg, overwrite=True, model=model, train_data=train, val_data=val)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # the figures are returned; the run folder is scratch
    return {"top1": s["top1"], "train_s": s["train_time_s"], "img_per_s": s["train_img_per_s"], "steps": s["steps"]}


def _top1(model: nn.Module, val) -> float:
    from operad.experiments.augment import DeviceBatches
    from operad.experiments.evaluate import evaluate

    dev = next(model.parameters()).device
    with torch.no_grad():
        return float(evaluate(model, DeviceBatches(val, 256, dev))["top1"])


def _tp_every_layer(model: nn.Module, x: torch.Tensor) -> Optional[str]:
    """Torch-Pruning with every layer prunable (a small ratio): ``None`` if it prunes, else its error."""
    try:
        tp_prune(model, 0.3, x)
        return None
    except Exception as e:
        return first_line(e)


def run_seed(seed: int, profile: str = "cpu", data_root: str = "", progress: bool = True,
             log=print) -> Dict[str, Any]:
    """One seed: train the base, prune it with both tools to every target, fine-tune, evaluate. Returns the
    record the claim grades (``value``: operad's top-1 minus Torch-Pruning's, mean over the targets)."""
    from operad.models import create_model

    prof = PROFILES[profile]
    train, val = _data(data_root, prof["per_class"], prof["test_per_class"])
    torch.manual_seed(seed)
    model = create_model("resnet56", num_classes=train.num_classes)
    base = _train(model, seed, prof, "base", train, val, progress)
    model = model.cpu().eval()
    x = (torch.from_numpy(val.images[:8]).permute(0, 3, 1, 2).float() / 255.0)
    base.update(params=params_of(model), macs=macs_of(model, (32, 32)))
    log(f"seed {seed}: base top-1 {base['top1']:.4f}, {base['macs']:,} MACs")
    rec: Dict[str, Any] = {"seed": seed, "profile": profile, "train_size": len(train), "val_size": len(val),
                           "base": base, "tp_every_layer_error": _tp_every_layer(model, x), "targets": [],
                           "torch_pruning": tp_version()}
    for speedup in prof["targets"]:
        row: Dict[str, Any] = {"target": speedup}
        for tool, (m, info) in prune_both(model, speedup, x).items():
            if m is not None and info.get("runs"):
                info["top1_pruned"] = _top1(m, val)
                ft = _train(m, seed, prof, "finetune", train, val, progress)
                info.update(top1=ft["top1"], finetune_s=ft["train_s"], finetune_img_per_s=ft["img_per_s"])
            row[tool] = info
            log(f"seed {seed} {speedup}x {tool}: " + (info.get("error") or
                f"{info['speedup']:.3f}x, {info['params']:,} params, top-1 {info['top1_pruned']:.4f} -> "
                f"{info['top1']:.4f}"))
        rec["targets"].append(row)
    diffs = [r["operad"]["top1"] - r["torch_pruning"]["top1"] for r in rec["targets"]
             if "top1" in r["operad"] and "top1" in r["torch_pruning"]]
    rec["value"] = statistics.fmean(diffs) if diffs else float("nan")
    return rec


# -- tables and plots --------------------------------------------------------------------------------------

def summarize(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per target and tool over seeds: mean and sd of params, MACs, speed-up and top-1 (after fine-tuning).

    >>> r = {"base": {"top1": 0.5, "params": 10, "macs": 100}, "targets": [{"target": 2.0,
    ...      "operad": {"params": 5, "macs": 50, "speedup": 2.0, "top1": 0.4},
    ...      "torch_pruning": {"error": "IndexError: x"}}]}
    >>> [(s["tool"], s["top1_mean"], s["failed"]) for s in summarize([r, r])][1:]
    [('operad', 0.4, 0), ('torch_pruning', None, 2)]
    """
    def ms(xs):
        xs = [x for x in xs if x is not None]
        return (statistics.fmean(xs) if xs else None), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    rows = []
    base = [r["base"] for r in records]
    b = {k: ms([x[k] for x in base]) for k in ("params", "macs", "top1")}
    rows.append({"target": 1.0, "tool": "base", "n": len(base), "failed": 0, "speedup_mean": 1.0,
                 **{f"{k}_{s}": v for k, (m, sd) in b.items() for s, v in (("mean", m), ("std", sd))}})
    for i, t in enumerate(records[0]["targets"] if records else []):
        for tool in ("operad", "torch_pruning"):
            infos = [r["targets"][i][tool] for r in records]
            ok = [x for x in infos if "top1" in x]
            row = {"target": t["target"], "tool": tool, "n": len(ok), "failed": len(infos) - len(ok),
                   "errors": sorted({x["error"] for x in infos if x.get("error")})}
            for k in ("params", "macs", "speedup", "top1", "top1_pruned"):
                m, sd = ms([x.get(k) for x in ok])
                row[f"{k}_mean"], row[f"{k}_std"] = m, sd
            rows.append(row)
    return rows


def table(rows: Sequence[Dict[str, Any]]) -> str:
    """The summary as Markdown (top-1 in percent, mean +- sd over seeds)."""
    def pct(r, k):
        return "n/a" if r.get(f"{k}_mean") is None else f"{100 * r[f'{k}_mean']:.2f} +- {100 * r[f'{k}_std']:.2f}"

    lines = ["| target | tool | seeds | params | MACs | speed-up | top-1 % pruned | top-1 % fine-tuned | failures |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["tool"] == "base":
            lines.append(f"| - | base | {r['n']} | {r['params_mean']:,.0f} | {r['macs_mean']:,.0f} | 1.000 | - | "
                         f"{pct(r, 'top1')} | |")
            continue
        num = (lambda k, f: "n/a" if r[f"{k}_mean"] is None else format(r[f"{k}_mean"], f))
        lines.append(f"| {r['target']:g}x | {r['tool']} | {r['n']} | {num('params', ',.0f')} | {num('macs', ',.0f')} "
                     f"| {num('speedup', '.3f')} | {pct(r, 'top1_pruned')} | {pct(r, 'top1')} | "
                     f"{'; '.join(r['errors']) if r['failed'] else ''} |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_macs(records: Sequence[Dict[str, Any]], path: str, title: str = "") -> str:
    """Top-1 after fine-tuning against MACs: one point per tool, target and seed; the base as stars."""
    from operad.experiments.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    for r in records:
        ax.scatter([r["base"]["macs"] / 1e6], [100 * r["base"]["top1"]], marker="*", s=90, color="k",
                   label="base (per seed)" if r is records[0] else None)
    for tool, color, mk in (("operad", "C0", "o"), ("torch_pruning", "C3", "s")):
        xs = [t[tool]["macs"] / 1e6 for r in records for t in r["targets"] if "top1" in t[tool]]
        ys = [100 * t[tool]["top1"] for r in records for t in r["targets"] if "top1" in t[tool]]
        ax.scatter(xs, ys, color=color, marker=mk, alpha=0.75, label=f"{tool} (fine-tuned, per seed)")
    for t in (records[0]["targets"] if records else []):
        ax.axvline(records[0]["base"]["macs"] / t["target"] / 1e6, color="0.6", ls=":", lw=1)
    ax.set_xlabel("MACs per image (millions; dotted: the targets)")
    ax.set_ylabel("top-1 % (CIFAR-10 test subset)")
    ax.set_title(title or "ResNet-56 pruned: operad vs Torch-Pruning", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data", default="", help="data root (default $OPERAD_DATA, then ./data)")
    p.add_argument("--out", default=os.path.join("experiments", "results", "cpu", "pruning_compare"))
    a = p.parse_args(argv)
    _tp()  # fail before training when Torch-Pruning is missing
    records = [run_seed(s, a.profile, a.data) for s in a.seeds]
    rows = summarize(records)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "pruning_compare.json"), "w") as f:
        json.dump({"profile": a.profile, "settings": PROFILES[a.profile], "summary": rows, "records": records},
                  f, indent=2, default=str)
    plot_accuracy_vs_macs(records, os.path.join(a.out, "accuracy_vs_macs.png"))
    print(table(rows))
    return records


if __name__ == "__main__":
    main()
