"""Benchmark: our DT-CWPT against pytorch_wavelets' DTCWT, and CMod against conv + max-pool.

One run prints two tables of median times (forward + backward, after warm-up;
the two sides of each row are timed interleaved, so machine load hits both):

1. ``ops.dtcwpt(levels=J)`` (every packet, ``2 * 4**J`` complex per channel)
   vs ``pytorch_wavelets.DTCWTForward(J=J, biort="near_sym_a", qshift="qshift_a")``
   on the same input; ratio = theirs / ours (> 1: we are faster).
2. First layers at 224 x 224: ``ops.cmod(64, levels=2, mix=4)`` and the twin
   stem (32 free + 32 CMod channels) vs ResNet's 7x7/2 conv + BN + ReLU + 3x3/2
   max-pool with 64 channels; ratio = ours / standard (target <= 1.5).

    python -m operad.experiments.bench.wavelet            # the full table
    python -m operad.experiments.bench.wavelet --quick    # a smoke run

pytorch_wavelets is a benchmark extra (``pip install 'operad[bench]'``; it needs
``setuptools<81``); without it table 1 shows our times only.
"""
from __future__ import annotations

import argparse
from typing import Callable, Dict, List, Optional

import torch

from ... import Field, ops
from .timing import time_interleaved

__all__ = ["time_pair", "main"]


def _fb(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        xx = x.detach().requires_grad_(True)
        out = module(xx)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        loss = 0
        for o in outs:
            for t in (o if isinstance(o, (tuple, list)) else (o,)):
                loss = loss + t.float().square().mean()
        loss.backward()
    return step


def time_pair(a: Callable[[], None], b: Callable[[], None], repeats: int = 7, warmup: int = 2) -> tuple:
    """Median seconds of ``a`` and ``b``, timed alternately."""
    t = time_interleaved({"a": a, "b": b}, repeats, warmup)
    return t["a"], t["b"]


def _theirs(levels: int) -> Optional[torch.nn.Module]:
    try:
        from pytorch_wavelets import DTCWTForward
    except Exception:  # not installed (benchmark extra) or pkg_resources missing
        return None
    return DTCWTForward(J=levels, biort="near_sym_a", qshift="qshift_a")


def wavelet_table(sizes, batch: int, channels: int, repeats: int) -> List[Dict]:
    rows = []
    for levels in (1, 2, 3):
        ours = ops.dtcwpt(levels=levels).bind(Field(channels))
        theirs = _theirs(levels)
        for n in sizes:
            x = torch.randn(batch, channels, n, n)
            a = _fb(ours, x)
            if theirs is None:
                ta, _ = time_pair(a, lambda: None, repeats)
                tb = float("nan")
            else:
                ta, tb = time_pair(a, _fb(theirs, x), repeats)
            rows.append(dict(J=levels, size=n, ours_ms=1e3 * ta, theirs_ms=1e3 * tb, ratio=tb / ta))
    return rows


def first_layer_table(batch: int, size: int, repeats: int) -> List[Dict]:
    std = (ops.conv(64, k=7, stride=2, bias=False) >> ops.bn() >> ops.relu()
           >> ops.max_pool(3, stride=2, padding=1)).bind(Field(3))
    free = ops.conv(32, k=7, stride=2, bias=False) >> ops.bn() >> ops.relu() >> ops.max_pool(3, stride=2, padding=1)
    cands = {"cmod(64, J=2, mix=4)": ops.cmod(64, levels=2, mix=4).bind(Field(3)),
             "twin stem 32 conv + 32 cmod": ops.concat(free, ops.cmod(32, levels=2, mix=2)).bind(Field(3)),
             "rmax(64, J=2, mix=4)": ops.rmax(64, levels=2, mix=4).bind(Field(3))}
    x = torch.randn(batch, 3, size, size)
    rows = []
    for name, m in cands.items():
        ta, tb = time_pair(_fb(m, x), _fb(std, x), repeats)
        rows.append(dict(layer=name, ours_ms=1e3 * ta, std_ms=1e3 * tb, ratio=ta / tb))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats (a smoke run)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.quick:
        a.sizes, a.batch, a.repeats = [32], 2, 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, "
          f"{a.channels} channels, forward + backward, median of {a.repeats}")
    print("\nDT-CWPT (ours, all packets) vs pytorch_wavelets DTCWTForward (near_sym_a / qshift_a)")
    print(f"{'J':>2} {'size':>5} {'ours ms':>9} {'theirs ms':>10} {'theirs/ours':>12}")
    for r in wavelet_table(a.sizes, a.batch, a.channels, a.repeats):
        print(f"{r['J']:>2} {r['size']:>5} {r['ours_ms']:>9.2f} {r['theirs_ms']:>10.2f} {r['ratio']:>12.2f}")
    size = 64 if a.quick else 224
    print(f"\nFirst layer at {size}x{size} vs 7x7/2 conv(64) + BN + ReLU + 3x3/2 max-pool")
    print(f"{'layer':<30} {'ours ms':>9} {'std ms':>9} {'ours/std':>9}")
    for r in first_layer_table(a.batch, size, a.repeats):
        print(f"{r['layer']:<30} {r['ours_ms']:>9.2f} {r['std_ms']:>9.2f} {r['ratio']:>9.2f}")


if __name__ == "__main__":
    main()
