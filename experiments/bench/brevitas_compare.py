"""operad's binary-weight convolution against Brevitas' (the library users would
otherwise pick: ``pip install brevitas``, or ``pip install operad[compare]``).

The same 3x3 layer, ``C -> C`` channels, binarized both ways from one float
weight: operad ``binary_conv(scheme="bwn")`` (``alpha * sign(W)``, alpha the
mean ``|W|`` per filter) and Brevitas ``QuantConv2d`` with its signed binary
weight quantizer set to the same scale (``STATS`` of ``AVE`` per output
channel). Reported: the largest difference of the forward outputs (they must
agree to float rounding), of the weight gradients (each library's
straight-through estimator; information only), and the training step time
(forward, backward, SGD step), timed interleaved (minimum over ``--runs``).

    PYTHONPATH=/path/to/brevitas .venv/bin/python -m operad.experiments.bench.brevitas_compare
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict

import torch

from operad import Field, ops

from .timing import time_interleaved

__all__ = ["brevitas_bwn_conv", "compare", "main"]


def brevitas_bwn_conv(cin: int, cout: int):
    """A Brevitas conv with BWN weights (per-filter mean |W| scale); ImportError without Brevitas."""
    import brevitas.nn as qnn
    from brevitas.core.function_wrapper import TensorClamp
    from brevitas.inject.enum import ScalingImplType, ScalingPerOutputType, StatsOp
    from brevitas.quant import SignedBinaryWeightPerTensorConst

    class BWNWeight(SignedBinaryWeightPerTensorConst):
        scaling_impl_type = ScalingImplType.STATS
        scaling_stats_op = StatsOp.AVE
        scaling_per_output_type = ScalingPerOutputType.CHANNEL
        tensor_clamp_impl = TensorClamp  # do not clip the float weights in place

    return qnn.QuantConv2d(cin, cout, 3, padding=1, bias=False, weight_quant=BWNWeight)


def _step(m, x, opt):
    def run():
        opt.zero_grad(set_to_none=True)
        m(x).square().mean().backward()
        opt.step()
    return run


def compare(channels: int, size: int, batch: int, runs: int) -> Dict[str, float]:
    torch.manual_seed(0)
    ours = ops.binary_conv(channels, scheme="bwn", bias=False).bind(Field(channels))
    theirs = brevitas_bwn_conv(channels, channels)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
    x = torch.randn(batch, channels, size, size)
    y1, y2 = ours(x), theirs(x)
    y2 = y2.value if hasattr(y2, "value") else y2
    out_diff = float(((y1 - y2).abs().max() / y1.abs().max()).detach())
    y1.square().mean().backward()
    y2.square().mean().backward()
    grad_diff = float((ours.weight.grad - theirs.weight.grad).abs().max() / ours.weight.grad.abs().max())
    t = time_interleaved({"operad": _step(ours, x, torch.optim.SGD(ours.parameters(), lr=1e-3)),
                          "brevitas": _step(theirs, x, torch.optim.SGD(theirs.parameters(), lr=1e-3))},
                         runs=runs, warmup=2, reduce="min")
    return {"out_diff": out_diff, "grad_diff": grad_diff, "operad": t["operad"], "brevitas": t["brevitas"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        import brevitas
    except ImportError:
        print("brevitas is not installed: `pip install brevitas` (or operad[compare]) to run this comparison; skipped")
        return 0
    torch.set_num_threads(args.threads)
    print(f"Brevitas {brevitas.__version__}, torch {torch.__version__}; 3x3 conv C -> C, batch {args.batch}, "
          f"{args.size}x{args.size}, {args.threads} thread(s), training step = forward + backward + SGD, min of {args.runs}")
    print("| C | forward max diff (rel) | weight-grad max diff (rel) | operad step ms | Brevitas step ms | Brevitas/operad |")
    print("|---|---|---|---|---|---|")
    ok = True
    for c in args.channels:
        r = compare(c, args.size, args.batch, args.runs)
        ok &= r["out_diff"] < 1e-5
        print(f"| {c} | {r['out_diff']:.1e} | {r['grad_diff']:.1e} | {r['operad'] * 1e3:.2f} | {r['brevitas'] * 1e3:.2f} "
              f"| {r['brevitas'] / r['operad']:.2f}x |")
    if not ok:
        print("forward outputs DISAGREE", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
