"""The efficiency study: one network's variants side by side (Roth et al., "Resource-Efficient Neural
Networks for Embedded Systems": quantization, pruning and structural efficiency weighed against accuracy,
and which trade-off wins depends on the device).

``efficiency_table("resnet56")`` builds the variants, measures them and returns the table
(``operad efficiency MODEL`` prints and writes it):

================  ======================================================================================
``float32``       the network as it is (a run's trained weights with ``run=``)
``int8``          post-training static int8 through PyTorch's own path (:mod:`operad.experiments.int8`:
                  torchao PT2E when torchao imports, else ``torch.ao.quantization`` FX), calibrated on a few
                  batches of the data, or on random inputs without data
``qnn``           :func:`operad.rewrite.quantize` (1-bit weights, 2-bit activations), timed and saved in its
                  :func:`operad.rewrite.pack` form (integer levels and a scale per filter)
``bwn``/``xnor``  :func:`operad.rewrite.binarize`, timed and saved packed (sign bits and alpha per filter;
                  XNOR convolutions by xor and popcount, in the C++ kernel when it builds)
``prunedNx``      :func:`operad.rewrite.prune` (L1 importance) at the amount
                  :func:`operad.rewrite.amount_for_macs` finds for N times fewer MACs; not fine-tuned
``alternatives``  the registered structural counterparts (:func:`alternatives`: Ghost, G-Ghost, MGIC and,
                  for ResNet-56, MobileNetV2 with the CIFAR stem); any registered model name also works
================  ======================================================================================

Columns: parameters, bytes on disk (the saved state dict's file size; for int8 the quantized model's
state, for packed forms the packed state), MACs and BOPs (exact, :func:`operad.cost`; the int8 row has
the float model's MACs and 8x8-bit BOPs), latency (median of ``runs`` rounds in which the variants run
in alternation, one thread by default) at each batch size on the CPU and on the GPU when there is one,
and top-1 accuracy: measured on ``data`` for the variants of a given run's weights (pruned ones without
fine-tuning), else looked up in the claims results (:func:`claims_accuracy`), else none.

>>> r = efficiency_table("ops.conv(8) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(4)",
...                      ["float32", "pruned2x"], batches=(2,), runs=1, progress=False)   # doctest: +SKIP
>>> [row["variant"] for row in r["rows"]]                                                   # doctest: +SKIP
['float32', 'pruned2x']
"""
from __future__ import annotations

import contextlib
import copy
import glob
import json
import math
import os
import platform
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from operad.operators.algebra.errors import OperadError

__all__ = ["VARIANTS", "ALTERNATIVES", "Variant", "alternatives", "expand_variants", "build_variant", "saved_bytes",
           "time_variants", "claims_accuracy", "pick_accuracy", "pareto_front", "efficiency_table", "format_table",
           "markdown_table", "plot_efficiency", "write_outputs", "conclusion", "DEFAULT_RESULTS"]

VARIANTS = ("float32", "int8", "qnn", "bwn", "xnor", "pruned2x", "pruned4x", "alternatives")
# structural counterparts beyond the ghost_/g_ghost_/mgic_ prefixes: MobileNetV2 (CIFAR stem) is compared with
# ResNet-56 by the claim mobilenetv2_cifar_vs_resnet56 (config efficient_vs_resnet)
ALTERNATIVES: Dict[str, Tuple[str, ...]] = {"resnet56": ("mobilenetv2_100_cifar",)}
_PREFIXES = ("ghost_", "g_ghost_", "mgic_")
_PRUNED = re.compile(r"^pruned(\d+(?:\.\d+)?)x$")
_CHANCE = 0.15  # CIFAR-10 top-1 below this is near chance (the claims runner's rule)
DEFAULT_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu")


@dataclass
class Variant:
    """One row's network: ``module`` is the form that is timed and saved (packed, int8 kernels);
    ``model_name`` the registered model whose claims results hold its accuracy; ``derived``: made from
    the base network's weights (so a run's data measures its accuracy)."""

    name: str
    kind: str
    module: Optional[nn.Module] = None
    state: Optional[Dict[str, torch.Tensor]] = None
    model_name: str = ""
    derived: bool = False
    params: Optional[float] = None
    macs: Optional[float] = None
    bops: Optional[float] = None
    cost_bytes: Optional[float] = None
    note: str = ""
    error: str = ""
    cpu_only: str = ""  # why it cannot run on a GPU, when it cannot

    def saved_state(self) -> Dict[str, torch.Tensor]:
        return self.state if self.state is not None else self.module.state_dict()


# ----------------------------------------------------------------------------- which variants

def alternatives(name: str) -> List[str]:
    """The registered structural counterparts of model ``name``.

    >>> alternatives("resnet56")
    ['ghost_resnet56', 'g_ghost_resnet56', 'mgic_resnet56', 'mobilenetv2_100_cifar']
    >>> alternatives("resnet20")
    []
    """
    from operad.models import list_models

    have = set(list_models())
    return [n for n in [p + name for p in _PREFIXES] + list(ALTERNATIVES.get(name, ())) if n in have]


def expand_variants(spec: Optional[Sequence[str]], name: str) -> List[str]:
    """Variant names in order, ``alternatives`` expanded; everything when ``spec`` is empty. An unknown
    name is an :class:`OperadError` naming the choices.

    >>> expand_variants(["float32", "pruned3x", "alternatives"], "resnet20")
    ['float32', 'pruned3x']
    """
    from operad.models import list_models

    spec = [s.strip() for item in (spec or VARIANTS) for s in item.split(",") if s.strip()]
    registered = set(list_models())
    out: List[str] = []
    for s in spec:
        if s == "alternatives":
            names = alternatives(name)
        elif s in VARIANTS or s in registered:
            names = [s]
        elif _PRUNED.match(s) and float(_PRUNED.match(s).group(1)) > 1:
            names = [s]
        else:
            raise OperadError(f"unknown variant {s!r}: choose from {', '.join(VARIANTS)}, prunedNx (N > 1) "
                              f"or a registered model name (operad list)")
        out += [n for n in names if n not in out]
    return out


# ----------------------------------------------------------------------------- building them

@dataclass
class _Base:
    name: str
    module: nn.Module
    size: Tuple[int, ...]              # (C, H, W)
    calib: List[torch.Tensor]
    int8_path: str
    num_classes: int
    info: Dict[str, str] = field(default_factory=dict)


def _costs(m: nn.Module, size: Sequence[int]) -> Dict[str, Optional[float]]:
    """params, MACs, BOPs and bytes from operad.cost for a bound module; parameter count alone otherwise."""
    import operad

    if hasattr(m, "term") and hasattr(m, "in_type"):
        c = operad.cost(m, size=tuple(size[1:]))
        return {"params": float(c.params), "macs": float(c.macs), "bops": float(c.bops),
                "cost_bytes": float(c.bytes)}
    return {"params": float(sum(p.numel() for p in m.parameters())), "macs": None, "bops": None, "cost_bytes": None}


def _float(b: _Base, name: str) -> Variant:
    return Variant(name, "float", b.module, model_name=b.name, derived=True, **_costs(b.module, b.size),
                   note=b.info.get("weights", ""))


def _int8(b: _Base, name: str) -> Variant:
    from operad.experiments.int8 import quantize_int8

    q = quantize_int8(b.module, b.calib, b.int8_path)
    c = _costs(b.module, b.size)
    bops = None if c["macs"] is None else 64.0 * c["macs"]
    return Variant(name, "int8", q.module, state=q.state, derived=True, params=c["params"], macs=c["macs"], bops=bops,
                   note=f"{q.description}; MACs of the float model, BOPs at 8x8 bits",
                   cpu_only=f"the int8 kernels ({q.path}) run on the CPU only", cost_bytes=None)


def _rewritten(b: _Base, name: str) -> Variant:
    from operad import rewrite

    if not hasattr(b.module, "term"):
        raise OperadError(f"{name} rewrites an operad network (a registered model or an expression)")
    m = (rewrite.quantize(b.module, w_bits=1, a_bits=2) if name == "qnn" else rewrite.binarize(b.module, name)).eval()
    what = "integer levels + scale per filter" if name == "qnn" else "sign bits + alpha per filter"
    kernel = f"; XNOR convs by {b.info['xnor_kernel']}" if name == "xnor" and b.info.get("xnor_kernel") else ""
    return Variant(name, "quantized" if name == "qnn" else "binary", rewrite.pack(m), model_name=f"{b.name}_{name}",
                   **_costs(m, b.size), note=f"packed ({what}){kernel}; first and last layer float")


def _pruned(b: _Base, name: str) -> Variant:
    from operad import rewrite

    factor = float(_PRUNED.match(name).group(1))
    amount = rewrite.amount_for_macs(b.module, 1.0 / factor, size=b.size[1:])
    m = rewrite.prune(b.module, amount=amount).eval()
    return Variant(name, "pruned", m, derived=True, **_costs(m, b.size),
                   note=f"L1 filter pruning, amount {amount:.3f} of every layer; not fine-tuned")


def _alternative(b: _Base, name: str) -> Variant:
    from operad.models import create_model

    m = create_model(name, num_classes=b.num_classes).eval()
    return Variant(name, "structural", m, model_name=name, **_costs(m, b.size), note="random weights")


def build_variant(base: _Base, name: str) -> Variant:
    """One variant of ``base``; a failure is kept in the variant's ``error`` (the table reports it)."""
    builders: Dict[str, Callable[[_Base, str], Variant]] = {"float32": _float, "int8": _int8, "qnn": _rewritten,
                                                            "bwn": _rewritten, "xnor": _rewritten}
    fn = builders.get(name) or (_pruned if _PRUNED.match(name) else _alternative)
    try:
        v = fn(base, name)  # every builder returns its module in eval mode (an exported int8 program has no .eval())
        with torch.no_grad():  # it must run at all before it is measured
            v.module(base.calib[0][:1])
        return v
    except Exception as e:  # one variant that fails is a row that says so, not a lost table
        return Variant(name, "failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])


def saved_bytes(state: Dict[str, torch.Tensor]) -> int:
    """Bytes of the file ``torch.save(state)`` writes (a temporary file, removed after)."""
    with tempfile.TemporaryDirectory(prefix="operad-efficiency-") as d:
        path = os.path.join(d, "state.pt")
        torch.save(state, path)
        return os.stat(path).st_size


# ----------------------------------------------------------------------------- timing

@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _on_device(v: Variant, dev: torch.device) -> nn.Module:
    if dev.type == "cpu":
        return v.module
    if v.cpu_only:
        raise RuntimeError(v.cpu_only)
    return copy.deepcopy(v.module).to(dev)


def time_variants(variants: Sequence[Variant], size: Sequence[int], batches: Sequence[int], device="cpu",
                  runs: int = 5, warmup: int = 1, tick: Optional[Callable[[str], None]] = None,
                  seed: int = 0) -> Dict[str, Dict[str, Any]]:
    """Seconds per forward pass of each variant at each batch size on ``device`` (eval, no_grad), the variants
    timed in alternation (:func:`~operad.experiments.bench.timing.time_interleaved`); a variant that cannot run
    there gets the reason as a string. Returns ``{variant: {str(batch): seconds or reason}}``."""
    from operad.experiments.bench.timing import time_interleaved

    dev = torch.device(device)
    out: Dict[str, Dict[str, Any]] = {v.name: {} for v in variants}
    mods: Dict[str, nn.Module] = {}
    for v in variants:
        try:
            mods[v.name] = _on_device(v, dev)
        except Exception as e:
            for bs in batches:
                out[v.name][str(bs)] = f"not run: {e}"
                for _ in range(runs if tick else 0):
                    tick(v.name)
    g = torch.Generator().manual_seed(seed)
    for bs in batches:
        x = torch.randn(bs, *size, generator=g).to(dev)
        fns = {}
        for k, m in mods.items():
            try:
                with torch.no_grad():
                    m(x)  # the first call (and a compiled model's compilation) before any timing
                fns[k] = (lambda m=m: m(x))
            except Exception as e:
                out[k][str(bs)] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
                if tick:
                    for _ in range(runs):
                        tick(k)
        with torch.no_grad():
            t = time_interleaved(fns, runs=runs, warmup=warmup, device=dev, tick=tick)
        for k, s in t.items():
            out[k][str(bs)] = s
    return out


# ----------------------------------------------------------------------------- accuracy

def _arm_model(claim: str, arm: str, profile: str, cache: Dict[Tuple[str, str, str], str]) -> str:
    """The registered model a claim's arm trained: its config's run with the arm's overrides applied (an arm may
    swap the run's model), through the claims registry; empty for an arm it does not know or an expression."""
    key = (claim, arm, profile)
    if key not in cache:
        from operad.experiments.claims import PROFILES, all_claims
        from operad.experiments.claims.runner import arm_config

        c = all_claims().get(claim)
        a = next((x for x in c.arms if x.name == arm), None) if c is not None else None
        cache[key] = (arm_config(c, a, profile if profile in PROFILES else "cpu", 0, "", progress=False).model or ""
                      if a is not None else "")
    return cache[key]


def claims_accuracy(results_dir: str) -> Dict[str, List[Dict[str, Any]]]:
    """Every trained claim arm's mean top-1 in ``results_dir`` (the claims results: ``CLAIM.json`` files),
    by registered model: ``{model: [{top1, seeds, claim, config, run, profile, reason}, ...]}``. The model is
    what the registered claim's arm trains; results of claims the registry does not hold are left out."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    cache: Dict[Tuple[str, str, str], str] = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            with open(path) as f:
                r = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(r, dict) or r.get("kind") != "trained" or not isinstance(r.get("arms"), dict):
            continue
        for arm_name, arm in r["arms"].items():
            top1 = [t for t in arm.get("top1") or [] if isinstance(t, (int, float))]
            model = _arm_model(str(r.get("claim", "")), arm_name, str(r.get("profile", "")), cache) if top1 else ""
            if not model or r.get("metric", "top1") in ("miou", "map50"):
                continue
            mean = sum(top1) / len(top1)
            out.setdefault(model, []).append({"top1": mean, "seeds": len(top1), "claim": r["claim"], "arm": arm_name,
                                              "config": arm.get("config", ""), "run": arm.get("run", ""),
                                              "profile": r.get("profile", ""),
                                              "reason": "near chance (< 15%)" if mean < _CHANCE else ""})
    return out


def pick_accuracy(found: Dict[str, List[Dict[str, Any]]], models: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """For each of ``models``, one claims result: from the config that covers the most of ``models`` (so the
    table's accuracies come from one study where they can), then an arm named after the model (not, say, the
    model trained with a regularizer), then the most seeds, then the claim's name.

    >>> found = {"a": [{"top1": .5, "seeds": 3, "claim": "x", "config": "c1", "arm": "a"},
    ...                {"top1": .6, "seeds": 3, "claim": "y", "config": "c2", "arm": "a_fp"}],
    ...          "b": [{"top1": .4, "seeds": 3, "claim": "y", "config": "c2", "arm": "b"}]}
    >>> {k: v["claim"] for k, v in pick_accuracy(found, ["a", "b", "z"]).items()}
    {'a': 'y', 'b': 'y'}
    """
    cover: Dict[str, set] = {}
    for m in models:
        for c in found.get(m, []):
            cover.setdefault(c["config"] or c["claim"], set()).add(m)
    out = {}
    for m in models:
        cands = found.get(m, [])
        if cands:
            out[m] = min(cands, key=lambda c: (-len(cover[c["config"] or c["claim"]]), c["arm"] != m, -c["seeds"],
                                               c["claim"]))
    return out


def _measure_top1(module: nn.Module, data, batch_size: int = 256) -> float:
    from operad.experiments.augment import DeviceBatches
    from operad.experiments.evaluate import evaluate

    return float(evaluate(module, DeviceBatches(data, batch_size, "cpu"))["top1"])


# ----------------------------------------------------------------------------- Pareto fronts

def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> List[bool]:
    """Which points (x to minimise, y to maximise) no other point dominates (as good in both, better in one).

    >>> pareto_front([1, 2, 3, 2], [0.5, 0.7, 0.6, 0.4])
    [True, True, False, False]
    """
    pts = list(zip(xs, ys))
    return [not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in pts) for x, y in pts]


# ----------------------------------------------------------------------------- the table

def _resolve_base(model: Union[str, nn.Module], name: str, run: str, num_classes: int) -> Tuple[str, nn.Module, Any]:
    """(name, float module, run config or None) for a registered name, an expression, a module or a run."""
    cfg = None
    if run:
        from operad.experiments.train import load_run_model

        module, cfg, _ = load_run_model(run, device="cpu")
        run_name = cfg.model or cfg.model_expr
        if isinstance(model, str) and model and model != run_name:
            raise OperadError(f"the run {run} trained {run_name!r}, not {model!r}: name its model or leave it out")
        return run_name, module.eval(), cfg
    if isinstance(model, nn.Module):
        return name or getattr(model, "model_name", type(model).__name__), model.eval(), None
    if "ops." in model or ">>" in model:
        from operad.experiments.config import Config
        from operad.experiments.train import build_model

        return model, build_model(Config(model_expr=model), num_classes, 3).eval(), None
    from operad.models import create_model

    return model, create_model(model, num_classes=num_classes).eval(), None


def _calibration(size, n: int, data, seed: int) -> Tuple[List[torch.Tensor], str]:
    if data is not None:
        from operad.experiments.augment import DeviceBatches

        batches = [x for _, (x, _) in zip(range(n), DeviceBatches(data, 32, "cpu").epoch(0))]
        return batches, f"{len(batches)} batches of {data.name}/{data.split}"
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, *size, generator=g) for _ in range(n)], f"{n} batches of random N(0,1) inputs"


def _data(dataset: str, split: str, root: Optional[str], subset: int):
    from operad.experiments.data import load_dataset

    return load_dataset(dataset, split, root or None, subset or None)


def efficiency_table(model: Union[str, nn.Module], variants: Optional[Sequence[str]] = None, *, name: str = "",
                     data_root: Optional[str] = None, dataset: str = "cifar10", run: str = "",
                     batches: Sequence[int] = (1, 32), runs: int = 5, warmup: int = 1, threads: int = 1,
                     int8_path: str = "auto", calib_batches: int = 4, results_dir: Optional[str] = DEFAULT_RESULTS,
                     subset: int = 0, gpu: Optional[bool] = None, num_classes: int = 10, seed: int = 0,
                     progress: bool = True) -> Dict[str, Any]:
    """Build, measure and compare the variants of one network (see the module docstring); returns
    ``{"rows": [...], "conclusion": {...}, ...}`` as :func:`write_outputs` saves it."""
    from operad.experiments.int8 import int8_runtime

    torch.manual_seed(seed)
    name, module, cfg = _resolve_base(model, name, run, num_classes)
    size = tuple(getattr(module, "default_input_size", None) or (3, 32, 32))
    dataset = cfg.dataset if cfg is not None else dataset
    root = data_root or (cfg.data_root if cfg is not None else None)
    names = expand_variants(variants, name)
    calib_data = _data(dataset, "train", root, -(-calib_batches * 32 // num_classes)) if root else None
    calib, calib_desc = _calibration(size, calib_batches, calib_data, seed)
    with torch.no_grad():
        classes = int(module(calib[0][:1]).shape[-1]) if cfg is not None else num_classes
    base = _Base(name, module, size, calib, int8_path, classes,
                 {"weights": f"trained weights of {run}" if run else "random weights"})
    if "xnor" in names and batches:  # time the deployment kernel: C++ xor/popcount (built once, then cached)
        from operad.operators._bitpack import load_cpp

        base.info["xnor_kernel"] = "the C++ xor/popcount kernel" if load_cpp() else \
            "torch bit operations (the C++ popcount kernel did not build)"
    devices = ["cpu"] + (["cuda"] if (gpu if gpu is not None else torch.cuda.is_available()) else [])
    with int8_runtime(), _threads(threads):
        vs = [build_variant(base, n) for n in names]
        ok = [v for v in vs if not v.error]
        latency: Dict[str, Dict[str, Dict[str, Any]]] = {}
        total = len(devices) * len(batches) * runs * len(ok)
        from tqdm.auto import tqdm

        short = name if len(name) <= 24 else name[:21] + "..."
        with tqdm(total=total, desc=f"efficiency {short}", unit="call", disable=not progress or total == 0,
                  dynamic_ncols=True) as bar:
            for dev in devices:
                bar.set_postfix_str(dev)
                latency[dev] = time_variants(ok, size, batches, dev, runs, warmup, tick=lambda k: bar.update(1),
                                             seed=seed)
        acc = _accuracies(vs, run, dataset, root, subset, results_dir)
    rows = [_row(v, latency, acc.get(v.name)) for v in vs]
    return {"model": name, "input_size": list(size), "weights": base.info["weights"], "variants": names,
            "batches": list(batches), "runs": runs, "warmup": warmup, "threads": threads, "devices": devices,
            "device_names": {d: _device_name(d) for d in devices}, "calibration": calib_desc,
            "torch": torch.__version__, "int8": next((r["note"] for r in rows if r["kind"] == "int8"), ""),
            "rows": rows, "conclusion": conclusion(rows, devices, batches)}


def _device_name(dev: str) -> str:
    if dev == "cuda":
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU ({cpu}, {os.cpu_count()} cores)"


def _accuracies(vs: Sequence[Variant], run: str, dataset: str, root, subset: int,
                results_dir: Optional[str]) -> Dict[str, Dict[str, Any]]:
    """Top-1 per variant with where it comes from: measured for a run's own variants when there is data,
    else the claims results."""
    out: Dict[str, Dict[str, Any]] = {}
    ok = [v for v in vs if not v.error]
    if run and root:
        from operad.experiments.train import _val_split

        data = _data(dataset, _val_split(dataset), root, subset)
        for v in ok:
            if v.derived:
                out[v.name] = {"top1": _measure_top1(v.module, data),
                               "source": f"measured on {len(data)} {data.name}/{data.split} images"}
    if results_dir and os.path.isdir(results_dir):
        want = [v for v in ok if v.name not in out and v.model_name and not (run and v.derived)]
        picked = pick_accuracy(claims_accuracy(results_dir), [v.model_name for v in want])
        for v in want:
            c = picked.get(v.model_name)
            if c:
                why = f"; {c['reason']}" if c.get("reason") else ""
                out[v.name] = {"top1": c["top1"], "source": f"claim {c['claim']}, arm {c['arm']} "
                               f"({c['config'] or 'model'} {c['run']}; {c['profile']} profile, {c['seeds']} seeds{why})"}
    return out


def _row(v: Variant, latency, acc: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    r: Dict[str, Any] = {"variant": v.name, "kind": v.kind, "params": v.params, "macs": v.macs, "bops": v.bops,
                         "cost_bytes": v.cost_bytes, "note": v.note, "error": v.error}
    r["bytes"] = saved_bytes(v.saved_state()) if not v.error else None
    r["latency_s"] = {dev: t.get(v.name, {}) for dev, t in latency.items()}
    r["top1"] = acc["top1"] if acc else None
    r["top1_source"] = acc["source"] if acc else "n/a"
    return r


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def conclusion(rows: Sequence[Dict[str, Any]], devices: Sequence[str], batches: Sequence[int]) -> Dict[str, Any]:
    """The measured answers: the fastest variant per device and batch size, the smallest on disk, the fewest
    BOPs, and the Pareto-optimal variants (top-1 against CPU latency at the first batch size and against bytes)."""
    out: Dict[str, Any] = {}
    for dev in devices:
        for bs in batches:
            timed = sorted((r["latency_s"][dev][str(bs)], r["variant"]) for r in rows
                           if _num(r["latency_s"].get(dev, {}).get(str(bs))))
            if timed:
                out[f"fastest_{dev}_b{bs}"] = timed[0][1]
            if len(timed) > 1:  # how clear the win is: timing on a shared machine is noisy
                out[f"runner_up_{dev}_b{bs}"] = [timed[1][1], timed[1][0] / timed[0][0]]
    for key, col in (("smallest_bytes", "bytes"), ("fewest_bops", "bops")):
        have = [(r[col], r["variant"]) for r in rows if _num(r[col])]
        if have:
            out[key] = min(have)[1]
    acc = [r for r in rows if _num(r["top1"])]
    if acc and batches:
        lat = [r for r in acc if _num(r["latency_s"]["cpu"].get(str(batches[0])))]
        front = pareto_front([r["latency_s"]["cpu"][str(batches[0])] for r in lat], [r["top1"] for r in lat])
        out[f"pareto_top1_vs_cpu_b{batches[0]}"] = [r["variant"] for r, f in zip(lat, front) if f]
    if acc:
        front = pareto_front([r["bytes"] for r in acc], [r["top1"] for r in acc])
        out["pareto_top1_vs_bytes"] = [r["variant"] for r, f in zip(acc, front) if f]
    return out


# ----------------------------------------------------------------------------- output

def _fmt_count(x) -> str:
    if not _num(x):
        return "n/a"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def _fmt_ms(x) -> str:
    if _num(x):
        return f"{1e3 * x:.0f}" if x >= 0.1 else f"{1e3 * x:.3g}"
    return ("failed" if isinstance(x, str) and x.startswith("failed") else "n/a")


def _columns(res: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    rows = res["rows"]
    ref = next((r for r in rows if r["variant"] == "float32" and not r["error"]), None)
    head = ["variant", "params", "bytes", "x smaller", "MACs", "BOPs"]
    for dev in res["devices"]:
        for bs in res["batches"]:
            head += [f"{'CPU' if dev == 'cpu' else 'GPU'} b{bs} ms", f"x faster b{bs}" if dev == "cpu" else "x faster"]
    head += ["top-1", "top-1 from"]
    body = []
    for r in rows:
        if r["error"]:
            body.append([r["variant"], f"failed: {r['error']}"] + [""] * (len(head) - 2))
            continue
        line = [r["variant"], _fmt_count(r["params"]), _fmt_count(r["bytes"]),
                f"{ref['bytes'] / r['bytes']:.2f}" if ref else "n/a", _fmt_count(r["macs"]), _fmt_count(r["bops"])]
        for dev in res["devices"]:
            for bs in res["batches"]:
                t = r["latency_s"].get(dev, {}).get(str(bs))
                t0 = ref["latency_s"].get(dev, {}).get(str(bs)) if ref else None
                line += [_fmt_ms(t), f"{t0 / t:.2f}" if _num(t) and _num(t0) else "n/a"]
        line += [f"{100 * r['top1']:.2f}%" if _num(r["top1"]) else "n/a", r["top1_source"]]
        body.append(line)
    return head, body


def format_table(res: Dict[str, Any]) -> str:
    """The table as aligned text, then the conclusion."""
    head, body = _columns(res)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) if i in (0, len(head) - 1) else c.rjust(w) for i, (c, w) in
                       enumerate(zip(cells, widths))).rstrip() for cells in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [""] + _conclusion_lines(res))


def _conclusion_lines(res: Dict[str, Any]) -> List[str]:
    c = res["conclusion"]
    out = []
    for k, v in c.items():
        if k.startswith("fastest_"):
            _, dev, bs = k.split("_")
            nxt = c.get(f"runner_up_{dev}_{bs}")
            out.append(f"fastest on {res['device_names'][dev]} at batch {bs[1:]}: {v}"
                       + (f" (next: {nxt[0]}, {nxt[1]:.2f}x its latency)" if nxt else ""))
    if "smallest_bytes" in c:
        out.append(f"smallest on disk: {c['smallest_bytes']}; fewest BOPs: {c.get('fewest_bops', 'n/a')}")
    for k in ("pareto_top1_vs_cpu_b" + str(res["batches"][0]) if res["batches"] else "", "pareto_top1_vs_bytes"):
        if k in c:
            out.append(f"Pareto front (top-1 vs {'bytes' if k.endswith('bytes') else 'CPU latency'}): "
                       + ", ".join(c[k]))
    return out


def markdown_table(res: Dict[str, Any]) -> str:
    """efficiency.md: the setting, the table, the notes per variant and the conclusion."""
    head, body = _columns(res)
    lines = [f"# Efficiency of {res['model']}", "",
             f"Input {'x'.join(map(str, res['input_size']))}, {res['weights']}; latency: median of {res['runs']} "
             f"rounds, variants in alternation, {res['threads']} thread(s), torch {res['torch']}; devices: "
             + "; ".join(res["device_names"].values()) + f". int8 calibration: {res['calibration']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in b) + " |" for b in body]
    lines += ["", "Notes:", ""] + [f"- `{r['variant']}`: {r['error'] or r['note']}" for r in res["rows"]]
    if any(r["top1_source"].startswith("claim") for r in res["rows"]):
        lines += ["", "Top-1 looked up in the claims results comes from those claims' trainings (for the `cpu` "
                  "profile a few epochs on a CIFAR-10 subset, far from converged; see each claim's note): it ranks "
                  "the variants at that budget, it is not their converged accuracy."]
    return "\n".join(lines + ["", "Conclusion:", ""] + [f"- {s}" for s in _conclusion_lines(res)]) + "\n"


def _get(f: Callable[[Dict[str, Any]], float], r: Dict[str, Any]) -> Optional[float]:
    try:
        v = f(r)
    except (KeyError, TypeError):
        return None
    return v if _num(v) else None


def plot_efficiency(res: Dict[str, Any], path: str) -> str:
    """Three panels: top-1 against CPU latency (first batch size) and against bytes on disk (the variants with an
    accuracy), and CPU latency against bytes (every variant); Pareto-optimal points in red, joined."""
    from operad.experiments.plots import _plt, _save

    plt = _plt()
    bs = str(res["batches"][0]) if res["batches"] else ""
    rows = [r for r in res["rows"] if not r["error"]]
    ms = lambda r: 1e3 * r["latency_s"]["cpu"][bs]  # noqa: E731
    kib = lambda r: r["bytes"] / 1024  # noqa: E731
    top1 = lambda r: 100 * r["top1"]  # noqa: E731
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    panels = [(ms, top1, True, f"CPU latency at batch {bs} (ms)", "top-1 (%)"),
              (kib, top1, True, "bytes on disk (KiB)", "top-1 (%)"),
              (kib, ms, False, "bytes on disk (KiB)", f"CPU latency at batch {bs} (ms)")]
    for ax, (fx, fy, higher_is_better, xl, yl) in zip(axes, panels):
        pts = [(r["variant"], _get(fx, r), _get(fy, r)) for r in rows]
        pts = [p for p in pts if p[1] is not None and p[2] is not None]
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, "no variant with an accuracy" if higher_is_better else "nothing timed",
                    ha="center", va="center", transform=ax.transAxes)
            continue
        xs, ys = [p[1] for p in pts], [p[2] for p in pts]
        front = pareto_front(xs, ys if higher_is_better else [-y for y in ys])
        ax.scatter(xs, ys, c=["tab:red" if f else "tab:blue" for f in front], zorder=3)
        best = sorted((x, y) for x, y, f in zip(xs, ys, front) if f)
        ax.plot([p[0] for p in best], [p[1] for p in best], "r--", alpha=0.6, label="Pareto front")
        for name, x, y in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        _scale(ax, "x", xs)
        _scale(ax, "y", ys)
        ax.legend(fontsize=7)
    missing = [r["variant"] for r in rows if not _num(r["top1"])]
    fig.suptitle(f"{res['model']}: efficiency variants" + (f" (no accuracy, right panel only: {', '.join(missing)})"
                                                            if missing else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def _scale(ax, axis: str, values: Sequence[float]) -> None:
    """A log axis with plain tick labels where the values span more than a decade, else a linear one."""
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo > 10:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        getattr(ax, f"set_{axis}scale")("log")
        a = getattr(ax, f"{axis}axis")
        a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.set_minor_formatter(NullFormatter())


def write_outputs(res: Dict[str, Any], out: str) -> Dict[str, str]:
    """efficiency.json, efficiency.md and efficiency.png in ``out``."""
    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, f"efficiency.{k}") for k in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump(res, f, indent=2)
    with open(paths["md"], "w") as f:
        f.write(markdown_table(res))
    plot_efficiency(res, paths["png"])
    return paths
