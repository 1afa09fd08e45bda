"""Benchmark: the grid fractional Laplacian (FFT) against a dense N x N quadrature (kernel
matrix precomputed, one matmul) and a 3x3 depthwise convolution, forward and
forward+backward, at 32^2, 64^2, 128^2 and 360x480; an N log N check at a fixed pixel
budget; then the feature-space operator's fused path against plain autograd (time and
memory saved for backward) against its pooling factor.

    python -m operad.experiments.bench.pide [--quick] [--min] [--plot bench_pide.png]

Timings are medians of several runs after warm-up, on ``torch.set_num_threads(2)``; the FFT
operator and the depthwise conv are timed in alternation, so machine load hits both alike
(the dense ratio comes from a second interleaved round of FFT and matmul, so the FFT
there runs right after the matmul's BLAS threads, which makes that ratio conservative).
The dense form is skipped where its N x N float32 matrix would exceed ``--dense-gib``
(360x480: N = 172800, a 111 GiB matrix).
"""
from __future__ import annotations

import argparse
import math

from operad.experiments.bench.timing import saved_mib, time_fn, time_interleaved

import torch
from torch import nn

from operad import Field, ops
from operad.operators.nonlocal_ops import frac_const


MIN = False  # --min: report the minimum instead of the median (robust on a loaded machine)
WARM_S = 1.0  # seconds of warm-up before each interleaved timing (thread pools and caches settle)


def _time(fn, reps: int, warm: int = 2) -> float:
    return time_fn(fn, reps, warm, reduce="min" if MIN else "median")


def _times(fns, reps: int, warm: int = 6, warm_s: float = None):
    warm_s = WARM_S if warm_s is None else warm_s
    return time_interleaved(fns, reps, warm, reduce="min" if MIN else "median", warmup_s=warm_s)


def quadrature_matrix(h: int, w: int, s: float = 0.5, chunk: int = 2048) -> torch.Tensor:
    """The dense periodic quadrature of ``c(2,s) sum_j (u_i - u_j) / |x_i - x_j|^(2+2s)`` (grid
    spacing 1, nearest periodic image), as an N x N float32 matrix ``diag(rowsum) - W``."""
    n = h * w
    c = float(frac_const(2, torch.tensor(s, dtype=torch.float64)))
    r = torch.arange(n) // w
    q = torch.arange(n) % w
    k = torch.empty(n, n)
    for a in range(0, n, chunk):
        dr = (r[a:a + chunk, None] - r[None]).abs()
        dq = (q[a:a + chunk, None] - q[None]).abs()
        dr = torch.minimum(dr, h - dr).float()
        dq = torch.minimum(dq, w - dq).float()
        d2 = dr * dr + dq * dq
        blk = torch.where(d2 > 0, c * d2.clamp_min(1).pow(-(1 + s)), torch.zeros_like(d2))
        k[a:a + chunk] = -blk
        k[a:a + chunk, a:a + chunk].diagonal().add_(blk.sum(1))
    return k


def bench_grid(sizes, batch, channels, reps, dense_gib):
    print(f"\n== grid fractional Laplacian s=0.5 (FFT) vs dense quadrature matmul vs 3x3 depthwise conv "
          f"(batch {batch}, {channels} channels) ==")
    hdr = (f"{'size':>9} {'N':>7} | {'fft fwd ms':>10} {'dense fwd':>10} {'dw3x3 fwd':>10} | {'fft f+b':>9} "
           f"{'dense f+b':>10} {'dw f+b':>9} | {'dense/fft':>9} {'dense/fft f+b':>13} {'fft/dw':>7} "
           f"{'fft/dw f+b':>10}")
    print(hdr)
    rows = []
    for (h, w) in sizes:
        b = batch if h * w <= 128 * 128 else 1
        n = h * w
        frac = ops.fractional_laplacian(0.5).bind(Field(channels))
        dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        x = torch.randn(b, channels, h, w)
        xg = x.clone().requires_grad_(True)
        with torch.no_grad():
            t = _times({"fft": lambda: frac(x), "dw": lambda: dw(x)}, reps)
        tb = _times({"fft": lambda: frac(xg).sum().backward(), "dw": lambda: dw(xg).sum().backward()}, reps)
        t_fft, t_dw, t_fft_b, t_dw_b = t["fft"], t["dw"], tb["fft"], tb["dw"]
        t_dense = t_dense_b = float("nan")
        r_dense = r_dense_b = float("nan")
        if n * n * 4 / 2 ** 30 <= dense_gib:
            kt = quadrature_matrix(h, w).T.contiguous()
            flat = x.reshape(b * channels, n)
            flatg = flat.clone().requires_grad_(True)
            dreps = max(3, reps // 2)
            with torch.no_grad():
                td = _times({"fft": lambda: frac(x), "dense": lambda: flat @ kt}, dreps, 1, 0.0)
            tdb = _times({"fft": lambda: frac(xg).sum().backward(),
                          "dense": lambda: (flatg @ kt).sum().backward()}, dreps, 1, 0.0)
            t_dense, t_dense_b = td["dense"], tdb["dense"]
            r_dense, r_dense_b = td["dense"] / td["fft"], tdb["dense"] / tdb["fft"]
            del kt
        rows.append((h, w, b, t_fft, t_dense, t_dw))
        f = lambda v: f"{1e3 * v:10.3f}" if v == v else f"{'(memory)':>10}"
        r = lambda v: f"{v:9.1f}" if v == v else f"{'-':>9}"
        print(f"{h:>4}x{w:<4} {n:>7} | {f(t_fft)} {f(t_dense)} {f(t_dw)} | {1e3 * t_fft_b:9.3f} "
              f"{(1e3 * t_dense_b if t_dense_b == t_dense_b else float('nan')):10.3f} {1e3 * t_dw_b:9.3f} | "
              f"{r(r_dense)} {r(r_dense_b):>13} {t_fft / t_dw:7.2f} {t_fft_b / t_dw_b:10.2f}")
    print("dense: N x N float32 kernel matrix precomputed, one matmul (nan/'(memory)' where it would exceed "
          f"{dense_gib} GiB); 360x480 runs at batch 1 (fft/dw ratios there are at equal batch).")
    return rows


def plot_grid(rows, channels: int, path: str) -> str:
    """Forward time per image channel against the number of pixels, log-log, with an
    ``N log N`` guide through the FFT's first point."""
    from operad.experiments.plots import plot_lines
    ns = [h * w for h, w, *_ in rows]
    per = lambda i: [1e6 * r[i] / (r[2] * channels) for r in rows]
    fft = per(3)
    guide = [fft[0] * n * math.log2(n) / (ns[0] * math.log2(ns[0])) for n in ns]
    return plot_lines({"FFT operator": (ns, fft), "dense matmul": (ns, per(4)), "3x3 depthwise conv": (ns, per(5)),
                       "N log N (guide)": (ns, guide)}, path, "pixels N", "forward us per image channel",
                      "grid fractional Laplacian, s = 0.5", logx=True, logy=True)


def bench_scaling(sides, pixels: int, reps: int):
    """Growth of the FFT operator's time with N at a fixed number of pixels per call (more
    channels at small sizes), all sizes timed in alternation: an N log N algorithm keeps
    ``time / log2 N`` flat, so the last column stays near 1 (cache effects aside)."""
    print(f"\n== N log N check: FFT operator forward at {pixels:,} pixels per call (channels = pixels / N) ==")
    fns, logs = {}, {}
    for side in sides:
        n = side * side
        c = max(1, pixels // n)
        m = ops.fractional_laplacian(0.5).bind(Field(c))
        x = torch.randn(1, c, side, side)
        fns[side] = (lambda m_, x_: (lambda: m_(x_)))(m, x)
        logs[side] = math.log2(n)
    with torch.no_grad():
        t = _times(fns, reps)
    base = t[sides[0]] / logs[sides[0]]
    print(f"{'size':>9} {'N':>7} {'channels':>8} {'fwd ms':>9} {'(t/log2 N) rel':>15}")
    for side in sides:
        n = side * side
        print(f"{side:>4}x{side:<4} {n:>7} {max(1, pixels // n):>8} {1e3 * t[side]:9.3f} "
              f"{t[side] / logs[side] / base:15.2f}")
    return {side: t[side] / logs[side] / base for side in sides}


def bench_feature(size, channels, pools, reps):
    print(f"\n== feature-space fractional Laplacian at {size[0]}x{size[1]}, {channels} channels, batch 1: "
          f"fused row blocks vs plain autograd, against the pooling factor ==")
    print(f"{'pool':>4} {'keys M':>7} {'fwd ms':>8} {'f+b ms':>8} {'plain f+b':>9} {'plain/fused':>11} "
          f"{'saved MiB':>9} {'plain saved':>11} {'kernel MiB':>10} {'MACs':>12}")
    import operad
    n = size[0] * size[1]
    for p in pools:
        m = ops.fractional_laplacian(0.5, space="feature", pool=p).bind(Field(channels))
        plain = ops.fractional_laplacian(0.5, space="feature", pool=p).bind(Field(channels))
        plain.load_state_dict(m.state_dict())
        plain.fused = False
        x = torch.randn(1, channels, *size)
        xg = x.clone().requires_grad_(True)
        with torch.no_grad():
            t = _time(lambda: m(x), reps)
        tb = _times({"fused": lambda: m(xg).sum().backward(), "plain": lambda: plain(xg).sum().backward()},
                    max(3, reps // 2), 1, 0.0)
        _, mib = saved_mib(lambda: m(xg).sum())
        _, mib_plain = saved_mib(lambda: plain(xg).sum())
        keys = (size[0] // p) * (size[1] // p)
        macs = operad.cost(m, size=size).macs
        print(f"{p:>4} {keys:>7} {1e3 * t:8.2f} {1e3 * tb['fused']:8.2f} {1e3 * tb['plain']:9.2f} "
              f"{tb['plain'] / tb['fused']:11.2f} {mib:9.2f} {mib_plain:11.1f} {n * keys * 4 / 2 ** 20:10.1f} "
              f"{macs:12,d}")
    print("saved MiB: what autograd keeps for the backward pass (measured); kernel MiB: one float32 N x M "
          "kernel matrix per sample, which the fused path never holds whole (row blocks of "
          f"{operad.operators.nonlocal_ops._FUSED_BLOCK:,} elements, recomputed in the backward pass).")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, no 128x128 dense")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dense-gib", type=float, default=1.1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 avoids OpenMP stalls under load)")
    ap.add_argument("--min", action="store_true", help="report the minimum time (a loaded machine)")
    ap.add_argument("--plot", metavar="PNG", help="also plot forward time against N (log-log) to this file")
    args = ap.parse_args(argv)
    global MIN
    MIN = args.min
    print(f"timing statistic: {'minimum' if MIN else 'median'} of the runs after warm-up")
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}")
    torch.manual_seed(0)
    reps = 3 if args.quick else 15
    dense = 0.3 if args.quick else args.dense_gib
    rows = bench_grid([(32, 32), (64, 64), (128, 128), (360, 480)], args.batch, args.channels, reps, dense)
    if args.plot:
        print(f"plot: {plot_grid(rows, args.channels, args.plot)}")
    bench_scaling([32, 64, 128, 256, 512], 2 ** 21, reps)
    bench_feature((64, 64), 32, (1, 2, 4, 8), reps)


if __name__ == "__main__":
    main()
