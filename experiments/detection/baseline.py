"""A detector that sees no pixels, to measure mAP against: the training boxes themselves.

In every frame it predicts, per class, the (at most ``k``) training boxes of
that class that most other training boxes of the class overlap (IoU >= 0.5),
after NMS, each scored by that overlap count per training frame: how often an
object sits there. Its mAP@0.5 comes only from where and how large objects
usually are (cars on the road ahead, signs up right). A trained detector that
does not beat it has learnt nothing that looking at the frame adds; one that
beats it clearly has learnt to find objects.

>>> import torch
>>> train = [{"boxes": torch.tensor([[0.1, 0.1, 0.3, 0.5]]), "labels": torch.tensor([1])},
...          {"boxes": torch.tensor([[0.1, 0.1, 0.3, 0.45], [0.6, 0.6, 0.7, 0.7]]), "labels": torch.tensor([1, 1])}]
>>> d = prior_box_detections(train, 1, 1)[0]
>>> [[round(v, 2) for v in b] for b in d["boxes"].tolist()], d["scores"].tolist(), d["labels"].tolist()
([[0.1, 0.1, 0.3, 0.5], [0.6, 0.6, 0.7, 0.7]], [1.0, 0.5], [1, 1])
>>> val = [{"boxes": torch.tensor([[0.6, 0.6, 0.7, 0.7]]), "labels": torch.tensor([1])}]
>>> prior_box_map(train, val, 1), prior_box_map(train, val, 1, k=1)   # found second / not found
(0.5, 0.0)
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from .boxes import box_iou
from .metrics import mean_ap
from .nms import nms

__all__ = ["prior_box_detections", "prior_box_map"]


def prior_box_detections(train: Sequence[Dict], n_images: int, num_classes: int, k: int = 100,
                         iou_threshold: float = 0.5) -> List[Dict]:
    """``n_images`` identical detection entries built from the ``train`` targets (boxes xyxy in [0, 1]
    units, labels 1..``num_classes``): per class its ``k`` densest training boxes, as above."""
    boxes, scores, labels = [], [], []
    for c in range(1, num_classes + 1):
        b = torch.cat([t["boxes"][t["labels"] == c].float().reshape(-1, 4) for t in train])
        if not len(b):
            continue
        s = (box_iou(b, b) >= iou_threshold).float().sum(1) / len(train)
        keep = nms(b, s, 0.45)[:k]
        boxes.append(b[keep])
        scores.append(s[keep])
        labels.append(torch.full((len(keep),), c, dtype=torch.long))
    one = {"boxes": torch.cat(boxes) if boxes else torch.zeros(0, 4),
           "scores": torch.cat(scores) if scores else torch.zeros(0),
           "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)}
    return [dict(one) for _ in range(n_images)]


def prior_box_map(train: Sequence[Dict], val: Sequence[Dict], num_classes: int, k: int = 100) -> float:
    """PASCAL mAP@0.5 (all-point) on ``val`` of :func:`prior_box_detections` built from ``train``."""
    return mean_ap(prior_box_detections(train, len(val), num_classes, k), list(val), num_classes, 0.5)["map"]
