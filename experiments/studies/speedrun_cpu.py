"""CPU proxy of the speed recipe: ``cifar10_speedrun`` with its recipe against
ResNet-20 with the standard recipe, same data, same number of epochs, one
thread, one run at a time.

    OMP_NUM_THREADS=1 .venv/bin/python -m operad.experiments.studies.speedrun_cpu \\
        --data /work/shared/data --per-class 400 --test-per-class 100 --epochs 3 \\
        --out experiments/results/cpu/speedrun

The speed recipe runs as configured in ``configs/cifar10_speedrun.toml``'s
``[cpu]`` table (batch 256, its epoch-denominated settings at the published
fraction 3/9.9 of training); ResNet-20 runs through operad's engine with the
top-level settings of ``configs/resnet20_cifar10.toml`` (batch 128, lr 0.1,
Nesterov, weight decay 5e-4, cosine, flip and 4-pixel crop) except that the
warm-up is dropped, as in its own ``[cpu]`` table, since it would take most of
a 3-epoch budget. Writes ``speedrun_cpu.json`` and ``README.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

import torch

from operad.experiments.config import expand_runs, load_config
from operad.experiments.data import load_dataset

__all__ = ["main", "speedrun_arm", "resnet_arm"]


def speedrun_arm(train, test, epochs: int, seed: int) -> Dict[str, Any]:
    """The recipe with the config's [cpu] settings for ``epochs`` epochs (one run)."""
    from operad.experiments.speedrun import run

    cfg = expand_runs(load_config("cifar10_speedrun"), profile="cpu")[0]
    args = dict(cfg.recipe_args)
    args.pop("runs", None)
    target = args.pop("target", None)
    frac = epochs / 9.9 * 3.0  # lookahead and whitening-bias training start/stop at the published fraction
    args.update(epochs=float(epochs), whiten_bias_epochs=round(frac, 3), lookahead_start_epochs=round(frac, 3))
    res = run(train_data=train, val_data=test, device="cpu", runs=1, target=target, warmup=False, seed=seed,
              batch_size=cfg.batch_size, momentum=cfg.momentum, label_smoothing=cfg.label_smoothing,
              translate=cfg.crop_padding, flip=cfg.flip, eval_batch_size=cfg.eval_batch_size, **args)
    r = res["runs"][0]
    return {"model": "cifar10_speedrun", "recipe": "speedrun", "top1_tta": r["tta_acc"], "top1": r["acc"],
            "train_img_per_s": r["train_img_per_s"], "train_s": r["train_s"], "timed_s": r["time_s"],
            "epoch_loss": r["epoch_loss"], "steps": r["steps"], "settings": res["config"]}


def resnet_arm(train, test, epochs: int, seed: int) -> Dict[str, Any]:
    """ResNet-20 through the engine with the standard recipe of ``resnet20_cifar10.toml``."""
    from operad.experiments.train import train_run

    out = tempfile.mkdtemp(prefix="speedrun_cpu_")
    ov = {"epochs": epochs, "warmup_epochs": 0, "compile": False, "device": "cpu", "eval_every": epochs,
          "checkpoint_every": 0, "measure_speed": False, "progress": False, "plot_every": 0, "threads": 1,
          "out_dir": out, "seed": seed, "log_every": 10}
    cfg = expand_runs(load_config("resnet20_cifar10"), ov, profile="gpu")[0]
    try:
        r = train_run(cfg, train_data=train, val_data=test)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # the figures are returned; the run folder is scratch
    keys = ("batch_size", "lr", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs",
            "crop_padding", "flip", "label_smoothing")
    return {"model": "resnet20", "recipe": "engine (resnet20_cifar10.toml)", "top1": r["top1"],
            "train_img_per_s": r["train_img_per_s"], "train_s": r["train_time_s"], "steps": r["steps"],
            "settings": {k: getattr(cfg, k) for k in keys}}


def _git(*args) -> Optional[str]:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _markdown(rec: Dict[str, Any]) -> str:
    s, r = rec["speedrun"], rec["resnet20"]
    su = rec["setup"]
    lines = [
        "# Speed recipe, CPU proxy",
        "",
        f"CIFAR-10 (JPEG q75 copy), first {su['per_class']} training images per class ({su['train_size']}), "
        f"first {su['test_per_class']} test images per class ({su['test_size']}); {su['epochs']} epochs each, "
        f"seed {su['seed']}, one CPU thread ({su['cpu']}), load average {su['load_before']} before and "
        f"{su['load_after']} after (a shared machine: images/s are indicative).",
        "",
        "| model | recipe | params | top-1 % | top-1 % with TTA | train img/s | train s |",
        "|---|---|---|---|---|---|---|",
        f"| cifar10_speedrun | speed recipe | {rec['params']['cifar10_speedrun']:,} | {100 * s['top1']:.2f} | "
        f"{100 * s['top1_tta']:.2f} | {s['train_img_per_s']:.1f} | {s['train_s']:.1f} |",
        f"| resnet20 | standard (engine) | {rec['params']['resnet20']:,} | {100 * r['top1']:.2f} | - | "
        f"{r['train_img_per_s']:.1f} | {r['train_s']:.1f} |",
        "",
        f"Command: `{rec['command']}` (commit {rec['commit']}).",
        "",
        "This is a proxy at CPU scale, not the GPU race: it says whether the recipe learns faster per epoch "
        "than the standard recipe on a small subset, and what each costs per image on one core. The recipe's "
        "settings are in `speedrun_cpu.json`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--per-class", type=int, default=400)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("experiments", "results", "cpu", "speedrun"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from operad.models import create_model

    train = load_dataset("cifar10", "train", a.data, a.per_class)
    test = load_dataset("cifar10", "test", a.data, a.test_per_class)
    load0 = round(os.getloadavg()[0], 2)
    t0 = time.time()
    s = speedrun_arm(train, test, a.epochs, a.seed)
    print(f"speedrun: top-1 {s['top1']:.4f} (TTA {s['top1_tta']:.4f}), {s['train_img_per_s']:.1f} img/s", flush=True)
    r = resnet_arm(train, test, a.epochs, a.seed)
    print(f"resnet20: top-1 {r['top1']:.4f}, {r['train_img_per_s']:.1f} img/s", flush=True)
    rec = {"setup": {"per_class": a.per_class, "test_per_class": a.test_per_class, "train_size": len(train),
                     "test_size": len(test), "epochs": a.epochs, "seed": a.seed, "threads": 1,
                     "cpu": os.cpu_count() and f"{os.cpu_count()} cores", "load_before": load0,
                     "load_after": round(os.getloadavg()[0], 2), "wall_s": round(time.time() - t0, 1),
                     "torch": torch.__version__},
           "params": {m: sum(q.numel() for q in create_model(m).parameters()) for m in ("cifar10_speedrun", "resnet20")},
           "speedrun": s, "resnet20": r, "commit": _git("rev-parse", "--short", "HEAD"),
           "command": "OMP_NUM_THREADS=1 python -m operad.experiments.studies.speedrun_cpu " + " ".join(
               argv if argv is not None else sys.argv[1:])}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "speedrun_cpu.json"), "w") as f:
        json.dump(rec, f, indent=2)
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write(_markdown(rec))
    return rec


if __name__ == "__main__":
    main()
