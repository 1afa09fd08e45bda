"""The efficiency study (Roth et al.): ResNet-56's variants measured side by side on this CPU.

Each claim reads one ratio off the efficiency table of ResNet-56
(:func:`operad.experiments.efficiency.efficiency_table`, random weights: latency,
bytes and MACs do not depend on the values), built once per seed and profile
and shared by the claims: pruning to half the MACs
(:func:`operad.rewrite.amount_for_macs`) halves the MACs and lowers the latency,
int8 (torch.ao FX static quantization, real int8 kernels) is about 4x smaller on
disk and faster, and the packed XNOR network is more than 10x smaller on disk.
Latency ratios come from variants timed in alternation (one thread, batch 32).
The full table with every variant is ``operad efficiency resnet56``
(committed under ``experiments/results/cpu/efficiency``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple

from .base import Claim, register

PAPER = "Roth et al. Resource-Efficient Neural Networks for Embedded Systems (arXiv 2001.03048)"
MODEL = "resnet56"

# ratio -> (the variants it needs, timed or not)
_NEEDS: Dict[str, Tuple[Tuple[str, ...], bool]] = {
    "pruned2x_macs": (("float32", "pruned2x"), False),
    "pruned2x_latency": (("float32", "int8", "pruned2x"), True),
    "int8_latency": (("float32", "int8", "pruned2x"), True),
    "int8_bytes": (("float32", "int8"), False),
    "xnor_packed_bytes": (("float32", "xnor"), False),
}
_TABLES: Dict[Tuple[Tuple[str, ...], bool, int, str], Dict[str, Any]] = {}


def _row(res: Dict[str, Any], variant: str) -> Dict[str, Any]:
    row = next((r for r in res["rows"] if r["variant"] == variant), None)
    if row is None or row["error"]:
        raise RuntimeError(f"the efficiency table has no {variant} row" + (f": {row['error']}" if row else ""))
    return row


def table_ratio(res: Dict[str, Any], what: str, batch: int = 32) -> float:
    """One claim's ratio read off an efficiency table (``efficiency_table``'s result).

    >>> rows = [{"variant": "float32", "error": "", "macs": 100.0, "bytes": 4000, "latency_s": {"cpu": {"32": 2.0}}},
    ...         {"variant": "pruned2x", "error": "", "macs": 48.0, "bytes": 2000, "latency_s": {"cpu": {"32": 1.2}}}]
    >>> table_ratio({"rows": rows}, "pruned2x_macs"), table_ratio({"rows": rows}, "pruned2x_latency")
    (0.48, 0.6)
    """
    f = _row(res, "float32")
    if what in ("pruned2x_macs",):
        return _row(res, "pruned2x")["macs"] / f["macs"]
    if what in ("pruned2x_latency", "int8_latency"):
        v = _row(res, what.split("_")[0])["latency_s"]["cpu"][str(batch)]
        t = f["latency_s"]["cpu"][str(batch)]
        if isinstance(v, str) or isinstance(t, str):
            raise RuntimeError(f"{what}: a variant was not timed ({v if isinstance(v, str) else t})")
        return v / t
    if what == "int8_bytes":
        return f["bytes"] / _row(res, "int8")["bytes"]
    if what == "xnor_packed_bytes":
        return f["bytes"] / _row(res, "xnor")["bytes"]
    raise KeyError(f"unknown efficiency ratio {what!r}; known: {', '.join(_NEEDS)}")


def _table(variants: Sequence[str], timed: bool, seed: int, profile: str) -> Dict[str, Any]:
    from operad.experiments.efficiency import efficiency_table

    key = (tuple(variants), timed, seed, profile)
    if key not in _TABLES:
        smoke = profile == "smoke"
        _TABLES[key] = efficiency_table(MODEL, list(variants), batches=((4 if smoke else 32),) if timed else (),
                                        runs=2 if smoke else 9, warmup=1, threads=1, int8_path="fx",
                                        calib_batches=1 if smoke else 4, results_dir=None, gpu=False, seed=seed,
                                        progress=False)
    return _TABLES[key]


def efficiency_ratio(what: str) -> Callable[[int, str], float]:
    """``measure``: the ratio ``what`` of ResNet-56's efficiency table (one table per seed, shared by the claims)."""
    variants, timed = _NEEDS[what]

    def measure(seed: int, profile: str) -> float:
        return table_ratio(_table(variants, timed, seed, profile), what, 4 if profile == "smoke" else 32)

    measure.__name__ = f"efficiency_ratio({what})"
    return measure


_TIMED = "CPU, one thread, batch 32 at 32x32, 9 rounds with the variants in alternation, per seed"

register(
    Claim("efficiency_resnet56_pruned2x_macs", PAPER, "efficiency study", "structured pruning to 2x fewer MACs "
          "(operad.rewrite.prune, L1 filters, amount from amount_for_macs) leaves ResNet-56 about half its "
          "multiply-adds", metric="MACs ratio (pruned / float)", measure=efficiency_ratio("pruned2x_macs"),
          published=0.5, rel_tol=0.05, note="exact operad.cost MACs; the search takes the smallest uniform amount "
          "at or below half, so the ratio sits just under 0.5"),
    Claim("efficiency_resnet56_pruned2x_latency", PAPER, "efficiency study", "ResNet-56 pruned to half its MACs "
          "infers faster than the float ResNet-56 on this CPU at batch 32", metric="latency ratio (pruned / float)",
          measure=efficiency_ratio("pruned2x_latency"), bound=1.0, direction="less", note=_TIMED),
    Claim("efficiency_resnet56_int8_latency", PAPER, "efficiency study", "int8 post-training quantization "
          "(PyTorch's torch.ao FX path, x86 int8 kernels) makes ResNet-56 infer faster than float32 on this CPU "
          "at batch 32", metric="latency ratio (int8 / float)", measure=efficiency_ratio("int8_latency"), bound=1.0,
          direction="less", note=_TIMED),
    Claim("efficiency_resnet56_int8_bytes", PAPER, "efficiency study", "int8 weights take about 4x less storage "
          "than float32: the int8 ResNet-56's saved state is about 4x smaller on disk",
          metric="bytes ratio (float / int8 file)", measure=efficiency_ratio("int8_bytes"), published=4.0,
          rel_tol=0.15, note="file sizes of torch.save of the state dicts; per-channel scales (float64) and zero "
          "points (int64) and the per-tensor file records keep it below 4x"),
    Claim("efficiency_resnet56_xnor_packed_bytes", PAPER, "efficiency study", "binary weights stored as bits: the "
          "packed XNOR ResNet-56 (operad.rewrite.pack; first and last layer float) is more than 10x smaller on "
          "disk than the float one", metric="bytes ratio (float / packed file)",
          measure=efficiency_ratio("xnor_packed_bytes"), bound=10.0, direction="greater",
          note="file sizes; operad.cost's exact parameter bytes give about 25x (853,018 float32 parameters against "
               "134,248 bytes); the batch norms' running statistics and the file's per-tensor records, which the "
               "cost does not count, keep the file ratio near 14x"),
)
