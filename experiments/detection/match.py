"""Matching default boxes to ground truth by IoU (SSD, section 2.2).

Each ground-truth box takes its best-overlapping default box (so every object
has at least one match), and every other default box takes the ground truth it
overlaps most if that IoU is at least ``threshold``; the rest are background
(label 0). Labels of objects are 1..C.

>>> import torch
>>> priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])
>>> loc, lab = match(torch.tensor([[0.5, 0.5, 1.0, 1.0]]), torch.tensor([2]), priors)
>>> lab.tolist()
[0, 2]
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

from .boxes import box_iou, cxcywh_to_xyxy, encode

__all__ = ["match", "match_batch", "prior_coverage"]


def match(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, priors: torch.Tensor,
          threshold: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(loc_targets (N, 4), labels (N,))`` for ``priors`` (N, 4, cxcywh) against
    ``gt_boxes`` (G, 4, xyxy) with labels in 1..C."""
    n = priors.shape[0]
    if gt_boxes.numel() == 0:
        return torch.zeros(n, 4, device=priors.device), torch.zeros(n, dtype=torch.long, device=priors.device)
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (G, N)
    best_gt_iou, best_gt = iou.max(0)
    best_prior = iou.argmax(1)  # (G,)
    best_gt_iou[best_prior] = 2.0  # forced matches
    best_gt[best_prior] = torch.arange(gt_boxes.shape[0], device=priors.device)
    labels = gt_labels[best_gt].clone().long()
    labels[best_gt_iou < threshold] = 0
    return encode(gt_boxes[best_gt], priors), labels


def match_batch(targets, priors: torch.Tensor, threshold: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack :func:`match` over a batch of ``{"boxes", "labels"}`` targets."""
    locs, labels = zip(*(match(t["boxes"], t["labels"], priors, threshold) for t in targets))
    return torch.stack(locs), torch.stack(labels)


def prior_coverage(gt_boxes: Sequence[torch.Tensor], priors: torch.Tensor, threshold: float = 0.5) -> float:
    """The fraction of ground-truth boxes (a list of (G, 4) xyxy tensors in [0, 1] units) that overlap
    some default box with IoU >= ``threshold``: the objects matching can assign without forcing.
    Default boxes much larger or smaller than the objects leave it low.

    >>> priors = torch.tensor([[0.25, 0.25, 0.5, 0.5]])
    >>> prior_coverage([torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.1, 0.1]])], priors)
    0.5
    """
    best = [box_iou(b, cxcywh_to_xyxy(priors)).max(1).values for b in gt_boxes if b.numel()]
    if not best:
        return float("nan")
    return (torch.cat(best) >= threshold).float().mean().item()
