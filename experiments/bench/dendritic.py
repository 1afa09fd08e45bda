"""Dendritic convolution: the naive (B, C_out, C_in k^2, H W) form against the fused
chunked one, with ``conv(relu(x))`` as the baseline.

    .venv/bin/python -m operad.experiments.bench.dendritic

Per configuration: memory autograd keeps for the backward pass (MiB, measured
with saved-tensor hooks), the largest transient (analytic: the naive form
builds the whole per-connection tensor, the fused form one chunk), and the
median forward+backward time after warm-up, with ratios to the baseline.
"""
from __future__ import annotations


from operad.experiments.bench.timing import saved_mib as _saved_mib, time_fn

import torch

from operad import Field, ops
from operad.operators import dendritic as D


def _time(fn, reps=5):
    return time_fn(fn, reps, warmup=1)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    configs = [(16, 16, 16, 16), (16, 32, 32, 8)]  # batch, C_in = C_out, H = W ... and batch, C, C, H
    print(f"{'config':<26}{'impl':<12}{'saved MiB':>10}{'transient MiB':>15}{'fwd+bwd ms':>12}{'x baseline':>12}")
    for b, cin, cout, hw in configs:
        x = torch.randn(b, cin, hw, hw, requires_grad=True)
        conv = ops.conv(cout, k=3, bias=False).bind(Field(cin))
        mods = {"conv(relu)": lambda: conv(x.relu())}
        for impl in ("naive", "fused"):
            m = ops.dendritic_conv(cout, k=3, impl=impl).bind(Field(cin))
            m.weight.data.copy_(conv.weight.data)
            mods[impl] = (lambda mm: (lambda: mm(x)))(m)
        base = None
        j, l = cin * 9, hw * hw
        for name, fn in mods.items():
            y, saved = _saved_mib(fn)
            t = _time(lambda: fn().square().sum().backward())
            base = base or t
            if name == "naive":
                trans = b * cout * j * l * 4 / 2 ** 20
            elif name == "fused":
                trans = b * D._chunk(b, cout, j, l) * j * l * 4 / 2 ** 20
            else:
                trans = b * cout * l * 4 / 2 ** 20
            print(f"{f'B{b} C{cin}->{cout} {hw}x{hw}':<26}{name:<12}{saved:>10.1f}{trans:>15.1f}"
                  f"{t * 1e3:>12.1f}{t / base:>12.2f}")


if __name__ == "__main__":
    main()
