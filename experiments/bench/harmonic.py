"""Benchmark: harmonic convolution against an ordinary convolution of the same
width, and against e2cnn's ``R2Conv`` (C8, regular fields of the same width)
where e2cnn is installed, in one run.

For each configuration: training step (forward + backward, train mode: the
harmonic filters are synthesised every step) and eval forward (``no_grad``, eval
mode: harmonic filters cached, R2Conv's expanded filter cached by e2cnn), the
competitors timed in alternation (:func:`~operad.experiments.bench.timing.time_interleaved`,
median of ``--runs`` rounds after warm-up), ``torch.set_num_threads(2)``.
Ratios are against the ordinary ``nn.Conv2d`` with the same real input and
output widths and kernel size, given the harmonic conv's synthesised filters, so
that it computes the same function (the ``max diff`` column says how closely).

    .venv/bin/python -m operad.experiments.bench.harmonic
    .venv/bin/python -m operad.experiments.bench.harmonic --runs 5 --json runs/bench_harmonic.json
    .venv/bin/python -m operad.experiments.bench.harmonic --small --runs 2     # a quick check
"""
from __future__ import annotations

import argparse
import json

from operad.experiments.bench.timing import time_interleaved

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
SMALL = [(4, 4, (0, 1), 5, 12, 2)]


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
    p.add_argument("--small", action="store_true", help="one small configuration (a quick check)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    hdr = (f"{'config':<34} {'conv train':>10} {'harm train':>10} {'ratio':>6} {'e2cnn train':>11} {'ratio':>6} | "
           f"{'conv eval':>9} {'harm eval':>9} {'ratio':>6} {'e2cnn eval':>10} {'ratio':>6} {'max diff':>9}")
    print(hdr)
    print("-" * len(hdr))
    for cin, cout, orders, k, n, b in (SMALL if a.small else CONFIGS):
        t = Field(cin, kind="complex", orders=orders)
        harm = ops.harmonic_conv(cout, orders=orders, k=k).bind(t)
        cin_t, cout_t = 2 * cin, 2 * cout
        conv = nn.Conv2d(cin_t, cout_t, k, padding=k // 2, bias=False)
        with torch.no_grad():
            conv.weight.copy_(harm.synthesize())  # the same function as the harmonic conv
        x = torch.randn(b, cin_t, n, n)
        res = {"config": f"{cin}->{cout} complex, orders {orders}, k={k}, {n}x{n}, batch {b}",
               "real_channels": [cin_t, cout_t]}
        with torch.no_grad():
            res["max_diff"] = float((harm(x) - conv(x)).abs().max())
        train = {"conv": (conv, x), "harm": (harm, x)}
        e2 = _e2cnn(cin_t, cout_t, k)
        if e2 is not None:
            r2, wrap = e2
            train["e2cnn"] = (r2, wrap(x))
        for m, _ in train.values():
            m.train()
        times = time_interleaved({k_: _train_step(m, xx) for k_, (m, xx) in train.items()}, a.runs, a.warmup)
        res.update({f"{k_}_train": v for k_, v in times.items()})
        for m, _ in train.values():
            m.eval()
        times = time_interleaved({k_: _eval_step(m, xx) for k_, (m, xx) in train.items()}, a.runs, a.warmup)
        res.update({f"{k_}_eval": v for k_, v in times.items()})
        rows.append(res)
        ms = lambda v: f"{1000 * v:.2f}ms" if v is not None else "-"
        ratio = lambda v, base: f"{v / base:.2f}" if v is not None else "-"
        e2t, e2e = res.get("e2cnn_train"), res.get("e2cnn_eval")
        print(f"{res['config'][:34]:<34} {ms(res['conv_train']):>10} {ms(res['harm_train']):>10} "
              f"{ratio(res['harm_train'], res['conv_train']):>6} {ms(e2t):>11} {ratio(e2t, res['conv_train']):>6} | "
              f"{ms(res['conv_eval']):>9} {ms(res['harm_eval']):>9} {ratio(res['harm_eval'], res['conv_eval']):>6} "
              f"{ms(e2e):>10} {ratio(e2e, res['conv_eval']):>6} {res['max_diff']:>9.1e}")
    if not any("e2cnn_train" in r for r in rows):
        print("e2cnn not installed: R2Conv columns skipped (pip install e2cnn to include them)")
    print("ratios: time / ordinary conv time (same real widths, kernel, input); target <= 1.5 train, ~1.0 eval")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
