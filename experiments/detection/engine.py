"""Training and evaluation of detection configs (``task = "detection"``).

``operad train <config>`` hands a config whose ``task`` is ``"detection"`` to
:func:`train_detection`; ``operad eval <run>`` hands a run whose checkpoint says
``task: detection`` to :func:`eval_detection`. Data sets: ``dataset = "voc"``
(``data_root`` in the VOC layout, e.g. the box set ``operad derive-boxes``
writes) or ``"coco"`` (``data_root/annotations/<split>.json`` and images in
``data_root/<split>/``). The input is ``crop_size`` ``[height, width]`` (default
320x320), the default boxes' scales ``box_scales`` (default 0.2 to 0.95); random
crops cover ``scale_range[0]`` to 1 of each side (SSD: 0.3); the loss is
:func:`~operad.experiments.detection.loss.multibox_loss`; validation reports
PASCAL mAP@0.5 (all-point), VOC 2007 11-point mAP@0.5 and COCO-style
mAP@[.5:.95], and plots predicted boxes on a few val frames. Before every
evaluation the batch-norm statistics are recomputed on unaugmented train frames
(:func:`recalibrate_bn`).

Training runs the classification engine's stages (:mod:`operad.experiments.train`:
run directory, optimiser and LR schedule, EMA, checkpoints, ``--resume`` with the
keys it may change, NaN/inf stops, progress bar, ``metrics.jsonl`` and
``curves.png``) with a loop whose step is the multibox loss and whose evaluation
is mAP (of the EMA weights too, when ``ema`` is set; they are the ones reported
and used by ``operad eval``). Each run records the share of ground-truth boxes
that some default box overlaps with IoU >= 0.5 (``box_coverage``) and the mAP of
a detector that sees no pixels (:mod:`~operad.experiments.detection.baseline`).

>>> is_detection_config({"task": "detection", "model": "ssdlite_mobilenetv2"})
True
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..config import Config, ConfigError, expand_runs, load_config
from ..run_dir import check_run_name
from ..train import (_METRICS, _Data, _Log, _Loop, _open_run_dir, _Optimisation, _restore, _setup_process,
                     _wrap, _write_record, load_checkpoint, save_checkpoint)
from .augment import DetectionBatches
from .baseline import prior_box_map
from .boxes import decode
from .loss import multibox_loss
from .match import match_batch, prior_coverage
from .metrics import coco_map, mean_ap
from .nms import batched_nms
from .plot import plot_detections

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
    s_min, s_max = cfg.box_scales or (0.2, 0.95)
    model.register_buffer("priors", default_boxes(model.term, size, model.in_type, s_min, s_max), persistent=False)
    return model


def box_coverage(batches: DetectionBatches, priors: torch.Tensor, threshold: float = 0.5) -> float:
    """:func:`~operad.experiments.detection.match.prior_coverage` of a set's (unaugmented) boxes."""
    return prior_coverage([t["boxes"] for t in batches.targets()], priors.cpu(), threshold)


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


class _DetectionLoop(_Loop):
    """The classification engine's loop (:class:`~operad.experiments.train._Loop`: epochs, the LR
    schedule, EMA, logging windows, NaN/inf stops, checkpoints that resume bit for bit, the
    progress bar) with the multibox loss as its step and mAP as its evaluation. Every evaluation
    first recalibrates the batch norms (of the EMA weights too) on unaugmented train frames."""

    best_key = "map50"
    window_terms = ("loc", "conf")

    def __init__(self, *args, calib: DetectionBatches, num_classes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.calib, self.num_classes = calib, num_classes

    def train_step(self, x: torch.Tensor, targets: List[Dict]) -> None:
        loc_t, labels = match_batch(targets, self.model.priors)
        with self.optim.autocast():
            pred = self.net(x)
        loss, loc, conf = multibox_loss(pred, loc_t, labels)
        self.optimizer_step(loss, images=x.shape[0])
        self.window.extra["loc"] += loc.detach()
        self.window.extra["conf"] += conf.detach()

    def evaluate(self) -> tuple:
        """``(log record, full result)`` of the weights and, when kept, the EMA (``ema_*``, ``result["ema"]``)."""
        rec, full = {}, {}
        models = [("", self.model)] + ([("ema_", self.optim.ema.module)] if self.optim.ema is not None else [])
        for prefix, m in models:
            recalibrate_bn(m, self.calib)
            r = evaluate_detector(m, self.data.val_batches, self.num_classes)
            rec.update({prefix + k: r[k] for k in _METRICS if k in r})
            if prefix:
                full["ema"] = r
            else:
                full.update(r)
        return rec, full

    def evaluate_epoch(self, ep_done: float) -> None:
        if self.step < self.data.total:  # the last evaluation is the final one (:func:`_finish_detection`)
            super().evaluate_epoch(ep_done)


def _detection_data(cfg: Config, proc) -> tuple:
    """The train and val sets, their batch streams (train: augmented, seeded by ``(seed, step)``;
    val and BN calibration: unaugmented) and the step counts: ``(_Data, calibration batches)``."""
    train_ds = load_detection_data(cfg, "train", subset=cfg.subset)
    val_ds = load_detection_data(cfg, "val", train_ds.classes, cfg.val_subset)
    size = _size(cfg)
    tr = DetectionBatches(train_ds, cfg.batch_size, size, proc.device, train=True, flip=cfg.flip, seed=cfg.seed,
                          min_scale=cfg.scale_range[0])  # the crop scale; scale_range = [1, 1]: no crops
    va = DetectionBatches(val_ds, cfg.eval_batch_size, size, proc.device)
    if len(tr) == 0:
        raise ConfigError(f"run {cfg.name}: batch_size {cfg.batch_size} exceeds the {len(train_ds)} training frames")
    total = cfg.max_steps or cfg.epochs * len(tr)
    data = _Data(train_ds, val_ds, False, False, tr, va, len(tr), total)
    return data, DetectionBatches(train_ds, cfg.eval_batch_size, size, proc.device)


def train_detection_run(cfg: Config, resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
    """Train one detection run with the classification engine's stages (run directory, optimiser,
    schedule, EMA, checkpoints, ``--resume``); writes ``final.pt``, ``summary.json``, ``metrics.jsonl``,
    ``curves.png`` and ``boxes-val.png`` under ``<out_dir>/<name>/`` and returns the summary."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"run {cfg.name}: detection runs are one process; launch without torchrun")
    threads = torch.get_num_threads()
    try:
        proc = _setup_process(cfg)
        opened = _open_run_dir(cfg, proc, resume, overwrite)
        data, calib = _detection_data(cfg, proc)
        classes = list(data.train.classes)
        model = build_detector(cfg, len(classes)).to(proc.device)
        cover = {k: box_coverage(b, model.priors) for k, b in (("train", data.batches), ("val", data.val_batches))}
        print(f"[{cfg.name}] {model.priors.shape[0]} default boxes; ground-truth boxes with a default box of "
              f"IoU >= 0.5: train {cover['train']:.1%}, val {cover['val']:.1%}", flush=True)
        optim = _Optimisation(cfg, model, data, proc.device)
        log = _Log(opened.run.file("metrics.jsonl"))
        n_params = sum(p.numel() for p in model.parameters())
        start = _restore(cfg, proc, opened, data, model, optim, log)
        _write_record(cfg, proc, opened, n_params, start)
        loop = _DetectionLoop(cfg, proc, data, model, _wrap(cfg, proc, model), optim, log, opened.path, start,
                              calib=calib, num_classes=len(classes))
        loop.run()
        return _finish_detection(cfg, data, loop, classes, cover)
    finally:
        torch.set_num_threads(threads)


def _finish_detection(cfg: Config, data: _Data, loop: _DetectionLoop, classes: List[str],
                      cover: Dict[str, float]) -> Dict[str, Any]:
    """The final evaluation (of the EMA when kept), ``final.pt`` (the recalibrated weights and EMA),
    the PNGs and ``summary.json``."""
    import operad
    from operad.experiments.plots import plot_run

    rec, full = loop.evaluate()
    rec.update(kind="eval", step=loop.step, epoch_f=round(loop.step / data.spe, 4))
    loop.log.write(rec)
    r = full.get("ema", full)
    ema = loop.optim.ema
    run_dir = loop.run_dir
    save_checkpoint(os.path.join(run_dir, "final.pt"),
                    {"task": "detection", "model": loop.model.state_dict(), "config": cfg.to_dict(),
                     "ema": ema.state_dict() if ema is not None else None, "classes": classes})
    png = plot_detections(data.val_batches, r["_dets"], classes, os.path.join(run_dir, "boxes-val.png"))
    plot_run(run_dir)
    size = _size(cfg)
    c = operad.cost(loop.model, size=size)
    val = lambda res: {k: v for k, v in res.items() if not k.startswith("_") and k != "ema"}  # noqa: E731
    prior = prior_box_map(data.batches.targets(), data.val_batches.targets(), len(classes))
    summary = {"name": cfg.name, "experiment": cfg.experiment, "claim": cfg.claim, "task": "detection",
               "model": cfg.model, "dataset": cfg.dataset, "data_root": cfg.data_root, "classes": classes,
               "input_size": list(size), "default_boxes": int(loop.model.priors.shape[0]), "box_coverage": cover,
               "epochs": round(loop.step / data.spe, 3), "steps": loop.step, "train_images": len(data.train),
               "val_images": len(data.val), "params": int(c.params), "macs": int(c.macs),
               "train_time_s": round(loop.train_time, 3), "threads": torch.get_num_threads(),
               "device": str(loop.proc.device), "best": loop.best, "ema": ema is not None, "val": val(r),
               "baseline": {"prior_box_map50": prior}, "boxes_png": png, "run_dir": run_dir,
               "config": cfg.to_dict()}
    if ema is not None:
        summary["val_weights"] = val(full)  # the raw weights beside the evaluated EMA
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"[{cfg.name}] val mAP@0.5 {r['map50']:.4f} (11-point {r['map50_11point']:.4f}), "
          f"COCO mAP {r['coco_map']:.4f}{' (EMA weights)' if ema is not None else ''}; the prior-box detector "
          f"(no pixels) {prior:.4f}; wrote {run_dir}", flush=True)
    return summary


def train_detection(config, overrides: Sequence[str] = (), resume: bool = False, overwrite: bool = False,
                    profile: Optional[str] = None, only: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Train every run of a detection config (path, bundled name or dict); ``resume``: continue
    each from its checkpoint as ``operad train --resume`` does for classification."""
    from ..config import parse_overrides
    raw = load_config(config)
    runs = expand_runs(raw, parse_overrides(list(overrides)), profile, only)
    for c in runs:
        check_run_name(c.name)
    return [train_detection_run(c, resume, overwrite) for c in runs]


def eval_detection(run: str, data_root: Optional[str] = None, split: str = "val", subset: int = 0,
                   batch_size: int = 8, device: str = "cpu", out: Optional[str] = None,
                   use_ema: bool = True) -> Dict[str, Any]:
    """Evaluate a finished detection run (its EMA weights when it kept them and ``use_ema``):
    writes ``eval-<split>.json`` and ``boxes-<split>.png``."""
    path = os.path.join(run, "final.pt") if os.path.isdir(run) else run
    ck = load_checkpoint(path)
    cfg = Config.from_dict(ck["config"])
    if data_root:
        cfg = Config.from_dict({**ck["config"], "data_root": data_root})
    classes = ck["classes"]
    model = build_detector(cfg, len(classes))
    weights = "ema" if use_ema and ck.get("ema") is not None else "model"
    model.load_state_dict(ck[weights])
    model.to(device)
    ds = load_detection_data(cfg, split, classes, subset)
    batches = DetectionBatches(ds, batch_size, _size(cfg), device)
    r = evaluate_detector(model, batches, len(classes))
    out = out or (run if os.path.isdir(run) else os.path.dirname(run))
    os.makedirs(out, exist_ok=True)
    res = {k: v for k, v in r.items() if not k.startswith("_")}
    res.update({"split": split, "classes": classes, "weights": weights})
    with open(os.path.join(out, f"eval-{split}.json"), "w") as f:
        json.dump(res, f, indent=2)
    res["png"] = plot_detections(batches, r["_dets"], classes, os.path.join(out, f"boxes-{split}.png"))
    return res
