"""Metrics: top-k accuracy, and a confusion matrix accumulated on the device
(per-class accuracy, pixel accuracy, IoU, mean IoU).

    >>> import torch
    >>> cm = ConfusionMatrix(3, ignore_index=3)
    >>> cm.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 3]))
    >>> cm.matrix.tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    >>> round(cm.pixel_accuracy(), 4), round(cm.mean_iou(), 4)
    (0.6667, 0.5)
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["ConfusionMatrix", "topk_correct", "accuracy"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is among the top-k logits, for each k,
    as a tensor on the logits' device (no host synchronisation).

    >>> topk_correct(torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]), torch.tensor([1, 2]), (1, 2)).tolist()
    [1, 1]
    """
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices
    hit = top == target[:, None]
    return torch.stack([hit[:, :min(k, kmax)].any(1).sum() for k in ks])


def accuracy(logits: torch.Tensor, target: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy as a float.

    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    0.5
    """
    return topk_correct(logits, target, (k,))[0].item() / max(1, target.shape[0])


class ConfusionMatrix:
    """``matrix[t, p]`` counts targets ``t`` predicted as ``p``, accumulated on
    the device of the first update; targets equal to ``ignore_index`` (or out
    of range) are skipped."""

    def __init__(self, num_classes: int, ignore_index: Optional[int] = None, device=None):
        self.n = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predictions (class indices, any shape) against targets of the same shape."""
        if self.matrix.device != pred.device:
            self.matrix = self.matrix.to(pred.device)
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        keep = (target >= 0) & (target < self.n)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        idx = torch.where(keep, target * self.n + pred.clamp(0, self.n - 1), torch.full_like(target, self.n * self.n))
        self.matrix += torch.bincount(idx, minlength=self.n * self.n + 1)[:-1].view(self.n, self.n)

    def all_reduce(self) -> None:
        """Sum the matrix over data-parallel processes (no-op when not distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix)

    def pixel_accuracy(self) -> float:
        """Correct / counted (overall accuracy)."""
        m = self.matrix.double()
        return (m.diag().sum() / m.sum().clamp_min(1)).item()

    def per_class_accuracy(self) -> List[float]:
        """Recall of every class (NaN where the class never occurs)."""
        m = self.matrix.double()
        return (m.diag() / m.sum(1)).tolist()

    def iou(self) -> List[float]:
        """Intersection over union per class (NaN where the class is absent
        from both targets and predictions)."""
        m = self.matrix.double()
        inter = m.diag()
        union = m.sum(0) + m.sum(1) - inter
        return (inter / union).tolist()

    def mean_iou(self) -> float:
        """Mean IoU over the classes that occur (NaN classes excluded)."""
        v = torch.tensor(self.iou(), dtype=torch.float64)
        v = v[~v.isnan()]
        return v.mean().item() if v.numel() else float("nan")

    def summary(self, classes: Optional[Sequence[str]] = None) -> Dict[str, object]:
        classes = list(classes) if classes is not None else [str(i) for i in range(self.n)]
        return {"pixel_accuracy": self.pixel_accuracy(), "mean_iou": self.mean_iou(),
                "iou": dict(zip(classes, self.iou())),
                "per_class_accuracy": dict(zip(classes, self.per_class_accuracy())),
                "confusion_matrix": self.matrix.cpu().tolist()}
