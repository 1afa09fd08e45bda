"""Benchmark: harmonic convolution against an ordinary convolution of the same
width, and against e2cnn's ``R2Conv`` (C8, regular fields of the same width)
where e2cnn is installed, in one run.

For each configuration: training step (forward + backward, train mode: the
harmonic filters are synthesised every step) and eval forward (``no_grad``, eval
mode: harmonic filters cached, R2Conv's expanded filter cached by e2cnn), the
median of several timed runs after warm-up, ``torch.set_num_threads(2)``.
Ratios are against the ordinary ``nn.Conv2d`` with the same real input and
output widths and kernel size (the op a harmonic conv computes).

    .venv/bin/python -m operad.experiments.bench.harmonic
    .venv/bin/python -m operad.experiments.bench.harmonic --runs 5 --json runs/bench_harmonic.json
"""
from __future__ import annotations

import argparse
import json

from operad.experiments.bench.timing import time_fn

import torch
from torch import nn

from ... import ops
from ...operators.algebra.field import Field

__all__ = ["CONFIGS", "main"]

# (complex channels in, complex channels out, orders, k, size, batch)
CONFIGS = [
    (16, 16, (0, 1), 5, 32, 16),
    (32, 32, (0, 1), 5, 16, 16),
    (8, 8, (0, 1), 5, 64, 8),
    (32, 32, (0, 1), 3, 16, 32),
]


def _median(fn, warmup: int, runs: int) -> float:
    return time_fn(fn, runs, warmup)


def _train_step(m, x):
    def fn():
        y = m(x)
        y = y.tensor if hasattr(y, "tensor") else y
        y.square().mean().backward()
        m.zero_grad(set_to_none=True)
    return fn


def _eval_step(m, x):
    def fn():
        with torch.no_grad():
            m(x)
    return fn


def _e2cnn(cin_t: int, cout_t: int, k: int):
    try:
        import warnings
        warnings.filterwarnings("ignore", module="e2cnn")
        from e2cnn import gspaces, nn as enn
    except Exception:  # not installed: skip cleanly
        return None
    g = gspaces.Rot2dOnR2(N=8)
    tin = enn.FieldType(g, (cin_t // 8) * [g.regular_repr])
    tout = enn.FieldType(g, (cout_t // 8) * [g.regular_repr])
    conv = enn.R2Conv(tin, tout, kernel_size=k, padding=k // 2, bias=False)
    return conv, (lambda x: enn.GeometricTensor(x, tin))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    hdr = (f"{'config':<34} {'conv train':>10} {'harm train':>10} {'ratio':>6} {'e2cnn train':>11} {'ratio':>6} | "
           f"{'conv eval':>9} {'harm eval':>9} {'ratio':>6} {'e2cnn eval':>10} {'ratio':>6}")
    print(hdr)
    print("-" * len(hdr))
    for cin, cout, orders, k, n, b in CONFIGS:
        t = Field(cin, kind="complex", orders=orders)
        harm = ops.harmonic_conv(cout, orders=orders, k=k).bind(t)
        cin_t, cout_t = 2 * cin, 2 * cout
        conv = nn.Conv2d(cin_t, cout_t, k, padding=k // 2, bias=False)
        x = torch.randn(b, cin_t, n, n)
        xg = x.clone().requires_grad_(False)
        res = {"config": f"{cin}->{cout} complex, orders {orders}, k={k}, {n}x{n}, batch {b}",
               "real_channels": [cin_t, cout_t]}
        harm.train(); conv.train()
        res["conv_train"] = _median(_train_step(conv, xg), a.warmup, a.runs)
        res["harm_train"] = _median(_train_step(harm, xg), a.warmup, a.runs)
        harm.eval(); conv.eval()
        res["conv_eval"] = _median(_eval_step(conv, x), a.warmup, a.runs)
        res["harm_eval"] = _median(_eval_step(harm, x), a.warmup, a.runs)
        e2 = _e2cnn(cin_t, cout_t, k)
        if e2 is not None:
            r2, wrap = e2
            gx = wrap(x)
            r2.train()
            res["e2cnn_train"] = _median(_train_step(r2, gx), a.warmup, a.runs)
            r2.eval()
            res["e2cnn_eval"] = _median(_eval_step(r2, gx), a.warmup, a.runs)
        rows.append(res)
        ms = lambda v: f"{1000 * v:.2f}ms" if v is not None else "-"
        ratio = lambda v, base: f"{v / base:.2f}" if v is not None else "-"
        e2t, e2e = res.get("e2cnn_train"), res.get("e2cnn_eval")
        print(f"{res['config'][:34]:<34} {ms(res['conv_train']):>10} {ms(res['harm_train']):>10} "
              f"{ratio(res['harm_train'], res['conv_train']):>6} {ms(e2t):>11} {ratio(e2t, res['conv_train']):>6} | "
              f"{ms(res['conv_eval']):>9} {ms(res['harm_eval']):>9} {ratio(res['harm_eval'], res['conv_eval']):>6} "
              f"{ms(e2e):>10} {ratio(e2e, res['conv_eval']):>6}")
    if not any("e2cnn_train" in r for r in rows):
        print("e2cnn not installed: R2Conv columns skipped (pip install e2cnn to include them)")
    print("ratios: time / ordinary conv time (same real widths, kernel, input); target <= 1.5 train, ~1.0 eval")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
