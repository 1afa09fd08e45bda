"""The multibox loss (SSD): smooth L1 on the offsets of matched default boxes and
cross-entropy on classes with hard negative mining (at most ``neg_ratio``
negatives per positive, the ones with the highest background loss), both
divided by the number of positives.

>>> import torch
>>> pred = torch.zeros(1, 4 + 3, 5)
>>> labels = torch.tensor([[1, 0, 0, 0, 0]])
>>> tot, loc, conf = multibox_loss(pred, torch.zeros(1, 5, 4), labels)
>>> round(conf.item(), 4)  # 1 positive + 3 negatives, each log(3)
4.3944
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["multibox_loss", "hard_negative_mask"]


def hard_negative_mask(bg_loss: torch.Tensor, positive: torch.Tensor, neg_ratio: float = 3.0) -> torch.Tensor:
    """``(B, N)`` mask of positives plus the ``neg_ratio * n_pos`` negatives with the highest loss per image."""
    loss = bg_loss.clone()
    loss[positive] = -float("inf")
    order = loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    n_neg = (neg_ratio * positive.sum(1, keepdim=True)).clamp(max=positive.shape[1] - 1).long()
    return positive | (rank < n_neg)


def multibox_loss(pred: torch.Tensor, loc_t: torch.Tensor, labels: torch.Tensor,
                  neg_ratio: float = 3.0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, loc, conf)`` for predictions ``(B, 4 + K, N)`` (K classes with 0 = background),
    offset targets ``(B, N, 4)`` and labels ``(B, N)``."""
    loc_p = pred[:, :4].transpose(1, 2).float()
    logits = pred[:, 4:].float()
    positive = labels > 0
    n_pos = positive.sum().clamp(min=1).float()
    loc = F.smooth_l1_loss(loc_p[positive], loc_t[positive], reduction="sum") / n_pos
    ce = F.cross_entropy(logits, labels, reduction="none")  # (B, N)
    with torch.no_grad():
        mask = hard_negative_mask(ce.detach(), positive, neg_ratio)
    conf = ce[mask].sum() / n_pos
    return loc + conf, loc, conf
