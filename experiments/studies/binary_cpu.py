"""The CPU study of binary networks: full precision vs BWN vs XNOR vs QNN, from
the runs of ``experiments/configs/binary_vs_float.toml`` (and ``binary_nin.toml``)
trained once per seed, one run at a time::

    for s in 0 1 2; do operad train binary_vs_float --profile cpu --out runs/binary/seed$s seed=$s; done
    python -m operad.experiments.studies.binary_cpu runs/binary/seed* --out experiments/results/cpu/binary

For every model: top-1 on the validation subset (mean and standard deviation
over the seeds), parameters, bytes and BOPs (exact, ``operad.cost``), the
saved size of the trained and the packed state dict, the largest difference of
the packed model's logits from the trained model's (eval mode), and the CPU
latency of the trained form (float simulation) and of the packed form
(``operad.rewrite.pack``; XNOR layers by xor/popcount), one thread, batch 16,
timed interleaved (minimum of the rounds).
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import statistics
from typing import Dict, List

import torch

__all__ = ["collect", "main"]


def _load(run: str):
    from operad import create_model
    ck = torch.load(os.path.join(run, "final.pt"), map_location="cpu", weights_only=True)
    cfg = ck["config"]
    m = create_model(cfg["model"], num_classes=len(ck["classes"]) if ck.get("classes") else 10)
    sd = ck["ema"] if ck.get("ema") is not None else ck["model"]
    m.load_state_dict(sd)
    return m.eval(), cfg


def _file_bytes(sd) -> int:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getbuffer().nbytes


@torch.no_grad()
def _measure(m, runs: int) -> Dict[str, float]:
    import operad
    from operad.experiments.bench.timing import time_interleaved
    p = operad.rewrite.pack(m)
    x = torch.randn(16, 3, 32, 32)
    y = m(x)
    t = time_interleaved({"trained": lambda: m(x), "packed": lambda: p(x)}, runs=runs, warmup=1, reduce="min")
    c = operad.cost(m, size=(32, 32))
    return {"params": c.params, "bytes": float(c.bytes), "bops": float(c.bops), "macs": float(c.macs),
            "file_trained": _file_bytes(m.state_dict()), "file_packed": _file_bytes(p.state_dict()),
            "packed_max_diff": float((p(x) - y).abs().max() / y.abs().max()),
            "ms_trained": t["trained"] * 1e3, "ms_packed": t["packed"] * 1e3}


def collect(runs: List[str], timing_runs: int = 5) -> List[dict]:
    """One row per model name (the run name), its seeds pooled."""
    by_name: Dict[str, List[str]] = {}
    for r in runs:
        by_name.setdefault(os.path.basename(os.path.normpath(r)), []).append(r)
    rows = []
    for name, rs in by_name.items():
        accs = [json.load(open(os.path.join(r, "summary.json")))["top1"] for r in rs]
        m, cfg = _load(rs[0])
        row = {"name": name, "model": cfg["model"], "seeds": len(accs), "top1": accs,
               "top1_mean": statistics.mean(accs), "top1_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0}
        row.update(_measure(m, timing_runs))
        rows.append(row)
    return rows


def table(rows: List[dict]) -> str:
    fp = {r["name"].split("_")[0]: r for r in rows if r["name"].endswith("_fp")}
    out = ["| run | model | seeds | top-1 (mean +- sd) | params | bytes | bytes vs FP | BOPs | BOPs vs FP | "
           "saved trained -> packed | packed max diff | trained ms | packed ms |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = fp.get(r["name"].split("_")[0], r)
        out.append(f"| {r['name']} | {r['model']} | {r['seeds']} | {100 * r['top1_mean']:.1f} +- {100 * r['top1_sd']:.1f} "
                   f"| {r['params']:,} | {r['bytes']:,.0f} | {base['bytes'] / r['bytes']:.1f}x | {r['bops']:.3g} "
                   f"| {base['bops'] / r['bops']:.1f}x | {r['file_trained']:,} -> {r['file_packed']:,} "
                   f"| {r['packed_max_diff']:.1e} | {r['ms_trained']:.1f} | {r['ms_packed']:.1f} |")
    return "\n".join(out)


def main(argv=None) -> List[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="folders holding one run directory per model (e.g. one per seed)")
    ap.add_argument("--out", help="write table.md and results.json here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-cpp", action="store_true", help="do not build/use the C++ popcount kernel")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if not a.no_cpp:
        from operad.operators import _bitpack
        _bitpack.load_cpp()
    runs = sorted(d for root in a.roots for d in glob.glob(os.path.join(root, "*"))
                  if os.path.isfile(os.path.join(d, "final.pt")))
    rows = collect(runs, a.runs)
    text = table(rows)
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "table.md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
