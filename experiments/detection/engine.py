"""Training and evaluation of detection configs (``task = "detection"``).

``operad train <config>`` hands a config whose ``task`` is ``"detection"`` to
:func:`train_detection`; ``operad eval <run>`` hands a run whose checkpoint says
``task: detection`` to :func:`eval_detection`. Data sets: ``dataset = "voc"``
(``data_root`` in the VOC layout, e.g. the box set ``operad derive-boxes``
writes) or ``"coco"`` (``data_root/annotations/<split>.json`` and images in
``data_root/<split>/``). The input is ``crop_size`` (square); random crops cover
``scale_range[0]`` to 1 of each side (SSD: 0.3); the loss is
:func:`~operad.experiments.detection.loss.multibox_loss`; validation reports
PASCAL mAP@0.5 (all-point), VOC 2007 11-point mAP@0.5 and COCO-style
mAP@[.5:.95], and plots predicted boxes on a few val frames. Before every
evaluation the batch-norm statistics are recomputed on unaugmented train frames
(:func:`recalibrate_bn`).

>>> is_detection_config({"task": "detection", "model": "ssdlite_mobilenetv2"})
True
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..config import Config, ConfigError, expand_runs, load_config
from ..data import DataError
from .augment import MEAN, STD, DetectionBatches
from .boxes import decode
from .loss import multibox_loss
from .match import match_batch
from .metrics import coco_map, mean_ap
from .nms import batched_nms

__all__ = ["is_detection_config", "is_detection_run", "load_detection_data", "build_detector", "postprocess",
           "recalibrate_bn", "evaluate_detector", "train_detection", "train_detection_run", "eval_detection",
           "plot_detections"]


def is_detection_config(source) -> bool:
    """Whether a config (path, bundled name or dict) has ``task = "detection"`` (top level or any run)."""
    raw = load_config(source)
    return raw.get("task") == "detection" or any(r.get("task") == "detection" for r in raw.get("runs", []) or [])


def is_detection_run(run: str) -> bool:
    path = os.path.join(run, "final.pt") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        return False
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return ck.get("task") == "detection"


def load_detection_data(cfg: Config, split: str, classes: Optional[Sequence[str]] = None, subset: int = 0):
    """The detection set of ``cfg.dataset`` (``voc`` or ``coco``) at ``cfg.data_root``."""
    if not cfg.data_root:
        raise ConfigError(f"run {cfg.name}: a detection config needs data_root (e.g. the folder "
                          "`operad derive-boxes` writes)")
    if cfg.dataset == "voc":
        from .voc import VOCDetection
        return VOCDetection(cfg.data_root, split, classes, subset or None)
    if cfg.dataset == "coco":
        from .coco import COCODetection
        return COCODetection(os.path.join(cfg.data_root, "annotations", f"{split}.json"),
                             os.path.join(cfg.data_root, split), subset or None)
    raise ConfigError(f"run {cfg.name}: dataset {cfg.dataset!r} is not a detection layout; use 'voc' or 'coco'")


def build_detector(cfg: Config, num_classes: int) -> nn.Module:
    from operad.models import create_model
    from operad.models.ssdlite import default_boxes
    model = create_model(cfg.model, num_classes=num_classes, **cfg.model_args)
    size = _size(cfg)
    model.register_buffer("priors", default_boxes(model.term, size, model.in_type), persistent=False)
    return model


def _size(cfg: Config):
    if len(cfg.crop_size) == 0:
        return (320, 320)
    return tuple(cfg.crop_size) if len(cfg.crop_size) == 2 else (cfg.crop_size[0],) * 2


@torch.no_grad()
def postprocess(pred: torch.Tensor, priors: torch.Tensor, score_threshold: float = 0.01, iou_threshold: float = 0.45,
                top_k: int = 200, max_det: int = 100) -> List[Dict]:
    """Per image ``{"boxes" ([0, 1] xyxy), "scores", "labels" (1..C)}``: softmax scores, per-class
    top ``top_k`` above ``score_threshold``, class-wise NMS, the best ``max_det``."""
    out = []
    boxes_all = decode(pred[:, :4].transpose(1, 2).float(), priors)
    probs = pred[:, 4:].float().softmax(1)
    for b in range(pred.shape[0]):
        bs, ss, ls = [], [], []
        for c in range(1, probs.shape[1]):
            s = probs[b, c]
            keep = (s > score_threshold).nonzero().flatten()
            if keep.numel() > top_k:
                keep = keep[s[keep].topk(top_k).indices]
            bs.append(boxes_all[b, keep])
            ss.append(s[keep])
            ls.append(torch.full((keep.numel(),), c, dtype=torch.long, device=pred.device))
        boxes, scores, labels = torch.cat(bs).clamp(0, 1), torch.cat(ss), torch.cat(ls)
        keep = batched_nms(boxes, scores, labels, iou_threshold)[:max_det]
        out.append({"boxes": boxes[keep].cpu(), "scores": scores[keep].cpu(), "labels": labels[keep].cpu()})
    return out


@torch.no_grad()
def evaluate_detector(model: nn.Module, batches: DetectionBatches, num_classes: int) -> Dict[str, Any]:
    """Loss and mAPs of a detector on a batch stream (boxes in [0, 1] units)."""
    model.eval()
    dets, gts, loss, n = [], [], 0.0, 0
    for x, targets in batches:
        pred = model(x)
        loc_t, labels = match_batch(targets, model.priors)
        loss += multibox_loss(pred, loc_t, labels)[0].item() * x.shape[0]
        n += x.shape[0]
        dets += postprocess(pred, model.priors)
        gts += [{k: v.cpu() for k, v in t.items()} for t in targets]
    voc = mean_ap(dets, gts, num_classes, 0.5, "all")
    voc07 = mean_ap(dets, gts, num_classes, 0.5, "11point")
    coco = coco_map(dets, gts, num_classes)
    return {"loss": loss / max(n, 1), "map50": voc["map"], "ap50": voc["ap"], "map50_11point": voc07["map"],
            "coco_map": coco["map"], "coco_map50": coco["map50"], "coco_map75": coco["map75"],
            "images": n, "_dets": dets, "_gts": gts}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, max_images: int = 400) -> int:
    """Recompute every batch norm's running statistics as the plain average over up to ``max_images``
    images (precise BN): after a short from-scratch run the exponential averages lag the weights,
    and eval-mode outputs drift far from train-mode ones. Returns the images used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    n = 0
    for x, _ in batches:
        model(x)
        n += x.shape[0]
        if n >= max_images:
            break
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
    return n


def _lr(cfg: Config, step: int, total: int, steps_per_epoch: int) -> float:
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (cfg.warmup_start + (1 - cfg.warmup_start) * step / max(warm, 1))
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - warm) / max(total - warm, 1)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas))
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def _fit_epoch(cfg: Config, model: nn.Module, opt, batches: DetectionBatches, step: int, total: int, epoch: int,
               log, t0: float) -> int:
    """One epoch of multibox-loss steps; returns the step count."""
    model.train()
    for x, targets in batches:
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, total, len(batches))
        loc_t, labels = match_batch(targets, model.priors)
        loss, loc, conf = multibox_loss(model(x), loc_t, labels)
        if not torch.isfinite(loss):
            raise RuntimeError(f"run {cfg.name}: loss is {loss.item()} at step {step}; lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
        step += 1
        if step % max(cfg.log_every, 1) == 0:
            rec = {"step": step, "epoch": epoch, "loss": loss.item(), "loc": loc.item(), "conf": conf.item(),
                   "lr": opt.param_groups[0]["lr"], "time_s": time.time() - t0}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(f"[{cfg.name}] step {step}/{total} loss {loss.item():.3f} (loc {loc.item():.3f}, "
                  f"conf {conf.item():.3f})", flush=True)
    return step


def train_detection_run(cfg: Config, overwrite: bool = False) -> Dict[str, Any]:
    """Train one detection run; writes ``final.pt``, ``summary.json``, ``log.jsonl`` and
    ``boxes-val.png`` under ``<out_dir>/<name>/`` and returns the summary."""
    if cfg.schedule not in ("cosine", "constant"):
        raise ConfigError(f"run {cfg.name}: detection runs use schedule 'cosine' or 'constant'; got {cfg.schedule!r}")
    run_dir = os.path.join(cfg.out_dir, cfg.name)
    if os.path.exists(os.path.join(run_dir, "final.pt")) and not overwrite:
        raise ConfigError(f"{run_dir} already holds a finished run; pass --overwrite to start again")
    threads = torch.get_num_threads()
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        train_ds = load_detection_data(cfg, "train", subset=cfg.subset)
        val_ds = load_detection_data(cfg, "val", train_ds.classes, cfg.val_subset)
        classes = list(train_ds.classes)
        model = build_detector(cfg, len(classes)).to(device)
        size = _size(cfg)
        tr = DetectionBatches(train_ds, cfg.batch_size, size, device, train=True, flip=cfg.flip, seed=cfg.seed,
                              min_scale=cfg.scale_range[0])  # the crop scale; scale_range = [1, 1]: no crops
        va = DetectionBatches(val_ds, cfg.eval_batch_size, size, device)
        calib = DetectionBatches(train_ds, cfg.eval_batch_size, size, device)  # train frames, not augmented
        opt = _optimizer(cfg, model)
        os.makedirs(run_dir, exist_ok=True)
        total, step, t0, history = cfg.epochs * len(tr), 0, time.time(), []
        with open(os.path.join(run_dir, "log.jsonl"), "w") as log:
            for epoch in range(cfg.epochs):
                step = _fit_epoch(cfg, model, opt, tr, step, total, epoch, log, t0)
                if (epoch + 1) % max(cfg.eval_every, 1) == 0 and epoch + 1 < cfg.epochs:
                    recalibrate_bn(model, calib)
                    r = evaluate_detector(model, va, len(classes))
                    history.append({"epoch": epoch + 1, "val_map50": r["map50"], "val_loss": r["loss"]})
                    log.write(json.dumps(history[-1]) + "\n")
                    print(f"[{cfg.name}] epoch {epoch + 1}: val mAP@0.5 {r['map50']:.4f}", flush=True)
        train_s = time.time() - t0
        recalibrate_bn(model, calib)
        r = evaluate_detector(model, va, len(classes))
        torch.save({"task": "detection", "model": model.state_dict(), "config": cfg.to_dict(), "classes": classes},
                   os.path.join(run_dir, "final.pt"))
        png = plot_detections(va, r["_dets"], classes, os.path.join(run_dir, "boxes-val.png"))
        import operad
        c = operad.cost(model, size=size)
        summary = {"name": cfg.name, "experiment": cfg.experiment, "claim": cfg.claim, "task": "detection",
                   "model": cfg.model, "dataset": cfg.dataset, "data_root": cfg.data_root, "classes": classes,
                   "input_size": list(size), "epochs": cfg.epochs, "steps": step, "train_images": len(train_ds),
                   "val_images": len(val_ds), "params": int(c.params), "macs": int(c.macs), "train_time_s": train_s,
                   "threads": torch.get_num_threads(), "device": str(device), "history": history,
                   "val": {k: v for k, v in r.items() if not k.startswith("_")}, "boxes_png": png,
                   "config": cfg.to_dict()}
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"[{cfg.name}] val mAP@0.5 {r['map50']:.4f} (11-point {r['map50_11point']:.4f}), "
              f"COCO mAP {r['coco_map']:.4f}; wrote {run_dir}", flush=True)
        return summary
    finally:
        torch.set_num_threads(threads)


def train_detection(config, overrides: Sequence[str] = (), overwrite: bool = False, profile: Optional[str] = None,
                    only: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Train every run of a detection config (path, bundled name or dict)."""
    from ..config import parse_overrides
    raw = load_config(config)
    runs = expand_runs(raw, parse_overrides(list(overrides)), profile, only)
    return [train_detection_run(c, overwrite) for c in runs]


def eval_detection(run: str, data_root: Optional[str] = None, split: str = "val", subset: int = 0,
                   batch_size: int = 8, device: str = "cpu", out: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate a finished detection run: writes ``eval-<split>.json`` and ``boxes-<split>.png``."""
    path = os.path.join(run, "final.pt") if os.path.isdir(run) else run
    ck = torch.load(path, map_location="cpu", weights_only=True)
    cfg = Config.from_dict(ck["config"])
    if data_root:
        cfg = Config.from_dict({**ck["config"], "data_root": data_root})
    classes = ck["classes"]
    model = build_detector(cfg, len(classes))
    model.load_state_dict(ck["model"])
    model.to(device)
    ds = load_detection_data(cfg, split, classes, subset)
    r = evaluate_detector(model, DetectionBatches(ds, batch_size, _size(cfg), device), len(classes))
    out = out or (run if os.path.isdir(run) else os.path.dirname(run))
    os.makedirs(out, exist_ok=True)
    res = {k: v for k, v in r.items() if not k.startswith("_")}
    res.update({"split": split, "classes": classes})
    with open(os.path.join(out, f"eval-{split}.json"), "w") as f:
        json.dump(res, f, indent=2)
    res["png"] = plot_detections(DetectionBatches(ds, batch_size, _size(cfg)), r["_dets"], classes,
                                 os.path.join(out, f"boxes-{split}.png"))
    return res


def plot_detections(batches: DetectionBatches, dets: Sequence[Dict], classes: Sequence[str], path: str,
                    n: int = 4, min_score: float = 0.3) -> str:
    """A PNG of ``n`` val frames with ground truth (dashed white) and predictions above ``min_score``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    idx = list(range(0, len(batches.items), max(1, len(batches.items) // n)))[:n]
    fig, axes = plt.subplots(1, len(idx), figsize=(4.5 * len(idx), 3.6), squeeze=False)
    colours = plt.cm.tab10.colors
    for ax, i in zip(axes[0], idx):
        img, tgt = batches.items[i]
        h, w = img.shape[-2:]
        ax.imshow(img.permute(1, 2, 0).numpy())
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        for b in tgt["boxes"]:
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="white", ls="--", lw=1))
        d = dets[i]
        for b, s, l in zip(d["boxes"] * scale, d["scores"], d["labels"]):
            if s < min_score:
                continue
            c = colours[int(l) % len(colours)]
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec=c, lw=1.5))
            ax.text(b[0], b[1], f"{classes[int(l) - 1]} {float(s):.2f}", color="white", fontsize=6,
                    bbox=dict(fc=c, ec="none", pad=0.5))
        ax.set_axis_off()
    fig.suptitle(f"predicted boxes (score >= {min_score}); ground truth dashed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
