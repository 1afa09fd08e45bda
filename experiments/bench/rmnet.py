"""Inference speed of ResNets before and after the deployment rewrites, in one run:
the trained-form network (conv + BN + residual adds), ``fuse`` (BN folded, RepVGG
merges) and ``remove_residuals`` (RMNet: plain conv-ReLU chain with reserve
channels). For each: parameters and MACs (exact, ``operad.cost``), the max abs
difference of the outputs from the original relative to the largest output (float32, eval mode), and the CPU
latency: the three forms timed in alternation (:func:`~operad.experiments.bench.timing.time_interleaved`,
median of ``--runs`` rounds of ``--iters`` forwards each after warm-up,
``torch.set_num_threads(--threads)``), with ratios to the original.

    .venv/bin/python -m operad.experiments.bench.rmnet
    .venv/bin/python -m operad.experiments.bench.rmnet --models resnet20 resnet18 --batch 8 --runs 5
"""
from __future__ import annotations

import argparse
from typing import Dict, List

import torch

import operad
from operad.models import create_model, model_info
from operad.experiments.bench.timing import time_interleaved
from operad.rewrite import fuse, remove_residuals

__all__ = ["latencies", "main"]


def latencies(models: Dict[str, torch.nn.Module], x, iters: int, runs: int, warmup: int = 3) -> Dict[str, float]:
    """Median seconds per forward of each model, timed in alternation."""
    def forwards(m):
        def fn():
            with torch.no_grad():
                for _ in range(iters):
                    m(x)
        return fn
    t = time_interleaved({k: forwards(m) for k, m in models.items()}, runs=runs, warmup=warmup)
    return {k: v / iters for k, v in t.items()}


def _randomize_bn(m):
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m


def main(argv: List[str] = None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet18"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=None, help="input size (default: the model's native size)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    print(f"{'model':<10} {'form':<8} {'params':>10} {'MACs':>12} {'rel diff':>10} {'ms/batch':>9} {'speed x':>8}")
    for name in a.models:
        info = model_info(name)
        s = a.size or info.input_size[1]
        m = _randomize_bn(create_model(name)).eval()
        x = torch.randn(a.batch, info.input_size[0], s, s)
        with torch.no_grad():
            ref = m(x)
        forms = {"original": m, "fused": fuse(m), "rm-plain": remove_residuals(m)}
        times = latencies(forms, x, a.iters, a.runs)
        for form, mod in forms.items():
            with torch.no_grad():
                diff = float((mod(x) - ref).abs().max() / ref.abs().max())
            c = operad.cost(mod, size=(s, s))
            t = times[form]
            row = dict(model=name, form=form, params=int(c.params), macs=int(c.macs), diff=diff,
                       ms=1e3 * t, speedup=times["original"] / t)
            rows.append(row)
            print(f"{name:<10} {form:<8} {row['params']:>10,} {row['macs']:>12,} {diff:>10.2e} {row['ms']:>9.2f} "
                  f"{row['speedup']:>8.2f}")
    return rows


if __name__ == "__main__":
    main()
