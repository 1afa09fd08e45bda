"""Detection mAP: PASCAL VOC mAP@0.5 and COCO-style mAP@[.5:.95].

Detections of one class, over all images, are sorted by score. VOC rule: a
detection is a true positive when its best-overlapping ground-truth box of its
class and image has IoU >= the threshold and is not yet matched, else a false
positive (a duplicate). COCO rule: it takes the best-overlapping *unmatched*
box instead.
VOC "difficult" objects are neither: a detection matched to one is ignored,
and they do not count in the recall. AP is then the area under the
precision-recall curve:

- ``"all"``: all-point interpolation (VOC 2010 and later, the default here):
  the sum of ``(r_i - r_{i-1}) * max_{r >= r_i} p(r)``;
- ``"11point"``: VOC 2007's mean of the interpolated precision at recall 0, 0.1, .. 1;
- ``"coco"``: COCO's mean of the interpolated precision at 101 recall points.

mAP is the mean over classes with at least one (non-difficult) ground-truth
box. COCO-style mAP averages ``"coco"`` mAP over IoU 0.50, 0.55, .. 0.95 (no
area ranges, no crowd boxes, no 100-detection cap: detections are whatever the
caller passes).

>>> import torch
>>> gt = [{"boxes": torch.tensor([[0., 0, 10, 10]]), "labels": torch.tensor([1])}]
>>> det = [{"boxes": torch.tensor([[0., 0, 10, 10], [20., 20, 30, 30]]),
...         "scores": torch.tensor([0.9, 0.95]), "labels": torch.tensor([1, 1])}]
>>> round(mean_ap(det, gt, num_classes=1)["map"], 4)   # FP at 0.95, TP at 0.9: precision 1/2 at recall 1
0.5
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from .boxes import box_iou

__all__ = ["average_precision", "match_detections", "mean_ap", "coco_map"]


def average_precision(tp: torch.Tensor, n_gt: int, method: str = "all") -> float:
    """AP from a 0/1 ``tp`` vector of detections sorted by decreasing score."""
    if method not in ("all", "11point", "coco"):
        raise ValueError(f"AP method must be 'all', '11point' or 'coco'; got {method!r}")
    if n_gt == 0:
        return float("nan")
    tp = tp.double()
    ctp = tp.cumsum(0)
    recall = ctp / n_gt
    precision = ctp / torch.arange(1, len(tp) + 1, dtype=torch.float64)
    if method == "11point":
        pts = torch.linspace(0, 1, 11, dtype=torch.float64)
    elif method == "coco":
        pts = torch.linspace(0, 1, 101, dtype=torch.float64)
    if method in ("11point", "coco"):
        out = 0.0
        for r in pts:
            m = precision[recall >= r - 1e-12]
            out += m.max().item() if m.numel() else 0.0
        return out / len(pts)
    mrec = torch.cat([torch.zeros(1, dtype=torch.float64), recall, torch.ones(1, dtype=torch.float64)])
    mpre = torch.cat([torch.zeros(1, dtype=torch.float64), precision, torch.zeros(1, dtype=torch.float64)])
    mpre = mpre.flip(0).cummax(0).values.flip(0)
    idx = torch.nonzero(mrec[1:] != mrec[:-1]).flatten()
    return float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum())


def match_detections(dets: Sequence[Dict], gts: Sequence[Dict], cls: int, iou_threshold: float,
                     rule: str = "voc"):
    """``(scores, tp, ignored, n_gt)`` of class ``cls`` over all images (scores sorted)."""
    scores, tps, ign, n_gt = [], [], [], 0
    for d, g in zip(dets, gts):
        gm = g["labels"] == cls
        gb = g["boxes"][gm].reshape(-1, 4)
        diff = g.get("difficult")
        diff = diff[gm].bool() if diff is not None else torch.zeros(gb.shape[0], dtype=torch.bool)
        n_gt += int((~diff).sum())
        dm = d["labels"] == cls
        db, ds = d["boxes"][dm].reshape(-1, 4), d["scores"][dm]
        order = ds.argsort(descending=True, stable=True)
        db, ds = db[order], ds[order]
        used = torch.zeros(gb.shape[0], dtype=torch.bool)
        iou = box_iou(db.float(), gb.float()) if gb.numel() else torch.zeros(db.shape[0], 0)
        for i in range(db.shape[0]):
            t, ig = 0, 0
            if iou.shape[1]:
                cand = iou[i].clone()
                if rule == "coco":
                    cand[used & ~diff] = -1.0  # COCO: the best object not matched yet
                j = int(cand.argmax())
                if cand[j] >= iou_threshold:
                    if diff[j]:
                        ig = 1
                    elif not used[j]:
                        t, used[j] = 1, True
            tps.append(t)
            ign.append(ig)
        scores.append(ds)
    s = torch.cat(scores) if scores else torch.zeros(0)
    tp, ig = torch.tensor(tps, dtype=torch.float64), torch.tensor(ign, dtype=torch.bool)
    order = s.argsort(descending=True, stable=True)
    return s[order], tp[order], ig[order], n_gt


def mean_ap(dets: Sequence[Dict], gts: Sequence[Dict], num_classes: int, iou_threshold: float = 0.5,
            method: str = "all") -> Dict:
    """``{"map", "ap": [per class 1..C]}`` (classes without ground truth: NaN, left out of the mean).

    ``dets[i]``: ``{"boxes" (D, 4) xyxy, "scores" (D,), "labels" (D,)}``; ``gts[i]``:
    ``{"boxes", "labels"}`` and optionally ``"difficult"``; labels 1..num_classes.
    """
    if len(dets) != len(gts):
        raise ValueError(f"mean_ap needs one detection entry per image; got {len(dets)} and {len(gts)}")
    aps: List[float] = []
    for c in range(1, num_classes + 1):
        _, tp, ig, n_gt = match_detections(dets, gts, c, iou_threshold, "coco" if method == "coco" else "voc")
        aps.append(average_precision(tp[~ig], n_gt, method))
    valid = [a for a in aps if a == a]
    return {"map": sum(valid) / len(valid) if valid else float("nan"), "ap": aps}


def coco_map(dets: Sequence[Dict], gts: Sequence[Dict], num_classes: int) -> Dict:
    """COCO-style ``{"map" (IoU .5:.95), "map50", "map75"}`` with 101-point interpolation."""
    ths = [0.5 + 0.05 * i for i in range(10)]
    per = [mean_ap(dets, gts, num_classes, t, "coco")["map"] for t in ths]
    return {"map": sum(per) / len(per), "map50": per[0], "map75": per[5]}
