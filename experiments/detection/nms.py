"""Non-maximum suppression in pure torch (no torchvision).

:func:`nms` keeps boxes in decreasing score order and drops every later box
whose IoU with a kept one exceeds ``iou_threshold`` (greedy, as
``torchvision.ops.nms``); :func:`batched_nms` does it per class by shifting each
class's boxes apart so boxes of different classes never overlap.

>>> import torch
>>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
>>> nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
[0, 2]
>>> batched_nms(b, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5).tolist()
[0, 1, 2]
"""
from __future__ import annotations

import torch

from .boxes import box_iou

__all__ = ["nms", "batched_nms"]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the kept boxes (xyxy), by decreasing score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)
    over = box_iou(boxes[order], boxes[order]) > iou_threshold
    n = order.numel()
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    over_cpu = over.cpu()
    keep_cpu = keep.cpu()
    for i in range(n):
        if keep_cpu[i]:
            keep_cpu[i + 1:] &= ~over_cpu[i, i + 1:]
    return order[keep_cpu.to(boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """:func:`nms` within each value of ``idxs`` (e.g. the class), by decreasing score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    span = (boxes.max() - boxes.min()).clamp(min=0) + 1
    shifted = boxes + (idxs.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
