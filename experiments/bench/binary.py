"""Binary networks on the CPU: the packed XNOR convolution against the float
convolution of the same shape, and the saved size of packed models.

Speed: one 3x3 layer, ``C -> C`` channels, for ``C`` in ``--channels``; the
float conv (``F.conv2d``, MKL-DNN), the packed XNOR layer (``pack`` of a
``binary_conv(scheme="xnor")``: sign, bit-pack, xor/popcount, alpha) with the
C++ popcount kernel (built once by torch, ``__builtin_popcountll``) and with
pure torch bit operations. Timed interleaved (``timing.time_interleaved``),
the minimum over ``--runs`` rounds (robust on a shared machine), ``--threads`` threads; every packed output is checked equal to the float
simulation ``conv(sign(x), sign(W)) * alpha`` before timing.

Size: for each model, the bytes of ``torch.save(state_dict)`` of the binarized
layers (``rewrite.packable_state``), trained form (float weights) against
packed (sign bits + alpha, all layers in one store), and of the whole model.

    .venv/bin/python -m operad.experiments.bench.binary
    .venv/bin/python -m operad.experiments.bench.binary --channels 64 128 256 --size 16 --batch 4 --threads 1
    .venv/bin/python -m operad.experiments.bench.binary --sizes-only     # the saved sizes alone
"""
from __future__ import annotations

import argparse
import io
from typing import Dict, List

import torch
import torch.nn.functional as F

from operad import Field, ops, rewrite
from operad.models import create_model
from operad.operators import _bitpack

from .timing import time_interleaved

__all__ = ["speed", "sizes", "main"]


@torch.no_grad()
def speed(channels: int, size: int, batch: int, runs: int, backends: List[str]) -> Dict[str, float]:
    """Seconds per forward of the float conv and the packed XNOR layer(s)."""
    torch.manual_seed(0)
    m = ops.binary_conv(channels, scheme="xnor", bias=False).bind(Field(channels)).eval()
    p = rewrite.pack(m)
    x = torch.randn(batch, channels, size, size)
    w = m.weight.detach().clone()
    ref = F.conv2d(torch.where(x >= 0, 1.0, -1.0), torch.where(w >= 0, 1.0, -1.0), padding=1)
    fns = {"float": lambda: F.conv2d(x, w, padding=1)}
    for b in backends:
        words, wsum = p.words, p.wsum
        got = _bitpack.xnor_conv2d(x, words, channels, 1, (1, 1), backend=b, wsum=wsum)
        if not torch.equal(got, ref):
            raise AssertionError(f"packed xnor conv ({b}) differs from conv(sign x, sign W)")
        fns[b] = (lambda b=b: _bitpack.xnor_conv2d(x, words, channels, 1, (1, 1), backend=b, wsum=wsum))
    if "cpp" in backends:
        fns["layer"] = lambda: p(x)  # the whole packed layer (auto backend), alpha included
    return time_interleaved(fns, runs=runs, warmup=2, reduce="min")


def _file_bytes(sd) -> int:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getbuffer().nbytes


def sizes(name: str) -> Dict[str, float]:
    """Saved bytes of a binary model's binarized layers (``rewrite.packable_state``)
    and of the whole model, trained form against packed."""
    m = create_model(name).eval()
    p = rewrite.pack(m)
    return {"layers_float": _file_bytes(rewrite.packable_state(m)),
            "layers_packed": _file_bytes(rewrite.packable_state(p)),
            "model_float": _file_bytes(m.state_dict()), "model_packed": _file_bytes(p.state_dict())}


def _print_speed(args) -> None:
    """The speed table: float conv against the packed XNOR layer(s), one row per channel count."""
    backends = ["torch"]
    if not args.no_cpp:
        if _bitpack.load_cpp():
            backends.insert(0, "cpp")
        else:
            print("C++ popcount kernel unavailable; timing the torch kernel only")
    print(f"3x3 conv C -> C, {args.batch}x C x {args.size}x{args.size}, {args.threads} thread(s), min of {args.runs}")
    head = "| C | float ms | " + " | ".join(f"xnor[{b}] ms | float/xnor[{b}]" for b in backends)
    head += " | packed layer ms | float/layer |" if "cpp" in backends else " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for c in args.channels:
        t = speed(c, args.size, args.batch, args.runs, backends)
        row = f"| {c} | {t['float'] * 1e3:.2f} | " + " | ".join(
            f"{t[b] * 1e3:.2f} | {t['float'] / t[b]:.2f}x" for b in backends)
        row += f" | {t['layer'] * 1e3:.2f} | {t['float'] / t['layer']:.2f}x |" if "layer" in t else " |"
        print(row)
    print()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-cpp", action="store_true", help="skip the C++ popcount kernel")
    ap.add_argument("--sizes-only", action="store_true", help="only the saved sizes (no timing)")
    ap.add_argument("--models", nargs="*", default=["nin_cifar_xnor", "resnet20_xnor", "bnn_vgg_cifar", "resnet18_xnor"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.sizes_only:
        _print_speed(args)
    print("| model | binarized layers: float bytes | packed bytes | ratio | whole model: float | packed | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        s = sizes(name)
        print(f"| {name} | {s['layers_float']:,} | {s['layers_packed']:,} | {s['layers_float'] / s['layers_packed']:.1f}x"
              f" | {s['model_float']:,} | {s['model_packed']:,} | {s['model_float'] / s['model_packed']:.1f}x |")


if __name__ == "__main__":
    main()
