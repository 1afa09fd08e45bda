"""The ``operad`` command.

    operad demo [--data PATH] [--no-download]     # the end-to-end tour (CPU, ~minutes); fetches CIFAR-10 if missing
    operad train CONFIG.toml [key=value ...] [--resume] [--only NAME]
    operad eval RUN_DIR                           # accuracy / mIoU, confusion matrix
    operad robustness RUN_DIR [--jpeg] [--shift] [--rotation] [--inception-weights PATH]  # accuracy and KID
    operad list [PATTERN]                         # registered models and bundled configs
    operad summary MODEL|EXPR                     # table of types, costs, Lipschitz bounds
    operad verify MODEL|EXPR                      # numerical checks of the algebra's claims
    operad results [RUNS_DIR ...]                 # Markdown table + plot of finished runs
    operad export MODEL|RUN --format onnx|pt2 --out FILE   # checked by onnxruntime / reloading
    operad reproduce --list | [CLAIM ...] --profile cpu --seeds 3 --out DIR   # graded paper claims
    operad efficiency MODEL [--variants float32,int8,...] [--data ROOT] [--run RUN] [--out DIR]  # variants side by side
    operad gpu-suite --budget 540 --out DIR [--smoke]                         # everything worth knowing on a GPU
    operad derive-boxes OUT [--min-area N]        # detection boxes derived from CamVid (VOC layout)
    operad redundancy MODEL|RUN --data PATH --out DIR [--batches N] [--energy E]   # gradient spectra per layer
    operad --debug VERB ...                       # show the traceback of an error

An error in what the user gave (config, expression, data, sizes) prints
``operad VERB: error: MESSAGE`` and exits with status 2; only bugs show tracebacks.

Heavy imports (models, theory) happen inside each command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional, Sequence

__all__ = ["main", "DEMO_EXPR"]

DEMO_EXPR = ("ops.conv(24) >> ops.bn() >> ops.relu() >> ops.max_pool() "
             ">> ops.residual(ops.conv(24) >> ops.bn() >> ops.relu() >> ops.conv(24) >> ops.bn()) >> ops.relu() "
             ">> ops.conv(48, stride=2) >> ops.bn() >> ops.relu() "
             ">> ops.residual(ops.conv(48) >> ops.bn() >> ops.relu() >> ops.conv(48) >> ops.bn()) >> ops.relu() "
             ">> ops.global_pool() >> ops.linear(10)")


def _configs_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def _model_from_spec(spec: str, num_classes: int = 10, in_chans: int = 3):
    """A registered model name, or an expression over ``ops``; returns (module, input_shape)."""
    if "ops." in spec or ">>" in spec:
        from operad.experiments.config import Config
        from operad.experiments.train import build_model

        m = build_model(Config(model_expr=spec), num_classes, in_chans)
        return m, (1, in_chans, 32, 32)
    from operad.models import create_model

    m = create_model(spec)
    size = getattr(m, "default_input_size", (in_chans, 32, 32))
    return m, (1,) + tuple(size)


def _parse_shape(s: Optional[str]):
    """``"1,3,32,32"`` or ``"1x3x32x32"`` -> a shape; N,C,H,W (or N,C for a rank-0 input) of positive ints."""
    if not s:
        return None
    try:
        shape = tuple(int(v) for v in s.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 4) or min(shape) < 1:
        from operad.operators.algebra.errors import OperadError

        raise OperadError(f"--input expects N,C,H,W (or N,C) positive integers, e.g. 1,3,32,32; got {s!r}")
    return shape


# ----------------------------------------------------------------------------- commands

def cmd_train(a) -> int:
    from operad.experiments.train import train
    from operad.experiments.detection.engine import is_detection_config

    ov = list(a.overrides)
    if a.data:
        ov.append(f"data_root={json.dumps(a.data)}")
    if a.download:
        ov.append("download=true")
    if a.out:
        ov.append(f"out_dir={json.dumps(a.out)}")
    if is_detection_config(a.config):  # task = "detection": the detection engine (experiments/detection)
        from operad.experiments.detection.engine import train_detection
        train_detection(a.config, ov, resume=a.resume, overwrite=a.overwrite, profile=a.profile, only=a.only or None)
        return 0
    res = train(a.config, ov, resume=a.resume, overwrite=a.overwrite, profile=a.profile, only=a.only or None)
    rs = res if isinstance(res, list) else [res]
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if rank0:
        from operad.experiments.results import results_table

        print(results_table(rs))
    return 0


def _load(a):
    from operad.experiments.data import check_classes, load_dataset
    from operad.experiments.train import _val_split, load_run_model

    device = a.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    model, cfg, classes = load_run_model(a.run, use_ema=not a.no_ema, device=device)
    split = a.split or _val_split(cfg.dataset)
    data = load_dataset(cfg.dataset, split, a.data or cfg.data_root or None, a.subset or None)
    check_classes(data, classes, f"the checkpoint {a.run}")  # before any evaluation
    return model, cfg, data, device


def cmd_eval(a) -> int:
    from operad.experiments.augment import DeviceBatches
    from operad.experiments.detection.engine import eval_detection, is_detection_run
    from operad.experiments.evaluate import evaluate
    from operad.experiments.plots import plot_confusion

    if is_detection_run(a.run):  # a detection run: mAP and a PNG of predicted boxes
        r = eval_detection(a.run, a.data, a.split or "val", a.subset, min(a.batch_size, 16), a.device or "cpu", a.out,
                           use_ema=not a.no_ema)
        print(f"{a.run} on {a.split or 'val'} ({r['images']} images): mAP@0.5 {r['map50']:.4f} (all-point), "
              f"{r['map50_11point']:.4f} (11-point), COCO mAP@[.5:.95] {r['coco_map']:.4f}; wrote {r['png']}")
        return 0
    model, cfg, data, device = _load(a)
    r = evaluate(model, DeviceBatches(data, a.batch_size, device))
    out = a.out or (a.run if os.path.isdir(a.run) else os.path.dirname(a.run))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"eval-{data.split}.json"), "w") as f:
        json.dump(r, f, indent=2)
    plot_confusion(r["confusion_matrix"], data.classes, os.path.join(out, f"confusion-{data.split}.png"),
                   f"{cfg.name}: {data.name}/{data.split}")
    keys = ("top1", "top5", "mean_iou", "pixel_accuracy", "loss")
    print(f"{cfg.name} on {data.name}/{data.split} ({len(data)} images): "
          + ", ".join(f"{k} {r[k]:.4f}" for k in keys if k in r))
    for c, v in r["per_class_accuracy"].items():
        extra = f"  IoU {r['iou'][c]:.4f}" if "iou" in r else ""
        print(f"  {c:<12} acc {v:.4f}{extra}")
    print(f"wrote {os.path.join(out, f'eval-{data.split}.json')} and confusion-{data.split}.png")
    return 0


def cmd_robustness(a) -> int:
    from operad.experiments import evaluate as _  # noqa: F401
    from operad.experiments.kid import KidSettings
    ev = sys.modules["operad.experiments.evaluate"]

    kid = None if a.no_kid else KidSettings(a.kid_subsets, a.kid_subset_size)
    inception = None
    if a.inception_weights:  # checked before any sweep runs: torch-fidelity present, the file readable
        from operad.experiments.fidelity import InceptionMetrics

        device = a.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")  # as _load picks
        inception = InceptionMetrics(a.inception_weights, kid or KidSettings(), device)
    model, cfg, data, device = _load(a)
    out = a.out or os.path.join(a.run if os.path.isdir(a.run) else os.path.dirname(a.run), "robustness")
    which = [k for k in ("jpeg", "shift", "rotation") if getattr(a, k)] or \
        (["jpeg", "shift", "rotation"] if data.task == "classification" else ["rotation"])
    res = {}
    kw = dict(out_dir=out, label=cfg.name, kid=kid, inception=inception)
    try:
        if "jpeg" in which:
            res["jpeg"] = ev.jpeg_sweep(model, data, device, a.batch_size, **kw)
            print(f"JPEG: mean top-1 over CIFAR-10-C severities {res['jpeg']['mean_corrupted']:.4f}")
            print(ev.sweep_table("jpeg", res["jpeg"]) + "\n")
        if "shift" in which:
            res["shift"] = ev.shift_consistency(model, data, device, a.batch_size, a.max_shift, a.shift_mode, **kw)
            print(f"shift consistency (random shifts up to {a.max_shift}px): {res['shift']['consistency']:.4f}")
            print(ev.sweep_table("shift", res["shift"]) + "\n")
        if "rotation" in which:
            angles = a.angles or cfg.rotation_angles
            res["rotation"] = ev.rotation_sweep(model, data, device, a.batch_size, angles, **kw)
            print(ev.sweep_table("rotation", res["rotation"]) + "\n")
    finally:
        if inception is not None:
            inception.close()
    if kid is not None:
        used = next((r["kid_settings"]["subset_size"] for r in res.values() if "kid_settings" in r), kid.subset_size)
        print(f"KID: between the clean and the corrupted set, in {cfg.name}'s features (the classifier's input), "
              f"{kid.subsets} subsets of {used}" + (f" (all {len(data)} images: every subset is the whole set, so "
                                                     f"the std is 0; --kid-subset-size {len(data) // 2} shows the "
                                                     f"spread)" if used >= len(data) else ""))
    print(f"wrote JSON and PNG files to {out}")
    return 0


def cmd_list(a) -> int:
    from operad.models import list_models

    names = list_models(a.pattern)
    print(f"models ({len(names)}):")
    try:
        from operad.models.registry import MODELS
    except ImportError:  # pragma: no cover
        MODELS = {}
    for n in names:
        e = MODELS.get(n)
        extra = f"  [{e.task}, input {e.input_size}]" if e is not None else ""
        print(f"  {n}{extra}")
    cfgs = sorted(f[:-5] for f in os.listdir(_configs_dir()) if f.endswith(".toml")) \
        if os.path.isdir(_configs_dir()) else []
    print(f"configs ({len(cfgs)}) in {_configs_dir()}:")
    for c in cfgs:
        print(f"  {c}")
    return 0


def cmd_summary(a) -> int:
    from operad import summary

    model, shape = _model_from_spec(a.model, a.num_classes)
    shape = _parse_shape(a.input) or shape
    print(summary(model, shape))
    cfg = getattr(model, "default_cfg", None)
    if cfg:  # timm-style defaults of a registered model (operad.models.hub)
        print("default_cfg: " + ", ".join(f"{k} {v}" for k, v in cfg.items() if k not in ("architecture", "tags")))
    return 0


def cmd_verify(a) -> int:
    from operad.theory.verify import run_all

    from operad.operators.algebra.sizes import check_input_shape

    model, shape = _model_from_spec(a.model, a.num_classes)
    shape = _parse_shape(a.input) or shape
    check_input_shape(model, shape)
    reports = run_all(model.double() if a.double else model, shape, seed=a.seed)
    print(f"verification of {a.model} at input {shape}:")
    for r in reports:
        print("  " + str(r))
    bad = [r for r in reports if r.ok is False]
    print(f"{len(reports) - len(bad)} of {len(reports)} checks hold" + ("" if not bad else
          f"; VIOLATED: {', '.join(r.check for r in bad)}"))
    return 1 if bad else 0


def cmd_results(a) -> int:
    from operad.experiments.results import collect_results, plot_results, results_table

    rows = collect_results(a.runs or ["runs"])
    md = results_table(rows)
    print(md)
    if a.out:
        with open(a.out, "w") as f:
            f.write(md)
    if rows and a.plot:
        print(f"plot: {plot_results(rows, a.plot)}")
    return 0


def cmd_export(a) -> int:
    """Export a model, expression or run to ONNX or a torch.export program, checked against PyTorch."""
    from operad.experiments.export import ExportError, export_model, resolve_model

    model, shape = resolve_model(a.model, _parse_shape(a.input), a.num_classes)
    out = a.out or f"{os.path.basename(os.path.normpath(a.model)).split('.')[0] or 'model'}.{a.format}"
    try:
        r = export_model(model, shape, out, a.format, a.deploy, check=not a.no_check)
    except ExportError as e:
        print(f"operad export: error: {e}", file=sys.stderr)
        return 2
    chk = "" if a.no_check else (f"; {'onnxruntime' if a.format == 'onnx' else 'reloaded program'} matches "
                                 f"PyTorch (max |diff| {r['max_abs_diff']:.2g})")
    if r.get("inputs_differing"):
        chk += (f" on a check input after {r['inputs_differing']} that differed: an activation on a quantization "
                f"threshold rounds either way in another runtime")
    print(f"wrote {r['path']} ({a.format}, input {tuple(shape)}{', ' + a.deploy if a.deploy else ''}){chk}")
    return 0


def _demo_data(a):
    """CIFAR-10 train and test splits; when none is found, the official archive is
    downloaded (md5-checked) unless ``--no-download``."""
    from operad.experiments.data import DataNotFound, data_root, load_dataset

    try:
        train = load_dataset("cifar10", "train", a.data, a.subset or None, download=not a.no_download)
    except DataNotFound as e:  # only with --no-download
        raise DataNotFound(f"CIFAR-10 not found under {data_root(a.data)} and --no-download forbids fetching it: "
                           f"drop --no-download to download the official archive (163 MiB), or point --data PATH "
                           f"or OPERAD_DATA=PATH at a copy") from e
    return train, load_dataset("cifar10", "test", a.data, a.test_subset or None)


def cmd_demo(a) -> int:
    import torch

    from operad import Field, ops, summary
    from operad.experiments.config import Config
    from operad.experiments.data import load_dataset
    from operad.experiments.train import build_model, train_run
    from operad.theory.verify import run_all

    t_start = time.perf_counter()
    expr = a.expr or DEMO_EXPR
    print(f"1. the network, as an expression:\n   {expr}\n")
    model = build_model(Config(model_expr=expr), 10)
    print("2. its summary (types, exact costs, Lipschitz bounds, symmetries):")
    print(summary(model, (1, 3, 32, 32)))
    print("\n3. verification of the algebra's claims on the bound module:")
    for r in run_all(model.double(), (1, 3, 32, 32)):
        print("   " + str(r))
    model = model.float()
    print("\n4. data")
    train_data, test_data = _demo_data(a)
    print(f"   {train_data}\n   {test_data}")
    # calibrate: how many images per second does this machine train?
    from operad.experiments.train import default_threads

    torch.set_num_threads(default_threads())
    probe = build_model(Config(model_expr=expr), 10)
    opt = torch.optim.SGD(probe.parameters(), lr=0.01)
    x = torch.randn(a.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (a.batch_size,))
    for i in range(4):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe(x), y).backward()
        opt.step()
    ips = 3 * a.batch_size / (time.perf_counter() - t0)
    # the probe runs without data movement, augmentation or logging: keep a margin
    budget_imgs = ips * a.budget * 0.65
    steps = max(10, int(budget_imgs // a.batch_size))
    epochs = max(1, -(-steps * a.batch_size // len(train_data)))
    print(f"   this machine trains ~{ips:.0f} images/s (probe); budget {a.budget:.0f}s -> {steps} steps "
          f"({steps * a.batch_size / len(train_data):.2f} epochs)")
    cfg = Config(name=a.name, experiment="demo", model_expr=expr, dataset="cifar10", out_dir=a.out, epochs=epochs,
                 max_steps=steps, batch_size=a.batch_size, eval_batch_size=500, optimizer="sgd", lr=0.1,
                 schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1, log_every=10,
                 measure_speed=True,
                 claim="a network written as an operad expression trains like any nn.Module")
    print(f"\n5. training ({cfg.out_dir}/{cfg.name})")
    res = train_run(cfg, overwrite=True, model=model, train_data=train_data, val_data=test_data)
    print(f"\n6. evaluation on {len(test_data)} CIFAR-10 test images: top-1 {res['top1']:.4f}, "
          f"top-5 {res['top5']:.4f}")
    import sys as _sys

    import operad.experiments.evaluate  # noqa: F401
    from operad.experiments.data import ArrayData, stratified_subset
    from operad.experiments.train import load_run_model

    ev = _sys.modules["operad.experiments.evaluate"]
    idx = stratified_subset(test_data.labels, a.robust_per_class)
    rd = ArrayData(test_data.name, test_data.split, test_data.images[idx], test_data.labels[idx], test_data.classes,
                   mean=test_data.mean, std=test_data.std, source=test_data.source)
    final, _, _ = load_run_model(res["run_dir"])
    rob = os.path.join(res["run_dir"], "robustness")
    print(f"   robustness on {len(rd)} test images ({a.robust_per_class} per class):")
    j = ev.jpeg_sweep(final, rd, "cpu", 500, out_dir=rob, label="demo")
    s = ev.shift_consistency(final, rd, "cpu", 500, out_dir=rob, label="demo")
    r = ev.rotation_sweep(final, rd, "cpu", 500, (0, 15, 30, 45, 90, 180), out_dir=rob, label="demo")
    print("   JPEG quality -> top-1: " + ", ".join(f"q{k} {v:.3f}" for k, v in j["quality"].items())
          + f" (mean over CIFAR-10-C severities {j['mean_corrupted']:.3f})")
    print(f"   shift consistency {s['consistency']:.3f}; rotation: "
          + ", ".join(f"{k}deg {v:.3f}" for k, v in r["angle"].items()))
    print("   KID clean vs corrupted in the network's features: "
          + ", ".join(f"JPEG q{k} {v['mean']:.4f}" for k, v in j["kid"].items() if k in ("75", "40")) + ", "
          + ", ".join(f"shift {k}px {v['mean']:.4f}" for k, v in s["kid"].items() if k in ("1", "4")) + ", "
          + ", ".join(f"rotation {k}deg {v['mean']:.4f}" for k, v in r["kid"].items() if k in ("15", "90")))
    print(f"   training {res['train_img_per_s']:.0f} images/s, inference {res['infer_img_per_s']:.0f} images/s")
    run_dir = res["run_dir"]
    print(f"\n7. files in {run_dir}: " + ", ".join(sorted(os.listdir(run_dir))))
    print(f"   plots: curves.png, confusion.png, robustness/jpeg.png, robustness/shift.png, robustness/rotation.png")
    print(f"\ndemo finished in {time.perf_counter() - t_start:.0f} s")
    return 0


def cmd_derive_boxes(a) -> int:
    """Boxes of CamVid's Car, Pedestrian, Bicyclist and SignSymbol components, in the VOC layout."""
    from operad.experiments.data import data_root
    from operad.experiments.detection.derive import derive_camvid_boxes

    src = a.camvid or os.path.join(data_root(a.data), "camvid")
    stats = derive_camvid_boxes(src, a.out, a.min_area, classes=a.classes.split(",") if a.classes else None)
    for split, st in stats.items():
        print(f"{split}: {st['frames']} frames, {st['boxes']} boxes ("
              + ", ".join(f"{k} {v}" for k, v in st.items() if k not in ("frames", "boxes")) + ")")
    print(f"wrote {a.out} (VOC layout; derived from the CamVid label maps at {src})")
    return 0


def cmd_redundancy(a) -> int:
    """Per-layer gradient spectra, effective ranks and maximal pruning ratios (operad.theory.redundancy)."""
    import functools

    import torch
    import torch.nn.functional as F

    from operad.experiments.augment import DeviceBatches
    from operad.experiments.data import check_classes, load_dataset
    from operad.operators.algebra.errors import OperadError
    from operad.theory.redundancy import redundancy

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(a.seed)  # an untrained model's initial weights
    if os.path.exists(a.model):  # a run directory or checkpoint: its data set and classes
        from operad.experiments.train import load_run_model

        model, cfg, classes = load_run_model(a.model, use_ema=not a.no_ema, device=device)
        data = load_dataset(a.dataset or cfg.dataset, a.split, a.data or cfg.data_root or None, a.subset or None)
        if classes:
            check_classes(data, classes, f"the checkpoint {a.model}")
    else:  # a registered model or an expression, as wide as the data set's classes
        data = load_dataset(a.dataset or "cifar10", a.split, a.data, a.subset or None)
        if "ops." in a.model or ">>" in a.model:
            model, _ = _model_from_spec(a.model, data.num_classes)
        else:
            from operad.models import create_model

            model = create_model(a.model, num_classes=data.num_classes)
        model = model.to(device)
    width = getattr(getattr(model, "out_type", None), "channels", None)
    if width is not None and width != data.num_classes:
        raise OperadError(f"{a.model} has {width} outputs but {data.name} has {data.num_classes} classes "
                          f"(an expression can end in ops.linear(num_classes))")
    loss = None if data.ignore_index is None else functools.partial(F.cross_entropy, ignore_index=data.ignore_index)
    batches = DeviceBatches(data, a.batch_size, device, shuffle=True, seed=a.seed)
    rep = redundancy(model, batches, a.batches, loss, a.energy)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(rep.to_dict(), f, indent=1)
    with open(os.path.join(a.out, "report.txt"), "w") as f:
        f.write(f"{a.model} on {data.name}/{data.split}\n{rep.table()}\n")
    rep.plot(os.path.join(a.out, "spectra.png"))
    print(rep.table())
    print(f"wrote report.json, report.txt and spectra.png to {a.out}")
    return 0


# ----------------------------------------------------------------------------- parser

def _int_at_least(lo: int):
    """An argparse type: an int >= ``lo`` (argparse reports anything else as a usage error)."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects an integer >= {lo}; got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expects an integer >= {lo}; got {v}")
        return v

    parse.__name__ = f"int>={lo}"
    return parse


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        v = float("nan")
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expects a positive number; got {s!r}")
    return v


def _energy(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        v = float("nan")
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expects a number in (0, 1], e.g. 0.99; got {s!r}")
    return v


def _angles(s: str) -> List[float]:
    try:
        out = [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or any(v != v or abs(v) == float("inf") for v in out):
        raise argparse.ArgumentTypeError(f"expects comma-separated finite angles in degrees, e.g. 0,45,90; got {s!r}")
    return out

def cmd_reproduce(a) -> int:
    """List the claims registry, or run, grade and report claims (resumable)."""
    from operad.experiments.claims import get_claims

    if a.list:
        for c in get_claims(a.claims):
            print(f"{c.name:<32} {c.system:<20} {c.metric:<22} {c.paper.split('.')[0]}")
        return 0
    from operad.experiments.claims.runner import reproduce

    rs = reproduce(a.claims, a.profile, a.seeds, a.out, a.data or os.environ.get("OPERAD_DATA", ""))
    for r in rs:
        print(f"{r['claim']:<32} {r['verdict']}")
    print(f"results: {os.path.join(a.out, 'RESULTS.md')}")
    return 0


def _batch_sizes(s: str) -> List[int]:
    try:
        out = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expects comma-separated positive batch sizes, e.g. 1,32; got {s!r}")
    return out


def cmd_efficiency(a) -> int:
    """One network's variants (int8, QNN, binary, pruned, structural) side by side: table, JSON, Markdown, PNG."""
    import re

    from operad.experiments.efficiency import DEFAULT_RESULTS, efficiency_table, format_table, write_outputs
    from operad.operators.algebra.errors import OperadError

    if not a.model and not a.run:
        raise OperadError("name a MODEL (a registered model or an expression) or give --run RUN")
    if a.results and not os.path.isdir(a.results):
        raise FileNotFoundError(f"--results {a.results}: no such folder (a claims results folder, e.g. "
                                f"experiments/results/cpu)")
    res = efficiency_table(a.model or "", a.variants, data_root=a.data, run=a.run or "", batches=a.batch_sizes,
                           runs=a.runs, warmup=a.warmup, threads=a.threads, int8_path=a.int8,
                           calib_batches=a.calib_batches, results_dir=a.results or DEFAULT_RESULTS, subset=a.subset,
                           gpu=False if a.no_gpu else None, num_classes=a.num_classes, seed=a.seed)
    print(format_table(res))
    out = a.out or os.path.join("efficiency", res["model"] if re.fullmatch(r"[\w.-]+", res["model"]) else "expression")
    paths = write_outputs(res, out)
    print(f"int8 path: {res['int8'] or 'not built'}")
    print("wrote " + ", ".join(paths.values()))
    return 0


def cmd_gpu_suite(a) -> int:
    """Run the GPU suite (or its CPU smoke mode) within a time budget."""
    from operad.experiments.gpu_suite import run_suite

    res = run_suite(a.out, budget=a.budget, smoke=a.smoke, data_root=a.data,
                    sections=a.sections.split(",") if a.sections else None, peer=a.peer)
    failed = [s["name"] for s in res["sections"] if s["status"] == "failed"]
    print(f"gpu-suite: {len(res['sections'])} sections, failed: {', '.join(failed) or 'none'}; "
          f"report {os.path.join(a.out, 'SUITE.md')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error (also OPERAD_DEBUG=1)")
    p = argparse.ArgumentParser(prog="operad", description="operad: train, evaluate and inspect operator networks",
                                parents=[common])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, **kw) -> argparse.ArgumentParser:  # every verb takes --debug too
        return sub.add_parser(name, parents=[common], **kw)

    sub.required = True

    t = add("train", help="train the runs of a TOML config")
    t.add_argument("config", help="a TOML file, or the name of a bundled config (operad list)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=0.05 cpu.epochs=1")
    t.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    t.add_argument("--overwrite", action="store_true", help="start again even if the run directory holds a run")
    t.add_argument("--data", help="data root (default $OPERAD_DATA, then ./data)")
    t.add_argument("--download", action="store_true", help="download the official CIFAR archive if missing")
    t.add_argument("--out", help="output folder for runs (default runs/)")
    t.add_argument("--profile", choices=("cpu", "gpu"), help="which override table applies (default: by device)")
    t.add_argument("--only", action="append", metavar="NAME", help="train only this run (repeatable)")
    t.set_defaults(fn=cmd_train)

    for name, fn, hlp in (("eval", cmd_eval, "evaluate a finished run"),
                          ("robustness", cmd_robustness, "JPEG, shift and rotation robustness of a run")):
        e = add(name, help=hlp)
        e.add_argument("run", help="a run directory (or a final.pt / checkpoint.pt)")
        e.add_argument("--data", help="data root")
        e.add_argument("--split", help="split (default: test for CIFAR, val for CamVid)")
        e.add_argument("--subset", type=_int_at_least(0), default=0, help="first N images per class (frames for CamVid)")
        e.add_argument("--batch-size", type=_int_at_least(1), default=256)
        e.add_argument("--device", help="cpu or cuda (default: cuda if available)")
        e.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
        e.add_argument("--out", help="output folder (default: the run directory)")
        if name == "robustness":
            e.add_argument("--jpeg", action="store_true", help="JPEG qualities 75 (clean) and 80, 65, 58, 50, 40")
            e.add_argument("--shift", action="store_true", help="shift consistency")
            e.add_argument("--rotation", action="store_true", help="accuracy against rotation angle")
            e.add_argument("--angles", type=_angles, help="comma-separated angles in degrees")
            e.add_argument("--max-shift", type=_int_at_least(0), default=4)
            e.add_argument("--shift-mode", default="zeros", choices=("zeros", "reflect", "circular"))
            e.add_argument("--no-kid", action="store_true",
                           help="skip the KID between clean and corrupted sets in the network's features")
            e.add_argument("--kid-subsets", type=_int_at_least(1), default=100, help="KID subsets (default 100)")
            e.add_argument("--kid-subset-size", type=_int_at_least(2), default=1000,
                           help="KID subset size, clipped to the set size (default 1000)")
            e.add_argument("--inception-weights", metavar="PATH",
                           help="torch-fidelity's InceptionV3 weights (pt_inception-2015-12-05): FID and KID in "
                                "Inception space too (needs torch-fidelity; nothing is downloaded)")
        e.set_defaults(fn=fn)

    db = add("derive-boxes", help="detection boxes derived from CamVid label maps (VOC layout)")
    db.add_argument("out", help="output folder (Annotations/, JPEGImages/, ImageSets/Main/)")
    db.add_argument("--camvid", help="the CamVid folder (default <data root>/camvid)")
    db.add_argument("--data", help="data root (default $OPERAD_DATA, then ./data)")
    db.add_argument("--min-area", type=int, default=100, help="smallest component kept, in pixels (default 100)")
    db.add_argument("--classes", help="comma-separated box classes to keep (default all: Car,Pedestrian,Bicyclist,"
                    "SignSymbol)")
    db.set_defaults(fn=cmd_derive_boxes)

    ls = add("list", help="registered models and bundled configs")
    ls.add_argument("pattern", nargs="?", default="*")
    ls.set_defaults(fn=cmd_list)

    for name, fn, hlp in (("summary", cmd_summary, "types, costs and bounds of a model, node by node"),
                          ("verify", cmd_verify, "numerical checks of a model's claimed properties")):
        s = add(name, help=hlp)
        s.add_argument("model", help="a registered model name, or an expression such as \"ops.conv(8) >> ops.relu()\"")
        s.add_argument("--input", help="input shape N,C,H,W (default: the model's)")
        s.add_argument("--num-classes", type=_int_at_least(1), default=10)
        if name == "verify":
            s.add_argument("--seed", type=_int_at_least(0), default=0)
            s.add_argument("--double", action=argparse.BooleanOptionalAction, default=True,
                           help="check in float64 (default)")
        s.set_defaults(fn=fn)

    r = add("results", help="collect runs into a Markdown table and a plot")
    r.add_argument("runs", nargs="*", help="run folders to search (default runs/)")
    r.add_argument("--out", help="write the Markdown table here")
    r.add_argument("--plot", default=None, help="write a PNG bar plot here")
    r.set_defaults(fn=cmd_results)

    x = add("export", help="export to ONNX or a torch.export program, checked by a runtime")
    x.add_argument("model", help="a registered model, an expression over ops, or a run directory / final.pt")
    x.add_argument("--format", choices=("onnx", "pt2"), default="onnx")
    x.add_argument("--deploy", choices=("fuse", "remove_residuals"), help="apply a deployment rewrite first")
    x.add_argument("--out", help="output file (default MODEL.FORMAT)")
    x.add_argument("--input", help="input shape N,C,H,W (default: the model's)")
    x.add_argument("--num-classes", type=int, default=10)
    x.add_argument("--no-check", action="store_true", help="skip the onnxruntime / reload comparison")
    x.set_defaults(fn=cmd_export)

    d = add("demo", help="expression -> summary -> verification -> training -> evaluation -> plots")
    d.add_argument("--expr", help="the network as an expression over ops (default: a small residual CNN)")
    d.add_argument("--budget", type=_positive_float, default=120.0, help="training time budget in seconds (default 120)")
    d.add_argument("--data", help="data root (default $OPERAD_DATA, then ./data)")
    d.add_argument("--no-download", action="store_true",
                   help="stop instead of downloading CIFAR-10 (163 MiB, md5-checked) when it is not found")
    d.add_argument("--download", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    d.add_argument("--subset", type=_int_at_least(0), default=0, help="train on the first N images per class (default all)")
    d.add_argument("--test-subset", type=_int_at_least(0), default=0, help="evaluate on N images per class (default all)")
    d.add_argument("--batch-size", type=_int_at_least(1), default=128)
    d.add_argument("--robust-per-class", type=_int_at_least(1), default=200,
                   help="test images per class for the robustness sweeps (default 200)")
    d.add_argument("--out", default="runs", help="output folder (default runs/)")
    d.add_argument("--name", default="demo")
    d.set_defaults(fn=cmd_demo)

    rp = add("reproduce", help="run and grade the seed papers' claims (operad reproduce --list)")
    rp.add_argument("claims", nargs="*", metavar="CLAIM", help="claim names (default: every claim)")
    rp.add_argument("--list", action="store_true", help="print the claims, one a line, and exit")
    rp.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "gpu", "full"))
    rp.add_argument("--seeds", type=_int_at_least(1), default=3, help="paired seeds per arm (default 3)")
    rp.add_argument("--out", default="claims", help="output folder (default claims/)")
    rp.add_argument("--data", help="data root (default $OPERAD_DATA, then ./data)")
    rp.set_defaults(fn=cmd_reproduce)

    ef = add("efficiency", help="a network's variants side by side: float32, int8, QNN/binary (packed), pruned, "
                                "structural alternatives; params, bytes, MACs, BOPs, latency, accuracy, Pareto plot")
    ef.add_argument("model", nargs="?", default="", help="a registered model or an expression (default: the run's)")
    ef.add_argument("--variants", action="append", metavar="V[,V...]",
                    help="float32, int8, qnn, bwn, xnor, pruned2x, pruned4x (any prunedNx), alternatives, or "
                         "registered model names (default: all of these)")
    ef.add_argument("--run", "--checkpoint", dest="run", help="a run directory or final.pt: its trained weights "
                    "(then accuracy is measured on --data for the variants made from them)")
    ef.add_argument("--data", help="data root: int8 calibration batches (random inputs without it) and accuracy")
    ef.add_argument("--subset", type=_int_at_least(0), default=0, help="test images per class for accuracy (0: all)")
    ef.add_argument("--out", help="output folder (default efficiency/MODEL)")
    ef.add_argument("--threads", type=_int_at_least(1), default=1, help="CPU threads while timing (default 1)")
    ef.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 32], help="comma-separated (default 1,32)")
    ef.add_argument("--runs", type=_int_at_least(1), default=5, help="timed rounds per batch size (default 5)")
    ef.add_argument("--warmup", type=_int_at_least(0), default=1, help="untimed rounds first (default 1)")
    ef.add_argument("--int8", choices=("auto", "pt2e", "fx"), default="auto",
                    help="int8 path: torchao PT2E, torch.ao FX, or auto (PT2E when torchao imports; default)")
    ef.add_argument("--calib-batches", type=_int_at_least(1), default=4, help="int8 calibration batches of 32")
    ef.add_argument("--results", default=None,
                    help="claims results folder for accuracies (default: the committed experiments/results/cpu)")
    ef.add_argument("--no-gpu", action="store_true", help="time on the CPU only even when CUDA is available")
    ef.add_argument("--num-classes", type=_int_at_least(1), default=10)
    ef.add_argument("--seed", type=_int_at_least(0), default=0)
    ef.set_defaults(fn=cmd_efficiency)

    gs = add("gpu-suite", help="environment, correctness, throughput, operator ratios, speed recipe, "
                                          "claims and CamVid on one GPU, each section within its budget")
    gs.add_argument("--budget", type=_positive_float, default=540.0, help="total seconds (default 540)")
    gs.add_argument("--out", default="gpu_suite", help="output folder (default gpu_suite/)")
    gs.add_argument("--smoke", action="store_true", help="every section on the CPU at tiny sizes (~1 minute)")
    gs.add_argument("--data", help="data root (default $OPERAD_DATA, ../shared/data, /tmp/data, ./data)")
    gs.add_argument("--sections", help="comma-separated subset, e.g. camvid (default: all, in order)")
    gs.add_argument("--peer", help="the script the speed recipe races, run beside it for the measurement "
                                   "(default .device/airbench94.py where it exists)")
    gs.set_defaults(fn=cmd_gpu_suite)

    rd = add("redundancy", help="per-layer gradient spectra, effective ranks and maximal pruning ratios")
    rd.add_argument("model", help="a registered model, an expression over ops, or a run directory / final.pt")
    rd.add_argument("--data", help="data root (default: the run's, else $OPERAD_DATA, then ./data)")
    rd.add_argument("--dataset", help="data set (default: the run's, else cifar10)")
    rd.add_argument("--split", default="train", help="split the gradients come from (default train)")
    rd.add_argument("--subset", type=_int_at_least(0), default=0, help="first N images per class (default all)")
    rd.add_argument("--batches", type=_int_at_least(1), default=4, help="batches analysed (default 4)")
    rd.add_argument("--batch-size", type=_int_at_least(1), default=64)
    rd.add_argument("--energy", type=_energy, default=0.99, help="share of gradient energy kept (default 0.99)")
    rd.add_argument("--seed", type=_int_at_least(0), default=0,
                    help="which images are drawn, and an untrained model's init (default 0)")
    rd.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    rd.add_argument("--no-ema", action="store_true", help="a run's raw weights, not the EMA")
    rd.add_argument("--out", required=True, help="folder for report.json, report.txt and spectra.png")
    rd.set_defaults(fn=cmd_redundancy)
    return p


def _user_errors() -> tuple:
    """The exception classes that mean "the input is wrong", not "operad has a bug"."""
    from operad.operators.algebra.errors import OperadError

    # a path the user named that is missing or unreadable is the user's to fix, not a bug
    errs = [OperadError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError]
    return tuple(errs)


def _divergence_error() -> type:
    try:
        from operad.experiments.train import DivergenceError
    except ImportError:  # pragma: no cover
        return type("NoDivergence", (Exception,), {})
    return DivergenceError


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``operad`` console script.

    An error in the user's input (an :class:`~operad.operators.algebra.errors.OperadError`:
    config, expression, types, sizes; or a data error) prints
    ``operad <verb>: error: <message>`` on stderr and returns 2; a diverged
    training run returns 3. ``--debug`` (or ``OPERAD_DEBUG=1``) re-raises
    instead, so the traceback shows. Any other exception is a bug and keeps
    its traceback.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides given after options: operad train c.toml --resume lr=0.1
        if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = getattr(args, "debug", False) or os.environ.get("OPERAD_DEBUG", "") not in ("", "0")
    user_errors, divergence = _user_errors(), _divergence_error()
    try:
        return int(args.fn(args) or 0)
    except divergence as e:
        if debug:
            raise
        print(f"operad {args.command}: error: {e}", file=sys.stderr)
        return 3
    except user_errors as e:
        if debug:
            raise
        print(f"operad {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
