"""Box formats, IoU, and SSD's offset encoding.

Boxes are ``(x1, y1, x2, y2)`` ("xyxy") or ``(cx, cy, w, h)`` ("cxcywh"), in any
unit as long as both operands share it. SSD encodes a ground-truth box ``g``
against a default box ``d`` (cxcywh) as ``((g_c - d_c) / (v0 d_wh), log(g_wh / d_wh) / v1)``
with variances ``(v0, v1) = (0.1, 0.2)``.

>>> import torch
>>> d = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
>>> g = torch.tensor([[0.45, 0.4, 0.65, 0.6]])
>>> torch.allclose(decode(encode(g, d), d), g)
True
"""
from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["xyxy_to_cxcywh", "cxcywh_to_xyxy", "box_area", "box_iou", "encode", "decode", "VARIANCES"]

VARIANCES: Tuple[float, float] = (0.1, 0.2)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], -1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4) (0 where both are empty).

    >>> box_iou(torch.tensor([[0., 0, 2, 2]]), torch.tensor([[1., 1, 3, 3]])).item()
    0.1428571492433548
    """
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def encode(gt_xyxy: torch.Tensor, priors: torch.Tensor, variances=VARIANCES) -> torch.Tensor:
    """Offsets of ground-truth boxes (xyxy) against default boxes (cxcywh), row by row."""
    g = xyxy_to_cxcywh(gt_xyxy)
    c = (g[..., :2] - priors[..., :2]) / (variances[0] * priors[..., 2:])
    wh = torch.log(g[..., 2:].clamp(min=1e-6) / priors[..., 2:]) / variances[1]
    return torch.cat([c, wh], -1)


def decode(loc: torch.Tensor, priors: torch.Tensor, variances=VARIANCES) -> torch.Tensor:
    """Boxes (xyxy) from offsets ``loc`` against default boxes (cxcywh); inverse of :func:`encode`."""
    c = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    wh = priors[..., 2:] * torch.exp((loc[..., 2:] * variances[1]).clamp(max=10.0))
    return cxcywh_to_xyxy(torch.cat([c, wh], -1))
