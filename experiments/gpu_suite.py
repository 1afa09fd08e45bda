"""One call that turns a lent GPU into evidence: ``operad gpu-suite --budget 540 --out DIR``.

Sections, in order, each with its own share of the budget (unused time passes
on): (1) environment; (2) correctness on the device: every registered operator
family's examples and some registered models, forward and backward under bf16
autocast and channels_last, against float32 on the CPU, ``torch.compile``
of a few composites, the torchvision/timm checkpoint converters and operad's
KID against torch-fidelity's (where those import); (3) train/eval throughput at 224 (bf16, channels_last,
with and without compile) of resnet18, resnet50, mobilenetv2_100, densenet121
and ghostnet_100, beside timm's models of the same names when timm imports;
(4) operator time ratios (grid fractional Laplacian vs depthwise 3x3, DT-CWPT
vs a strided conv of the same output, harmonic conv vs conv, fused and compiled
dendritic conv vs conv); (5) the CIFAR-10 speed recipe when ``cifar10_speedrun`` is
registered, raced against a peer script (airbench94.py: ``--peer PATH``, or
``.device/airbench94.py`` where it exists; :mod:`operad.experiments.race`);
(6) ``gpu``-profile claims in the registry's priority order while time remains;
(7) a short CamVid run of one head. A failing section records its error and the
suite goes on; ``suite.json``, ``SUITE.md`` and the PNGs are
rewritten after every section, so a run cut short keeps what it measured.

``--smoke`` runs every section on the CPU at tiny sizes in about a minute
(CI runs it, so the GPU path cannot rot).

Data on a GPU machine (``../shared`` may be absent): ``../shared/tools/device-data cifar10``
(or ``camvid``) packs one data set into ``.device/`` in the project root (ignored
by git; about 55 and 34 MiB); on the GPU machine ``python3 .device/unpack.py /tmp/data``
restores the usual layout, then ``operad gpu-suite --data /tmp/data`` (CIFAR-10), and in
a separate call ``operad gpu-suite --sections camvid --data /tmp/data`` (CamVid). Pack and
move one data set at a time. ``bash experiments/gpu_call.sh 480`` does all of it in one
command with the GPU machine's own python3 (no registry there: nothing is installed) and
writes into ``$OUT/gpu/DATE``.

>>> from operad.experiments.gpu_suite import SECTIONS
>>> [s[0] for s in SECTIONS][:3]
['environment', 'correctness', 'throughput']
"""
from __future__ import annotations

import copy
import json
import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

__all__ = ["run_suite", "SECTIONS", "find_data", "THROUGHPUT_MODELS"]

THROUGHPUT_MODELS = ["resnet18", "resnet50", "mobilenetv2_100", "densenet121", "ghostnet_100"]


@dataclass
class Ctx:
    """What a section sees: device, mode, its deadline, the output folder and the data root."""

    device: torch.device
    smoke: bool
    deadline: float
    out: str
    data_root: str
    notes: List[str] = field(default_factory=list)
    peer: Optional[str] = None

    def left(self) -> float:
        return self.deadline - time.time()


def find_data(explicit: Optional[str] = None) -> str:
    """The data root: ``explicit``, ``$OPERAD_DATA``, ``../shared/data`` beside the checkout, ``/tmp/data``, ``./data``."""
    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    for cand in (explicit, os.environ.get("OPERAD_DATA"), os.path.join(here, "..", "shared", "data"), "/tmp/data",
                 "data"):
        if cand and any(os.path.isdir(os.path.join(cand, d)) for d in ("cifar10", "cifar-10-batches-py", "camvid")):
            return os.path.abspath(cand)
    return explicit or ""


def _settle(m: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.running_var.copy_(0.5 + 1.5 * torch.rand(mod.num_features, generator=g))
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.5)
    return m.eval()


# ----------------------------------------------------------------------------- (1) environment
def environment(ctx: Ctx) -> Dict[str, Any]:
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "device": str(ctx.device), "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cpu_threads": torch.get_num_threads()}
    if ctx.device.type == "cuda":
        p = torch.cuda.get_device_properties(ctx.device)
        env.update(gpu=p.name, memory_gib=round(p.total_memory / 2 ** 30, 1), capability=f"{p.major}.{p.minor}",
                   bf16=torch.cuda.is_bf16_supported())
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, Exception):  # noqa: BLE001 - the driver line is informative only
            env["driver"] = None
    try:
        import timm

        env["timm"] = timm.__version__
    except ImportError:
        env["timm"] = None
    return env


# ----------------------------------------------------------------------------- (2) correctness
def _draw_example(fam) -> tuple:
    from hypothesis import HealthCheck, given, settings, strategies as st

    box: Dict[str, Any] = {}

    @settings(max_examples=1, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def draw(data):
        box["v"] = fam.examples(data.draw)

    draw()
    return box["v"]


def check_module(m: nn.Module, x: torch.Tensor, device: torch.device, tol: float) -> Dict[str, Any]:
    """Float32 CPU output against the device's bf16-autocast, channels_last output; backward on the device."""
    m = _settle(m).float()
    with torch.no_grad():
        ref = m(x)
    d = copy.deepcopy(m).to(device)
    xd = x.to(device)
    if xd.dim() == 4:
        d = d.to(memory_format=torch.channels_last)
        xd = xd.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        y = d(xd)
    err = float((y.float().cpu() - ref).abs().max() / (ref.abs().max() + 1e-6))
    d.train()
    xg = xd.clone().requires_grad_(True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = d(xg)
    out.float().square().mean().backward()
    grads_ok = all(p.grad is None or bool(p.grad.isfinite().all()) for p in d.parameters())
    return {"rel_err": err, "ok": err <= tol and grads_ok, "grads_finite": grads_ok}


def _families(ctx: Ctx) -> List[Dict[str, Any]]:
    from operad.operators import FAMILIES

    rows = []
    for name in sorted(n for n, f in FAMILIES.items() if f.examples is not None):
        if ctx.left() < 0:
            ctx.notes.append("correctness: the families after this point were not reached in the budget")
            break
        try:
            term, t, size = _draw_example(FAMILIES[name])
            torch.manual_seed(0)
            m = term.bind(t)
            x = torch.randn(*t.shape(2, size))
            if x.is_floating_point():
                rows.append({"item": f"family {name}", **check_module(m, x, ctx.device, 0.1)})
        except Exception as e:  # noqa: BLE001 - one family's failure is a result, not the end
            rows.append({"item": f"family {name}", "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
    return rows


def correctness(ctx: Ctx) -> Dict[str, Any]:
    from operad.models import create_model, list_models, model_info

    try:
        rows = _families(ctx)
    except ImportError:
        rows = []
        ctx.notes.append("correctness: hypothesis is not installed, so the family examples were skipped")
    names = ["resnet20", "mobilenetv2_100_cifar", "ghost_resnet56", "hnet"] if ctx.smoke else \
        [n for n in list_models() if model_info(n).task == "classification"]
    for n in names:
        if ctx.left() < 0:
            break
        try:
            s = 16 if ctx.smoke else model_info(n).input_size[1]
            rows.append({"item": f"model {n}", **check_module(create_model(n), torch.randn(2, 3, s, s),
                                                              ctx.device, 0.1)})
        except Exception as e:  # noqa: BLE001
            rows.append({"item": f"model {n}", "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
    rows += _compile_checks(ctx)
    rows += _ecosystem_checks(ctx)
    return {"rows": rows, "passed": sum(bool(r["ok"]) for r in rows), "total": len(rows)}


def _ecosystem_checks(ctx: Ctx) -> List[Dict[str, Any]]:
    """Checkpoint converters against torchvision's and timm's own models (``tests/test_convert.py``'s
    check) and operad's KID against torch-fidelity's (``tests/test_kid.py``'s), where those import."""
    from operad.experiments.fidelity import crosscheck, fidelity_available
    from operad.models.convert import SUPPORTED, conversion_check

    rows: List[Dict[str, Any]] = []
    for source in ("torchvision", "timm"):
        try:
            __import__(source)
        except Exception as e:  # noqa: BLE001 - a missing or broken library is a note, not a failure
            ctx.notes.append(f"correctness: {source} does not import ({type(e).__name__}), so its converters "
                             f"were not checked")
            continue
        for n in SUPPORTED[:1] if ctx.smoke else SUPPORTED:
            if ctx.left() < 0:
                break
            try:
                r = conversion_check(n, source, device=ctx.device)
                rel = r["max_abs_diff"] / max(1.0, r["output_abs_max"])
                rows.append({"item": f"convert {source} {n}", "rel_err": rel, "ok": rel <= 1e-3})  # TF32 on GPUs
            except Exception as e:  # noqa: BLE001
                rows.append({"item": f"convert {source} {n}", "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
    if not fidelity_available():
        ctx.notes.append("correctness: torch-fidelity does not import, so operad's KID was not compared with it")
    elif ctx.left() > 0:
        try:
            r = crosscheck(device=str(ctx.device))
            rows.append({"item": "kid operad vs torch-fidelity", "rel_err": r["rel_diff"], "ok": r["rel_diff"] < 1e-3})
        except Exception as e:  # noqa: BLE001
            rows.append({"item": "kid operad vs torch-fidelity", "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
    return rows


def _compile_checks(ctx: Ctx) -> List[Dict[str, Any]]:
    from operad.models import create_model

    backend = "eager" if ctx.smoke else "inductor"  # smoke: dynamo tracing only (no C++/Triton build on CI)
    rows = []
    for n in (["resnet20"] if ctx.smoke else ["resnet20", "mobilenetv2_100_cifar", "ghost_resnet56", "pide_net"]):
        if ctx.left() < 0:
            break
        try:
            m = _settle(create_model(n)).to(ctx.device)
            x = torch.randn(4, 3, 32, 32, device=ctx.device)
            with torch.no_grad():
                ref = m(x)
                y = torch.compile(m, backend=backend)(x)
            err = float((y - ref).abs().max() / (ref.abs().max() + 1e-6))
            rows.append({"item": f"compile[{backend}] {n}", "rel_err": err, "ok": err < 1e-3})
        except Exception as e:  # noqa: BLE001
            rows.append({"item": f"compile[{backend}] {n}", "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
    return rows


# ----------------------------------------------------------------------------- (3) throughput
def _img_per_s(m: nn.Module, x: torch.Tensor, train: bool, amp: bool, runs: int) -> float:
    from operad.experiments.bench.timing import time_fn

    opt = torch.optim.SGD(m.parameters(), lr=1e-3) if train else None
    m.train(train)

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            if train:
                opt.zero_grad(set_to_none=True)
                m(x).float().logsumexp(1).mean().backward()
                opt.step()
            else:
                with torch.no_grad():
                    m(x)

    return x.shape[0] / time_fn(step, runs=runs, warmup=1 if runs < 3 else 3, device=x.device)


def _timm(name: str) -> Optional[nn.Module]:
    try:
        import timm
    except ImportError:
        return None
    return timm.create_model(name, pretrained=False, num_classes=1000)


def throughput(ctx: Ctx) -> Dict[str, Any]:
    from operad.models import create_model

    size, batch, runs = (32, 2, 1) if ctx.smoke else (224, 128, 10)
    cuda = ctx.device.type == "cuda"
    rows = []
    try:
        import timm  # noqa: F401
    except ImportError:
        ctx.notes.append("throughput: timm is not installed here, so the timm columns are empty")
    for compiled in ((False,) if ctx.smoke else (False, True)):  # every eager figure before any compile
        for name in THROUGHPUT_MODELS:
            for src in ("operad", "timm"):
                if ctx.left() < 0:
                    ctx.notes.append(f"throughput: stopped at {name} ({src}) by the section budget")
                    return {"rows": rows, "size": size, "batch": batch}
                try:
                    m = create_model(name) if src == "operad" else _timm(name)
                    if m is None:
                        continue
                    m = m.to(ctx.device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
                    x = torch.randn(batch, 3, size, size, device=ctx.device)
                    if cuda:
                        x = x.contiguous(memory_format=torch.channels_last)
                    run_m = torch.compile(m) if compiled else m
                    row = {"model": name, "impl": src, "compile": compiled,
                           "train_img_s": _img_per_s(run_m, x, True, True, runs),
                           "eval_img_s": _img_per_s(run_m, x, False, True, runs)}
                except Exception as e:  # noqa: BLE001
                    row = {"model": name, "impl": src, "compile": compiled, "error": f"{type(e).__name__}: {e}"[:300]}
                rows.append(row)
    return {"rows": rows, "size": size, "batch": batch}


# ----------------------------------------------------------------------------- (4) operator ratios
def _pairs(smoke: bool) -> Dict[str, tuple]:
    from operad import Field, ops

    c, s, b = (4, 16, 2) if smoke else (64, 64, 32)
    x = torch.randn(b, c, s, s)
    x3 = torch.randn(b, 3, 2 * s, 2 * s)
    dt = ops.dtcwpt(levels=2).bind(Field(3))
    oc = dt.out_type.tensor_channels
    hc = Field(c, kind="complex", orders=(0, 1))
    return {
        "grid fractional Laplacian / depthwise 3x3": (
            ops.fractional_laplacian(0.5).bind(Field(c)), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), x),
        "DT-CWPT (J=2) / strided conv 7x7 with the same output": (
            dt, nn.Conv2d(3, oc, 7, stride=4, padding=3, bias=False), x3),
        "harmonic conv (orders 0,1, k=5) / conv 5x5 on the real channels": (
            ops.harmonic_conv(c, orders=(0, 1), k=5).bind(hc), nn.Conv2d(hc.tensor_channels, hc.tensor_channels, 5,
                                                                         padding=2, bias=False),
            torch.randn(b, hc.tensor_channels, s, s)),
        "fused dendritic conv 3x3 / conv 3x3": (
            ops.dendritic_conv(c, k=3, impl="fused").bind(Field(c)), nn.Conv2d(c, c, 3, padding=1, bias=False), x),
        "compiled dendritic conv 3x3 / conv 3x3": (
            ops.dendritic_conv(c, k=3, impl="compiled").bind(Field(c)), nn.Conv2d(c, c, 3, padding=1, bias=False), x),
    }


def operator_ratios(ctx: Ctx) -> Dict[str, Any]:
    from operad.experiments.bench.timing import time_interleaved

    rows = []
    for label, (a, b, x) in _pairs(ctx.smoke).items():
        if ctx.left() < 0:
            ctx.notes.append(f"operator_ratios: stopped before {label!r} by the section budget")
            break
        try:
            a, b = a.to(ctx.device), b.to(ctx.device)
            x = x.to(ctx.device).requires_grad_(True)
            fns = {"a": lambda: a(x).float().sum().backward(), "b": lambda: b(x).float().sum().backward()}
            t = time_interleaved(fns, runs=2 if ctx.smoke else 9, warmup=1, device=ctx.device)
            rows.append({"pair": label, "a_ms": 1e3 * t["a"], "b_ms": 1e3 * t["b"], "ratio": t["a"] / t["b"],
                         "shape": list(x.shape)})
        except Exception as e:  # noqa: BLE001
            rows.append({"pair": label, "error": f"{type(e).__name__}: {e}"[:300]})
    return {"rows": rows, "timed": "forward + backward, median"}


# ----------------------------------------------------------------------------- (5) speed recipe
#: where a GPU call finds the peer script when ``--peer`` is not given (carried in .device/, never committed)
DEFAULT_PEER = os.path.join(".device", "airbench94.py")


def speed_recipe(ctx: Ctx) -> Dict[str, Any]:
    from operad.models import list_models

    if "cifar10_speedrun" not in list_models():
        return {"skipped": "cifar10_speedrun is not registered yet (the speed recipe lands separately)"}
    peer = ctx.peer or (DEFAULT_PEER if os.path.isfile(DEFAULT_PEER) else None)
    if peer:
        return {"race": _race(ctx, peer)}
    from operad.experiments.train import train

    ov: Dict[str, Any] = {"data_root": ctx.data_root, "out_dir": os.path.join(ctx.out, "speedrun"),
                          "plot_every": 0, "progress": False}
    if ctx.smoke:
        ov.update(subset=5, val_subset=5, epochs=1, batch_size=10, device="cpu", threads=1, measure_speed=False)
    res = train("cifar10_speedrun", ov, overwrite=True, profile="cpu" if ctx.smoke else "gpu")
    runs = res if isinstance(res, list) else [res]
    ctx.notes.append(f"speed_recipe: no peer script ({DEFAULT_PEER} or --peer), so no race against airbench94")
    return {"runs": [{k: r.get(k) for k in ("name", "top1", "train_time_s", "train_img_per_s", "epochs")}
                     for r in runs]}


def _race(ctx: Ctx, peer: str) -> Dict[str, Any]:
    """The recipe against ``peer`` (airbench94.py), alternating runs on this device."""
    from operad.experiments.config import expand_runs, load_config
    from operad.experiments.data import load_dataset
    from operad.experiments.race import race
    from operad.experiments.speedrun import SMOKE, config_settings

    cfg = expand_runs(load_config("cifar10_speedrun"), {"progress": False}, profile="gpu")[0]
    settings, runs, target = config_settings(cfg)
    sub = (SMOKE["subset"], SMOKE["val_subset"]) if ctx.smoke else (None, None)
    train = load_dataset("cifar10", "train", ctx.data_root, sub[0])
    test = load_dataset("cifar10", "test", ctx.data_root, sub[1])
    if ctx.smoke:
        settings.update({k: v for k, v in SMOKE.items() if k not in ("subset", "val_subset", "target")})
        runs = 1
    return race(peer, os.path.join(ctx.out, "race"), train, test, device=str(ctx.device), runs=runs,
                target=target or 0.94, budget_s=max(ctx.left(), 1.0), warmup=not ctx.smoke, recipe=settings)


# ----------------------------------------------------------------------------- (6) claims
def claims(ctx: Ctx) -> Dict[str, Any]:
    from operad.experiments.claims import all_claims
    from operad.experiments.claims.runner import reproduce

    if not os.path.isdir(os.path.join(ctx.data_root, "cifar10")) and \
            not os.path.isdir(os.path.join(ctx.data_root, "cifar-10-batches-py")):
        return {"skipped": f"no CIFAR-10 under {ctx.data_root or 'any data root'} (../shared/tools/device-data cifar10)"}
    ranked = sorted((c for c in all_claims().values() if c.gpu_priority > 0), key=lambda c: c.gpu_priority)
    names = [c.name for c in ranked]
    if ctx.smoke:  # one trained and one measured claim, tiny
        names = names[:1] + ["rmnet_equivalence"]
    out = os.path.join(ctx.out, "claims")
    res = reproduce(names, "smoke" if ctx.smoke else "gpu", 2 if ctx.smoke else 3, out, ctx.data_root,
                    progress=False, deadline=ctx.deadline - (0 if ctx.smoke else 60))
    done = {r["claim"]: r["verdict"] for r in res}
    return {"verdicts": done, "not_reached": [n for n in names if n not in done], "results": out}


# ----------------------------------------------------------------------------- (7) CamVid
def camvid(ctx: Ctx) -> Dict[str, Any]:
    if not os.path.isdir(os.path.join(ctx.data_root, "camvid")):
        return {"skipped": f"no camvid/ under {ctx.data_root or 'any data root'} (pack it with "
                           f"../shared/tools/device-data camvid; a separate call)"}
    from operad.experiments.train import train

    ov: Dict[str, Any] = {"data_root": ctx.data_root, "out_dir": os.path.join(ctx.out, "camvid"),
                          "plot_every": 0, "progress": False, "measure_speed": False}
    if ctx.smoke:
        ov.update(subset=2, val_subset=2, epochs=1, batch_size=2, crop_size=[64, 64], scale_range=[0.2, 0.2],
                  device="cpu", threads=1, eval_batch_size=2)
    else:
        ov.update(epochs=max(1, int(ctx.left() // 20)), eval_every=1000)
    r = train("camvid_segmentation", ov, overwrite=True, profile="cpu" if ctx.smoke else "gpu",
              only=["lraspp_mobilenetv2"])
    r = r[0] if isinstance(r, list) else r
    return {k: r.get(k) for k in ("name", "mean_iou", "pixel_accuracy", "train_time_s", "epochs", "train_img_per_s")}


SECTIONS: List[tuple] = [("environment", 0.02, environment), ("correctness", 0.12, correctness),
                         ("throughput", 0.22, throughput), ("operator_ratios", 0.08, operator_ratios),
                         ("speed_recipe", 0.22, speed_recipe), ("claims", 0.24, claims), ("camvid", 0.10, camvid)]


# ----------------------------------------------------------------------------- driver and report
def _md(res: Dict[str, Any]) -> str:
    lines = [f"# operad GPU suite{' (smoke, CPU)' if res['smoke'] else ''}", "",
             f"Started {res['started']}, budget {res['budget_s']:.0f} s, device {res['device']}, "
             f"commit {res['commit']}.", "", "| section | status | seconds | budget s | summary |",
             "|---|---|---|---|---|"]
    for s in res["sections"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['budget_s']:.0f} | "
                     f"{_brief(s).replace('|', '/')} |")
    for s in res["sections"]:
        r = s.get("result") or {}
        if s["name"] == "throughput" and r.get("rows"):
            lines += ["", f"## Throughput (images/s, {r['size']}x{r['size']}, batch {r['batch']})", "",
                      "| model | impl | compile | train | eval |", "|---|---|---|---|---|"]
            lines += [f"| {x['model']} | {x['impl']} | {x['compile']} | {x.get('train_img_s', 0):.1f} | "
                      f"{x.get('eval_img_s', 0):.1f} |" if "error" not in x else
                      f"| {x['model']} | {x['impl']} | {x['compile']} | error: {x['error'][:80]} | |"
                      for x in r["rows"]]
        if s["name"] == "operator_ratios" and r.get("rows"):
            lines += ["", "## Operator time ratios (forward + backward)", "", "| pair | ms | ms | ratio |",
                      "|---|---|---|---|"]
            lines += [f"| {x['pair']} | {x['a_ms']:.3f} | {x['b_ms']:.3f} | {x['ratio']:.2f} |" if "error" not in x
                      else f"| {x['pair']} | error: {x['error'][:80]} | | |" for x in r["rows"]]
        if s["name"] == "speed_recipe" and r.get("race"):
            lines += ["", "## Speed recipe against the peer"] + _race_md(r["race"])
        if s["name"] == "correctness" and r.get("rows"):
            bad = [x for x in r["rows"] if not x["ok"]]
            lines += ["", f"## Correctness: {r['passed']}/{r['total']} passed", ""]
            lines += [f"- FAILED {x['item']}: {x.get('error') or 'rel_err %.3g' % x.get('rel_err', float('nan'))}"
                      for x in bad]
    if res["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def _race_md(x: Dict[str, Any]) -> List[str]:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    goal = f"{x.get('target', 0):.4f}" + (" (the peer's own mean accuracy)" if x.get("target_is_peer_mean") else "")
    return ["", f"Target {goal}; {x.get('runs_done', 0)} runs a side, alternating; verdict: **{x.get('verdict')}**.",
            "", "| side | mean accuracy | mean seconds to target | runs at target |", "|---|---|---|---|",
            f"| {x.get('peer')} | {f(x.get('peer_acc_mean'), '.4f')} | {f(x.get('peer_time_mean_s'), '.2f')} "
            f"(whole run) | {x.get('peer_reached', 0)} |",
            f"| operad cifar10_speedrun | {f(x.get('ours_acc_mean'), '.4f')} | "
            f"{f(x.get('ours_time_to_target_mean_s'), '.2f')} | {x.get('ours_reached', 0)} |"]


def _brief(s: Dict[str, Any]) -> str:
    if s["status"] == "failed":
        return s["error"].splitlines()[-1][:160] if s.get("error") else "failed"
    r = s.get("result") or {}
    if "skipped" in r:
        return r["skipped"]
    if s["name"] == "environment":
        return f"{r.get('gpu', 'CPU')}, torch {r.get('torch')}, CUDA {r.get('cuda')}, cuDNN {r.get('cudnn')}"
    if s["name"] == "correctness":
        return f"{r.get('passed')}/{r.get('total')} checks passed"
    if s["name"] in ("throughput", "operator_ratios"):
        return f"{len(r.get('rows', []))} rows"
    if s["name"] == "speed_recipe" and r.get("race"):
        return f"race against {r['race'].get('peer')}: {r['race'].get('verdict')}"
    if s["name"] == "claims":
        return ", ".join(f"{k}: {v}" for k, v in r.get("verdicts", {}).items()) or "no claim finished"
    return json.dumps(r, default=str)[:160]


def _plots(res: Dict[str, Any], out: str) -> None:
    from operad.experiments.plots import plot_bars

    for s in res["sections"]:
        r = s.get("result") or {}
        if s["name"] == "throughput" and r.get("rows"):
            vals = {f"{x['model']} {x['impl']}{' c' if x['compile'] else ''}": x["train_img_s"]
                    for x in r["rows"] if "train_img_s" in x}
            if vals:
                plot_bars(vals, os.path.join(out, "throughput.png"), "train images/s", "training throughput")
        race = r.get("race") if s["name"] == "speed_recipe" else None
        if race and race.get("peer_time_mean_s") is not None and race.get("ours_time_to_target_mean_s") is not None:
            plot_bars({race["peer"]: race["peer_time_mean_s"], "operad": race["ours_time_to_target_mean_s"]},
                      os.path.join(out, "race.png"), f"seconds to {race['target']:.4f}", "speed recipe race")
        if s["name"] == "operator_ratios" and r.get("rows"):
            vals = {x["pair"].split(" / ")[0]: x["ratio"] for x in r["rows"] if "ratio" in x}
            if vals:
                plot_bars(vals, os.path.join(out, "operator_ratios.png"), "time / baseline", "operator time ratios")


def _write(res: Dict[str, Any], out: str) -> None:
    with open(os.path.join(out, "suite.json.tmp"), "w") as f:
        json.dump(res, f, indent=2, default=str)
    os.replace(os.path.join(out, "suite.json.tmp"), os.path.join(out, "suite.json"))
    with open(os.path.join(out, "SUITE.md"), "w") as f:
        f.write(_md(res))
    try:
        _plots(res, out)
    except Exception as e:  # noqa: BLE001 - a plot must never lose a measurement
        res["notes"].append(f"plots failed: {e}")


def run_suite(out: str, budget: float = 540.0, smoke: bool = False, data_root: Optional[str] = None,
              sections: Optional[List[str]] = None, peer: Optional[str] = None) -> Dict[str, Any]:
    """Run the sections in order within ``budget`` seconds; returns (and writes) the suite's results.
    ``peer`` is the script the speed recipe races (airbench94.py; default ``.device/airbench94.py``
    where it exists)."""
    import datetime

    from tqdm.auto import tqdm

    from operad.experiments.claims.runner import commit_id

    os.makedirs(out, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    threads = torch.get_num_threads()
    if smoke:
        torch.set_num_threads(1)
    if peer and not os.path.isfile(peer):
        raise FileNotFoundError(f"peer script {peer!r} not found (the speed recipe's race needs airbench94.py)")
    ctx = Ctx(device, smoke, 0.0, out, find_data(data_root), peer=peer)
    res: Dict[str, Any] = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "budget_s": budget, "smoke": smoke, "device": str(device), "commit": commit_id(),
                           "data_root": ctx.data_root, "sections": [], "notes": ctx.notes}
    unknown = set(sections or ()) - {s[0] for s in SECTIONS}
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; the sections are {[s[0] for s in SECTIONS]}")
    chosen = [s for s in SECTIONS if not sections or s[0] in sections]
    scale = 1.0 / sum(s[1] for s in chosen)  # a chosen subset shares the whole budget
    t_start, carry = time.time(), 0.0
    bar = tqdm(chosen, desc="gpu-suite", unit="section", dynamic_ncols=True)
    try:
        for name, share, fn in bar:
            bar.set_postfix_str(name)
            share_s = share * scale * budget + carry
            ctx.deadline = min(time.time() + share_s, t_start + budget)
            t0 = time.time()
            rec: Dict[str, Any] = {"name": name, "budget_s": share_s}
            try:
                rec.update(status="ok", result=fn(ctx))
                if isinstance(rec["result"], dict) and "skipped" in rec["result"]:
                    rec["status"] = "skipped"
            except Exception:  # noqa: BLE001 - a failing section is recorded and the suite goes on
                rec.update(status="failed", error=traceback.format_exc()[-2000:])
            rec["seconds"] = time.time() - t0
            carry = max(0.0, share_s - rec["seconds"])
            res["sections"].append(rec)
            _write(res, out)
    finally:
        bar.close()
        torch.set_num_threads(threads)
    res["total_s"] = time.time() - t_start
    _write(res, out)
    return res
