"""Evaluation: accuracy / mIoU with a confusion matrix on the device, and
robustness sweeps (JPEG quality, shift consistency, rotation angle), each
writing numbers (JSON) and a plot. Each sweep also measures, per corruption
level, the KID between the clean and the corrupted set in the network's own
feature space (the input of its classifier, :mod:`operad.experiments.kid`;
``kid=None`` skips it), and with ``inception`` (an
:class:`~operad.experiments.fidelity.InceptionMetrics`) FID and KID in
Inception space.

    >>> import torch, numpy as np
    >>> from operad.experiments.data import ArrayData
    >>> from operad.experiments.augment import DeviceBatches
    >>> d = ArrayData("t", "test", np.zeros((6, 8, 8, 3), np.uint8), np.array([0, 1, 2, 0, 1, 2]), ["a", "b", "c"])
    >>> m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))
    >>> r = evaluate(m, DeviceBatches(d, 4))
    >>> sorted(r)[:4]
    ['confusion_matrix', 'count', 'loss', 'per_class_accuracy']
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operad.experiments.augment import DeviceBatches, rotate_batch
from operad.experiments.data import ArrayData
from operad.experiments.kid import KidSettings, kid as kid_distance, penultimate_features
from operad.experiments.metrics import ConfusionMatrix, topk_correct

__all__ = ["evaluate", "predict_batches", "jpeg_recode", "jpeg_sweep", "shift_consistency", "rotation_sweep",
           "JPEG_QUALITIES", "CIFAR_C_QUALITIES", "shift_batch", "corrupted_uint8", "sweep_table"]

CIFAR_C_QUALITIES = (80, 65, 58, 50, 40)  # CIFAR-10-C JPEG severities 1..5
JPEG_QUALITIES = (75,) + CIFAR_C_QUALITIES  # 75: the clean reference of the shared JPEG data


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, batches: DeviceBatches, amp_dtype: Optional[torch.dtype] = None,
             transform=None) -> Dict[str, object]:
    """Loss, top-1/top-5 (classification) or mIoU and pixel accuracy
    (segmentation), per-class accuracy and the confusion matrix, accumulated
    on the device and summed over data-parallel ranks. ``transform`` maps an
    input batch before the model (e.g. a rotation)."""
    data = batches.data
    was = model.training
    model.eval()
    dev = batches.device
    cm = ConfusionMatrix(data.num_classes, data.ignore_index, dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    count = torch.zeros((), dtype=torch.float64, device=dev)
    topk = torch.zeros(2, dtype=torch.float64, device=dev)
    seg = data.task == "segmentation"
    for xb, yb in batches.epoch(0):
        if transform is not None:
            xb = transform(xb)
        with _autocast(dev, amp_dtype):
            out = model(xb)
        out = out.float()
        if seg:
            if out.shape[-2:] != yb.shape[-2:]:
                out = F.interpolate(out, size=yb.shape[-2:], mode="bilinear", align_corners=False)
            loss_sum += F.cross_entropy(out, yb, ignore_index=data.ignore_index, reduction="sum")
            count += (yb != data.ignore_index).sum()
        else:
            loss_sum += F.cross_entropy(out, yb, reduction="sum")
            count += yb.shape[0]
            topk += topk_correct(out, yb, (1, 5))
        cm.update(out.argmax(1), yb)
    d = _dist()
    if d is not None:
        for t in (loss_sum, count, topk, cm.matrix):
            d.all_reduce(t)
    model.train(was)
    n = max(count.item(), 1.0)
    res: Dict[str, object] = {"loss": loss_sum.item() / n, "count": int(count.item())}
    if seg:
        res.update(mean_iou=cm.mean_iou(), pixel_accuracy=cm.pixel_accuracy(), iou=dict(zip(data.classes, cm.iou())))
    else:
        t = (topk / n).tolist()
        res.update(top1=t[0], top5=t[1])
    res["per_class_accuracy"] = dict(zip(data.classes, cm.per_class_accuracy()))
    res["confusion_matrix"] = cm.matrix.cpu().tolist()
    return res


@torch.no_grad()
def predict_batches(model: nn.Module, batches: DeviceBatches, transform=None,
                    amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Arg-max predictions for every sample (in order), after ``transform``."""
    model.eval()
    out = []
    for xb, _ in batches.epoch(0):
        if transform is not None:
            xb = transform(xb)
        with _autocast(batches.device, amp_dtype):
            out.append(model(xb).float().argmax(1))
    return torch.cat(out)



# ----------------------------------------------------------------------------- distances per corruption level

def corrupted_uint8(batches: DeviceBatches, transform=None) -> np.ndarray:
    """The images after ``transform`` (applied to normalised batches, as the sweeps
    apply it) back in uint8 (N, H, W, 3): what a corruption shows an outside
    feature extractor."""
    out = []
    for xb, _ in batches.epoch(0):
        if transform is not None:
            xb = transform(xb)
        out.append((xb * batches.std + batches.mean).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
    return torch.cat(out).numpy()


class _Distances:
    """KID (network features) and Inception FID/KID of each corruption level against the clean set."""

    def __init__(self, model: nn.Module, batches: DeviceBatches, kid: Optional[KidSettings], inception=None):
        self.model, self.kid, self.inception = model, kid, inception
        self.clean = penultimate_features(model, batches) if kid is not None else None
        self.clean_uint8 = batches.data.images if inception is not None else None
        self.res: Dict[str, dict] = {"kid": {}, "inception": {}}

    def level(self, key: str, batches: DeviceBatches, transform=None) -> None:
        if self.kid is not None:
            f = penultimate_features(self.model, batches, transform)
            r = kid_distance(self.clean, f, self.kid.subsets, self.kid.subset_size, self.kid.seed)
            self.res["kid"][key] = {"mean": r["mean"], "std": r["std"]}
            self.res["kid_settings"] = dict(self.kid.as_dict(), subset_size=r["subset_size"], dim=int(f.shape[1]),
                                            features="input of the classifier layer, spatially averaged")
        if self.inception is not None:
            self.res["inception"][key] = self.inception.measure(self.clean_uint8, corrupted_uint8(batches, transform))

    def into(self, res: Dict[str, object]) -> Dict[str, object]:
        """``res`` with ``kid`` / ``kid_settings`` / ``inception`` entries for what was measured."""
        return dict(res, **{k: v for k, v in self.res.items() if v})

    def series(self, label: str, xs: Sequence, keys: Sequence[str]):
        """``{label: (xs, means, stds)}`` for :func:`~operad.experiments.plots.plot_sweep`, or None."""
        if not self.res["kid"]:
            return None
        return {label: (list(xs), [self.res["kid"][k]["mean"] for k in keys],
                        [self.res["kid"][k]["std"] for k in keys])}


def jpeg_recode(images: np.ndarray, quality: int, threads: Optional[int] = None) -> np.ndarray:
    """Re-encode every image (uint8 N,H,W,3) as JPEG at ``quality`` with PIL
    (standard tables, 4:2:0 as PIL's default) and decode it again.

    >>> jpeg_recode(np.full((2, 8, 8, 3), 128, np.uint8), 50).shape
    (2, 8, 8, 3)
    """
    from PIL import Image

    out = np.empty_like(images)

    def work(i: int) -> None:
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))

    with ThreadPoolExecutor(threads or min(8, 2 * (os.cpu_count() or 1))) as ex:
        list(ex.map(work, range(len(images))))
    return out


def _write(out_dir: Optional[str], name: str, result: dict) -> None:
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(result, f, indent=2)


def jpeg_sweep(model: nn.Module, data: ArrayData, device="cpu", batch_size: int = 256,
               qualities: Sequence[int] = JPEG_QUALITIES, out_dir: Optional[str] = None,
               label: str = "model", kid: Optional[KidSettings] = KidSettings(),
               inception=None) -> Dict[str, object]:
    """Top-1 accuracy on the data as stored and after JPEG re-encoding at each
    quality; ``mean_corrupted`` averages the CIFAR-10-C severities (80, 65,
    58, 50, 40); ``clean`` is quality 75 (the shared data's own quality).
    ``kid``: per quality, the KID between the stored and the re-encoded set in
    the network's features. Writes ``jpeg.json`` and ``jpeg.png`` into ``out_dir``."""
    base = DeviceBatches(data, batch_size, device)
    stored = evaluate(model, base)["top1"]
    dist = _Distances(model, base, kid, inception)
    acc = {}
    for q in qualities:
        d = ArrayData(data.name, data.split, jpeg_recode(data.images, q), data.labels, data.classes, data.task,
                      data.ignore_index, data.mean, data.std, data.source)
        batches = DeviceBatches(d, batch_size, device)
        acc[int(q)] = evaluate(model, batches)["top1"]
        dist.level(str(int(q)), batches)
    sev = [acc[q] for q in CIFAR_C_QUALITIES if q in acc]
    res = dist.into({"stored": stored, "quality": {str(k): v for k, v in acc.items()},
                     "clean": acc.get(75), "mean_corrupted": float(np.mean(sev)) if sev else None,
                     "count": len(data)})
    if out_dir:
        _write(out_dir, "jpeg", res)
        from operad.experiments.plots import plot_sweep

        qs = sorted(acc, reverse=True)
        plot_sweep({label: (qs, [acc[q] for q in qs])}, os.path.join(out_dir, "jpeg.png"), "JPEG quality",
                   "top-1 accuracy", f"JPEG robustness (mean over CIFAR-10-C severities: {res['mean_corrupted']:.4f})"
                   if sev else "JPEG robustness", kid=dist.series(label, qs, [str(q) for q in qs]))
    return res


_PAD = {"zeros": "constant", "reflect": "reflect", "circular": "circular"}


def shift_batch(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mode: str = "zeros") -> torch.Tensor:
    """Move image ``i`` by ``(dy[i], dx[i])`` pixels (down, right); vacated
    pixels per ``mode``: ``zeros``, ``reflect`` or ``circular``.

    >>> shift_batch(torch.arange(4.).view(1, 1, 1, 4), torch.tensor([0]), torch.tensor([1])).tolist()
    [[[[0.0, 0.0, 1.0, 2.0]]]]
    """
    if mode not in _PAD:
        raise ValueError(f"shift mode {mode!r} is not one of {', '.join(_PAD)}")
    B, C, H, W = x.shape
    dy, dx = torch.as_tensor(dy, device=x.device), torch.as_tensor(dx, device=x.device)
    p = int(max(dy.abs().max().item(), dx.abs().max().item(), 0))
    if p == 0:
        return x
    xp = F.pad(x, (p, p, p, p), mode=_PAD[mode])
    rows = (p - dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None].expand(B, C, H, W + 2 * p)
    x = torch.gather(xp, 2, rows)
    cols = (p - dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :].expand(B, C, H, W)
    return torch.gather(x, 3, cols)


@torch.no_grad()
def shift_consistency(model: nn.Module, data: ArrayData, device="cpu", batch_size: int = 256, max_shift: int = 4,
                      mode: str = "zeros", seed: int = 0, out_dir: Optional[str] = None,
                      label: str = "model", kid: Optional[KidSettings] = KidSettings(),
                      inception=None) -> Dict[str, object]:
    """How often the prediction stays the same when the input moves.

    ``consistency``: agreement between two independent random shifts in
    ``[-max_shift, max_shift]^2`` of each image (Zhang, 2019). ``by_shift``:
    agreement with the unshifted prediction and accuracy, for diagonal shifts
    of 0..max_shift pixels. ``mode``: how vacated pixels are filled
    (``zeros`` = the mean colour after normalisation, ``reflect``, ``circular``).
    ``kid``: per diagonal shift, the KID between the unshifted and the shifted
    set in the network's features. Writes ``shift.json`` and ``shift.png`` into ``out_dir``."""
    batches = DeviceBatches(data, batch_size, device)
    labels = torch.as_tensor(data.labels, device=batches.device)
    base = predict_batches(model, batches)
    g = torch.Generator().manual_seed(seed)
    n = len(data)
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 4), generator=g)
    agree = torch.zeros((), device=batches.device)
    idx = 0
    model.eval()
    for xb, _ in batches.epoch(0):
        b = xb.shape[0]
        sh = shifts[idx:idx + b].to(batches.device)
        preds = [model(shift_batch(xb, sh[:, k], sh[:, k + 1], mode)).argmax(1) for k in (0, 2)]
        agree += (preds[0] == preds[1]).sum()
        idx += b
    by = {}
    dist = _Distances(model, batches, kid, inception)
    for d in range(max_shift + 1):
        move = (lambda x, d=d: shift_batch(x, torch.full((x.shape[0],), d), torch.full((x.shape[0],), d), mode))
        p = predict_batches(model, batches, transform=move)
        by[d] = {"agreement": (p == base).float().mean().item(), "accuracy": (p == labels).float().mean().item()}
        dist.level(str(d), batches, move)
    res = dist.into({"consistency": agree.item() / n, "max_shift": max_shift, "mode": mode, "count": n,
                     "accuracy": (base == labels).float().mean().item(),
                     "by_shift": {str(k): v for k, v in by.items()}})
    if out_dir:
        _write(out_dir, "shift", res)
        from operad.experiments.plots import plot_sweep

        ds = list(by)
        plot_sweep({f"{label}: agreement with unshifted": (ds, [by[d]["agreement"] for d in ds]),
                    f"{label}: accuracy": (ds, [by[d]["accuracy"] for d in ds])},
                   os.path.join(out_dir, "shift.png"), "diagonal shift (pixels)", "fraction",
                   f"shift consistency (random pairs): {res['consistency']:.4f}",
                   kid=dist.series(label, ds, [str(d) for d in ds]), xticks=ds)
    return res


@torch.no_grad()
def rotation_sweep(model: nn.Module, data: ArrayData, device="cpu", batch_size: int = 256,
                   angles: Sequence[float] = (0, 15, 30, 45, 60, 90, 135, 180), out_dir: Optional[str] = None,
                   label: str = "model", kid: Optional[KidSettings] = KidSettings(),
                   inception=None) -> Dict[str, object]:
    """Accuracy (or mIoU, for segmentation inputs only rotated) against the
    rotation angle of the test images (bilinear, zero outside the image).
    ``kid`` (classification): per angle, the KID between the upright and the
    rotated set in the network's features. Writes ``rotation.json`` and
    ``rotation.png`` into ``out_dir``."""
    batches = DeviceBatches(data, batch_size, device)
    key = "top1" if data.task == "classification" else "mean_iou"
    dist = _Distances(model, batches, kid if key == "top1" else None, inception if key == "top1" else None)
    acc = {}
    for a in angles:
        turn = None if a == 0 else (lambda x, a=a: rotate_batch(x, float(a)))
        acc[float(a)] = evaluate(model, batches, transform=turn)[key]
        dist.level(f"{float(a):g}", batches, turn)
    res = dist.into({"metric": key, "angle": {f"{k:g}": v for k, v in acc.items()},
                     "mean": float(np.mean(list(acc.values()))), "count": len(data)})
    if out_dir:
        _write(out_dir, "rotation", res)
        from operad.experiments.plots import plot_sweep

        plot_sweep({label: (list(acc), list(acc.values()))}, os.path.join(out_dir, "rotation.png"),
                   "rotation angle (degrees)", key, f"accuracy vs rotation (mean {res['mean']:.4f})",
                   kid=dist.series(label, list(acc), [f"{a:g}" for a in acc]))
    return res


def sweep_table(kind: str, res: Dict[str, object]) -> str:
    """A sweep's result (``kind``: ``jpeg``, ``shift`` or ``rotation``) as a Markdown
    table: level, accuracy, and the KID (mean +- std) of each level against the
    clean set, plus Inception FID/KID where measured.

    >>> print(sweep_table("rotation", {"metric": "top1", "angle": {"0": 0.9, "90": 0.5},
    ...                                "kid": {"0": {"mean": 0.0, "std": 0.001}, "90": {"mean": 0.25, "std": 0.01}}}))
    | rotation (deg) | top1 | KID (network features) |
    |---|---|---|
    | 0 | 0.9000 | 0.0000 +- 0.0010 |
    | 90 | 0.5000 | 0.2500 +- 0.0100 |
    """
    if kind == "jpeg":
        head, acc = "JPEG quality", dict(res["quality"])
        metric = "top1"
    elif kind == "shift":
        head, acc = "diagonal shift (px)", {k: v["accuracy"] for k, v in res["by_shift"].items()}
        metric = "top1"
    else:
        head, acc, metric = "rotation (deg)", dict(res["angle"]), res.get("metric", "top1")
    kid, inc = res.get("kid") or {}, res.get("inception") or {}
    cols = [head, metric] + (["KID (network features)"] if kid else []) + (["FID (Inception)", "KID (Inception)"]
                                                                          if inc else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for k, a in acc.items():
        row = [k, f"{a:.4f}"]
        if kid:
            row.append(f"{kid[k]['mean']:.4f} +- {kid[k]['std']:.4f}" if k in kid else "")
        if inc:
            i = inc.get(k)
            row += [f"{i['fid']:.2f}", f"{i['kid_mean']:.4f} +- {i['kid_std']:.4f}"] if i else ["", ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
