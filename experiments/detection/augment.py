"""Detection augmentation on the device: photometric jitter, random crop keeping
box centres, horizontal flip and resize, over a preloaded VOC/COCO-style set.

Crops follow SSD: a window of ``scale`` in [min_scale, 1] (0.3; 1 turns crops off) of each side and aspect
ratio in [0.5, 2]; boxes whose centres fall inside are kept (clipped to the
window), the others dropped; a window keeping no box is retried (up to 20
times, then the whole image). Photometric jitter scales brightness, contrast
and saturation by factors in ``[1 - j, 1 + j]`` per image. Boxes come out in
[0, 1] units of the resized image, so IoU (invariant to scaling each axis) and
mAP are unchanged by the resize.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> win, keep = crop_window(torch.tensor([[10., 10, 20, 20]]), 100, 100, g)
>>> bool(keep[0]), win[0] <= 15 <= win[2]
(True, True)
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..augment import step_generator

__all__ = ["crop_window", "crop_boxes", "photometric", "DetectionBatches", "MEAN", "STD"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def crop_window(boxes: torch.Tensor, h: int, w: int, gen: torch.Generator, min_scale: float = 0.3,
                tries: int = 20) -> Tuple[Tuple[int, int, int, int], torch.Tensor]:
    """A crop ``(x1, y1, x2, y2)`` (pixels) and the mask of boxes whose centres it contains."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(tries):
        s = min_scale + (1 - min_scale) * torch.rand((), generator=gen).item()
        r = 2 ** (2 * torch.rand((), generator=gen).item() - 1)  # aspect in [0.5, 2]
        cw, ch = min(w, int(round(w * s * r ** 0.5))), min(h, int(round(h * s / r ** 0.5)))
        if cw < 8 or ch < 8:
            continue
        x1 = int(torch.randint(0, w - cw + 1, (), generator=gen))
        y1 = int(torch.randint(0, h - ch + 1, (), generator=gen))
        win = (x1, y1, x1 + cw, y1 + ch)
        keep = ((centres[:, 0] >= win[0]) & (centres[:, 0] < win[2]) & (centres[:, 1] >= win[1])
                & (centres[:, 1] < win[3]))
        if boxes.shape[0] == 0 or keep.any():
            return win, keep
    return (0, 0, w, h), torch.ones(boxes.shape[0], dtype=torch.bool)


def crop_boxes(boxes: torch.Tensor, win: Tuple[int, int, int, int]) -> torch.Tensor:
    """Boxes shifted into a crop window and clipped to it."""
    x1, y1, x2, y2 = win
    out = boxes - torch.tensor([x1, y1, x1, y1], dtype=boxes.dtype)
    out[:, 0::2] = out[:, 0::2].clamp(0, x2 - x1)
    out[:, 1::2] = out[:, 1::2].clamp(0, y2 - y1)
    return out


def photometric(x: torch.Tensor, jitter: float, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Brightness, contrast and saturation jitter of a batch in [0, 1] (B, 3, H, W)."""
    b = x.shape[0]

    def f():
        return (1 + jitter * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)).to(x.device)

    x = x * f()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * f() + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * f() + grey
    return x.clamp(0, 1)


class DetectionBatches:
    """Batches ``(images (B, 3, S, S) normalised, targets [{"boxes" in [0, 1] xyxy, "labels"}])`` on
    ``device`` from a detection set (``ds[i] -> (uint8 image, target)``), preloaded once.

    Training streams are reproducible piece by piece, as the classification engine's
    :class:`~operad.experiments.augment.DeviceBatches`: the order of an epoch depends only on
    ``(seed, epoch)`` and a batch's crops, flips and jitter only on ``(seed, step)``, so a run
    resumed at any step sees the batches the uninterrupted run saw (:meth:`epoch`)."""

    def __init__(self, dataset, batch_size: int, size: Sequence[int], device="cpu", train: bool = False,
                 jitter: float = 0.3, flip: bool = True, seed: int = 0, min_scale: float = 0.3):
        self.items = [dataset[i] for i in range(len(dataset))]
        self.batch_size, self.size, self.device = batch_size, tuple(size), torch.device(device)
        self.train, self.jitter, self.flip, self.min_scale = train, jitter, flip, min_scale
        self.seed = seed
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        """Batches per epoch; a training stream drops the last partial batch (a batch of one frame
        would leave the 1x1 levels' batch norms a single value per channel)."""
        n = len(self.items)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _one(self, img: torch.Tensor, tgt: Dict, gen: Optional[torch.Generator]) -> Tuple[torch.Tensor, Dict]:
        x = img.to(self.device, non_blocking=True).float().div_(255)[None]
        boxes, labels = tgt["boxes"].clone(), tgt["labels"].clone()
        diff = tgt.get("difficult", torch.zeros(len(labels), dtype=torch.bool)).clone()
        h, w = x.shape[-2:]
        if gen is not None:
            if self.min_scale < 1:
                win, keep = crop_window(boxes, h, w, gen, self.min_scale)
            else:
                win, keep = (0, 0, w, h), torch.ones(len(labels), dtype=torch.bool)
            x = x[..., win[1]:win[3], win[0]:win[2]]
            boxes, labels, diff = crop_boxes(boxes[keep], win), labels[keep], diff[keep]
            h, w = x.shape[-2:]
            if self.flip and torch.rand((), generator=gen).item() < 0.5:
                x = x.flip(-1)
                boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=gen is None)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        return x[0], {"boxes": (boxes / scale).to(self.device), "labels": labels.to(self.device),
                      "difficult": diff.to(self.device)}

    def targets(self) -> List[Dict]:
        """Every frame's unaugmented target with boxes in [0, 1] units of the frame."""
        out = []
        for img, tgt in self.items:
            h, w = img.shape[-2:]
            out.append({**tgt, "boxes": tgt["boxes"].float() / torch.tensor([w, h, w, h], dtype=torch.float32)})
        return out

    def order(self, epoch: int) -> List[int]:
        """The frames of ``epoch`` in the order they are batched (shuffled by ``(seed, epoch)`` when training)."""
        n = len(self.items)
        if not self.train:
            return list(range(n))
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))
        return torch.randperm(n, generator=g).tolist()

    def epoch(self, epoch: int = 0, start: int = 0,
              step_offset: int = 0) -> Iterator[Tuple[torch.Tensor, List[Dict]]]:
        """The batches of ``epoch`` from batch ``start`` on; ``step_offset + i`` seeds batch ``i``'s augmentation."""
        order = self.order(epoch)
        for i in range(start, len(self)):
            gen = step_generator(self.seed, step_offset + i) if self.train else None
            pairs = [self._one(*self.items[j], gen) for j in order[i * self.batch_size:(i + 1) * self.batch_size]]
            x = torch.stack([p[0] for p in pairs])
            if gen is not None and self.jitter > 0:
                x = photometric(x, self.jitter, gen)
            yield (x - self.mean) / self.std, [p[1] for p in pairs]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, List[Dict]]]:
        return self.epoch(0)
