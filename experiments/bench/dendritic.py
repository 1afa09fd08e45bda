"""Dendritic convolution: the naive (B, C_out, C_in k^2, H W) form, the fused
chunked one and the compiled (inductor) one, with ``conv(relu(x))`` as the baseline.

    python -m operad.experiments.bench.dendritic
    python -m operad.experiments.bench.dendritic --configs 2,4,4,8 --runs 3     # small

All four compute the same function (dendrite biases 0, the conv's weights): the
table's ``max diff`` column says how close they are. Per configuration: memory
autograd keeps for the backward pass (MiB, measured with saved-tensor hooks), the
largest transient (analytic: the naive form builds the whole per-connection
tensor, the fused form one chunk), and the forward+backward time, the three timed
in alternation (:func:`~operad.experiments.bench.timing.time_interleaved`, median
of ``--runs`` rounds after warm-up), with ratios to the baseline.
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Sequence, Tuple

import torch

from operad import Field, ops
from operad.experiments.bench.timing import saved_mib, time_interleaved
from operad.operators import dendritic as D

__all__ = ["CONFIGS", "run", "main"]

CONFIGS = [(16, 16, 16, 16), (16, 32, 32, 8)]  # (batch, C_in, C_out, H = W)


def _forms(b: int, cin: int, cout: int, hw: int):
    """The input and the three modules computing ``conv(relu(x))``."""
    x = torch.randn(b, cin, hw, hw, requires_grad=True)
    conv = ops.conv(cout, k=3, bias=False).bind(Field(cin))
    mods = {"conv(relu)": lambda: conv(x.relu())}
    for impl in ("naive", "fused", "compiled"):
        m = ops.dendritic_conv(cout, k=3, impl=impl).bind(Field(cin))
        m.weight.data.copy_(conv.weight.data)
        mods[impl] = (lambda mm: (lambda: mm(x)))(m)
    return x, mods


def run(configs: Sequence[Tuple[int, int, int, int]] = CONFIGS, runs: int = 5, warmup: int = 1,
        verbose: bool = True) -> List[Dict[str, object]]:
    """One row per (configuration, form): saved and transient MiB, seconds, ratio, max diff."""
    rows = []
    if verbose:
        print(f"{'config':<26}{'impl':<12}{'saved MiB':>10}{'transient MiB':>15}{'fwd+bwd ms':>12}"
              f"{'x baseline':>12}{'max diff':>10}")
    for b, cin, cout, hw in configs:
        x, mods = _forms(b, cin, cout, hw)
        with torch.no_grad():
            ref = mods["conv(relu)"]()
            diffs = {k: float((f() - ref).abs().max()) for k, f in mods.items()}
        saved = {k: saved_mib(f)[1] for k, f in mods.items()}
        times = time_interleaved({k: (lambda f: (lambda: f().square().sum().backward()))(f) for k, f in mods.items()},
                                 runs=runs, warmup=warmup)
        j, l = cin * 9, hw * hw
        trans = {"conv(relu)": b * cout * l * 4 / 2 ** 20, "naive": b * cout * j * l * 4 / 2 ** 20,
                 "fused": b * D._chunk(b, cout, j, l) * j * l * 4 / 2 ** 20,
                 "compiled": b * cout * l * 4 / 2 ** 20}  # inductor's loops hold one output
        for name in mods:
            row = dict(config=f"B{b} C{cin}->{cout} {hw}x{hw}", impl=name, saved_mib=saved[name],
                       transient_mib=trans[name], seconds=times[name], ratio=times[name] / times["conv(relu)"],
                       max_diff=diffs[name])
            rows.append(row)
            if verbose:
                print(f"{row['config']:<26}{name:<12}{row['saved_mib']:>10.1f}{row['transient_mib']:>15.1f}"
                      f"{row['seconds'] * 1e3:>12.1f}{row['ratio']:>12.2f}{row['max_diff']:>10.1e}")
    return rows


def main(argv=None) -> List[Dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="*", default=None, help="batch,C_in,C_out,H (default: the two standard ones)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    configs = [tuple(int(v) for v in c.split(",")) for c in a.configs] if a.configs else CONFIGS
    return run(configs, a.runs)


if __name__ == "__main__":
    main()
