"""Benchmark of network zoo II against ResNet-18 and ResNet-20, in one run.

For every zoo-II network (MobileNetV2, GhostNet, Ghost-ResNet/VGG, G-Ghost,
SKNet, MGIC, the segmentation heads) and the two baselines: parameters and
MACs at the native input size (exact, from ``operad.cost``), CPU inference
latency at batch 1 (native size) and CPU training throughput at batch 64
(ImageNet-sized models at a reduced training size, 64x64 by default, and
segmentation models at 96x128: the table says which; a model whose training
step needs more than ``--skip-train-above`` MACs, e.g. SK-ResNeXt-29 at about
1 TMAC, is not trained on the CPU and shows "-"), each the median of
several timed runs after warm-up, with ``torch.set_num_threads(2)`` (1 when the machine is oversubscribed). Ratios
compare each network with its baseline (ResNet-20 for 32x32 inputs, ResNet-18
otherwise), the two timed in alternation (:func:`~operad.experiments.bench.timing.time_interleaved`)
so that load on a shared machine hits both alike: ``lat/MAC`` is the latency ratio divided by the MAC ratio, so a
value below 1 means the network turns MACs into latency faster than the
baseline does. When CUDA is available the same is measured on the GPU with
bf16 autocast and channels_last (native sizes, batch 1 and 64).

    .venv/bin/python -m operad.experiments.bench.zoo              # everything
    .venv/bin/python -m operad.experiments.bench.zoo --models 'ghost*' --runs 3
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import time

from operad.experiments.bench.timing import time_interleaved
from typing import Dict, List, Optional

import torch
from torch import nn

import operad
from operad.models import MODELS, create_model, list_models, model_info

__all__ = ["ZOO", "BASELINES", "measure", "main"]

ZOO = ["mobilenetv2_050", "mobilenetv2_100", "mobilenetv2_140", "mobilenetv2_100_cifar", "ghostnet_100",
       "ghostnet_130", "ghost_resnet56", "ghost_vgg16", "g_ghost_resnet56", "sknet50", "sk_resnext29",
       "mgic_resnet56", "mgic_mobilenetv2_100", "deeplabv3_mobilenetv2", "lraspp_mobilenetv2", "fcn_mobilenetv2"]
BASELINES = ["resnet20", "resnet18"]


def _model(name: str):
    if name in MODELS:
        info = model_info(name)
        return create_model(name), tuple(info.input_size[1:]), info.task
    raise KeyError(f"{name!r} is not registered")


def _steps(model: nn.Module, infer_hw, train_hw, task: str, device, amp, channels_last: bool, batch: int):
    """``(model, infer, step)``: a batch-1 eval forward at ``infer_hw`` and one SGD training step
    at ``batch`` x ``train_hw`` (each switches the model to its mode)."""
    model = model.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
    x1 = torch.randn(1, 3, *infer_hw, device=device).contiguous(memory_format=fmt)
    xb = torch.randn(batch, 3, *train_hw, device=device).contiguous(memory_format=fmt)
    model.eval()
    with torch.no_grad(), ctx():
        ncls = model(xb[:2]).shape[1]
    yb = torch.randint(0, ncls, (batch, *train_hw) if task == "segmentation" else (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def infer():
        model.eval()
        with torch.no_grad(), ctx():
            model(x1)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        with ctx():
            loss = loss_fn(model(xb).float(), yb)
        loss.backward()
        opt.step()
    return model, infer, step


def measure(model: nn.Module, infer_hw, train_hw, task: str, device="cpu", amp: Optional[torch.dtype] = None,
            channels_last: bool = False, batch: int = 64, runs: int = 5, warmup: int = 2,
            max_train_runs: Optional[int] = None, train: bool = True,
            baseline: Optional[tuple] = None) -> Dict[str, float]:
    """Median batch-1 latency (ms) at ``infer_hw`` and training images/s at ``batch`` x ``train_hw``.

    ``baseline=(module, infer_hw, train_hw, task)`` times a baseline in alternation with the
    model (one call of each per round) and adds its figures as ``base_latency_ms`` and
    ``base_train_img_s`` (the latter only when both train at the same input size)."""
    device = torch.device(device)
    _, infer, step = _steps(model, infer_hw, train_hw, task, device, amp, channels_last, batch)
    infers, steps = {"model": infer}, {"model": step}
    if baseline is not None:
        bmod, b_hw, b_train_hw, b_task = baseline
        _, binfer, bstep = _steps(bmod, b_hw, b_train_hw, b_task, device, amp, channels_last, batch)
        infers["base"] = binfer
        if tuple(b_train_hw) == tuple(train_hw):
            steps["base"] = bstep
    lat = time_interleaved(infers, runs, warmup, device)
    out = {"latency_ms": lat["model"] * 1e3, "train_img_s": None, "train_runs": 0}
    if "base" in lat:
        out["base_latency_ms"] = lat["base"] * 1e3
    if not train:
        return out
    t_runs = runs if max_train_runs is None else max(1, min(runs, max_train_runs))
    t_step = time_interleaved(steps, t_runs, 1, device)
    out.update(train_img_s=batch / t_step["model"], train_runs=t_runs)
    if "base" in t_step:
        out["base_train_img_s"] = batch / t_step["base"]
    return out


def _train_hw(hw, task, imagenet_train: int):
    if task == "segmentation":
        return (96, 128)
    if hw[0] > 32:
        return (imagenet_train, imagenet_train)
    return hw


def run(names: List[str], runs: int, batch: int, imagenet_train: int, device: str = "cpu",
        amp: Optional[torch.dtype] = None, channels_last: bool = False, heavy_macs: float = 2e9,
        native_train: bool = False, skip_train_above: float = float("inf")) -> List[Dict[str, object]]:
    rows = []
    for name in names:
        torch.manual_seed(0)
        m, hw, task = _model(name)
        c = operad.cost(m, size=hw)
        thw = hw if native_train else _train_hw(hw, task, imagenet_train)
        train_macs = c.macs * (thw[0] * thw[1]) / (hw[0] * hw[1])
        heavy = device == "cpu" and train_macs > heavy_macs
        step_macs = 3 * batch * train_macs  # forward + backward, about 3x the forward
        base = None
        if name not in BASELINES:  # timed in alternation with its baseline
            bname = "resnet20" if hw == (32, 32) else "resnet18"
            torch.manual_seed(0)
            bm, bhw, btask = _model(bname)
            base = (bm, bhw, bhw if native_train else _train_hw(bhw, btask, imagenet_train), btask)
        t0 = time.perf_counter()
        r = measure(m, hw, thw, task, device, amp, channels_last, batch, runs,
                    max_train_runs=2 if heavy else None, train=step_macs <= skip_train_above, baseline=base)
        rows.append(dict(model=name, task=task, input=f"{hw[0]}x{hw[1]}", train_input=f"{thw[0]}x{thw[1]}",
                         params=int(c.params), macs=int(c.macs), **r))
        print(f"  {name:<24} {time.perf_counter() - t0:6.1f} s", flush=True)
        del m
    return rows


def _ratios(rows):
    base = {r["model"]: r for r in rows if r["model"] in BASELINES}
    for r in rows:
        b = base.get("resnet20" if r["input"] == "32x32" else "resnet18")
        if b is None:
            continue
        r["baseline"] = b["model"]
        r["mac_ratio"] = r["macs"] / b["macs"]
        # the baseline's figures from the paired (alternating) timing where there are any
        r["lat_ratio"] = r["latency_ms"] / r.get("base_latency_ms", b["latency_ms"])
        r["lat_per_mac"] = r["lat_ratio"] / r["mac_ratio"]
        b_train = r.get("base_train_img_s", b["train_img_s"])
        if r["train_input"] == b["train_input"] and r["train_img_s"] and b_train:
            r["train_ratio"] = r["train_img_s"] / b_train
            train_macs_ratio = r["mac_ratio"]
            r["train_time_per_mac"] = (1 / r["train_ratio"]) / train_macs_ratio
    return rows


def table(rows, title: str) -> str:
    head = ("| model | input | params (M) | MACs (M) | latency b1 (ms) | lat ratio | MAC ratio | lat/MAC "
            "| train input | train img/s (b64) | train ratio | train time/MAC | baseline |")
    lines = [f"### {title}", "", head, "|" + "---|" * 13]
    f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.1f} | "
                     f"{r['latency_ms']:.1f} | {f(r.get('lat_ratio'))} | {f(r.get('mac_ratio'))} | "
                     f"{f(r.get('lat_per_mac'))} | {r['train_input']} | {f(r['train_img_s'], 1)} | "
                     f"{f(r.get('train_ratio'))} | {f(r.get('train_time_per_mac'))} | {r.get('baseline', '-')} |")
    return "\n".join(lines)


def main(argv=None) -> Dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=None, help="glob patterns over the zoo (default: all)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--imagenet-train", type=int, default=64, help="training input side for ImageNet-sized models")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads; 0: 2, or 1 when the 1-min load average exceeds the core count "
                        "(two OpenMP threads on an oversubscribed machine ran ResNet-20 100x slower here)")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--skip-train-above", type=float, default=300e9,
                   help="on the CPU, skip the training measurement when a step needs more MACs than this")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    threads = a.threads or (1 if os.getloadavg()[0] > (os.cpu_count() or 1) else 2)
    torch.set_num_threads(threads)
    names = ZOO if not a.models else [n for n in ZOO if any(fnmatch.fnmatch(n, pat) for pat in a.models)]
    names = BASELINES + [n for n in names if n in MODELS]
    missing = [b for b in BASELINES if b not in MODELS]
    if missing:
        raise SystemExit(f"bench_zoo needs the baselines {missing} in the registry (models/resnet.py)")
    load0 = os.getloadavg()
    print(f"torch {torch.__version__}; threads {torch.get_num_threads()}; load average {load0[0]:.1f}", flush=True)
    out = {"cpu": _ratios(run(names, a.runs, a.batch, a.imagenet_train, skip_train_above=a.skip_train_above))}
    load1 = os.getloadavg()
    out["load_average"] = [load0[0], load1[0]]
    print(table(out["cpu"], f"CPU ({threads} thread{'s' if threads > 1 else ''}, fp32; ImageNet models train at "
                            f"{a.imagenet_train}x{a.imagenet_train}, segmentation at 96x128; 1-min load average "
                            f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end)"))
    if torch.cuda.is_available() and not a.no_gpu:
        out["gpu"] = _ratios(run(names, max(a.runs, 10), a.batch, a.imagenet_train, "cuda", torch.bfloat16, True,
                                 native_train=True))
        print()
        print(table(out["gpu"], f"GPU {torch.cuda.get_device_name()} (bf16 autocast, channels_last, native sizes)"))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
