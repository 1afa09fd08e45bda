"""Augmentation on the device that holds the data, and device-resident batches.

Random numbers come from a generator seeded by ``(seed, step)``, and they are
drawn for the whole *global* batch before a data-parallel rank takes its
slice, so a run is reproducible after a resume and identical whatever the
number of processes. Example::

    >>> import torch
    >>> from operad.experiments.augment import Augment
    >>> aug = Augment(crop_padding=4, flip=True, cutout=8)
    >>> x = torch.rand(8, 3, 32, 32)
    >>> aug(x, torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 32, 32])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from operad.experiments.data import ArrayData

__all__ = ["Augment", "SegAugment", "mix_batch", "mixed_loss", "DeviceBatches", "rotate_batch", "step_generator"]


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` whose stream depends only on ``(seed, step)``."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + 12345) % (2 ** 63 - 1))
    return g


def _slice(t: torch.Tensor, part: Optional[slice]) -> torch.Tensor:
    return t if part is None else t[part]


@dataclass
class Augment:
    """Classification augmentation on a float batch (B, C, H, W):
    random crop with zero padding, horizontal flip, cutout (a square of side
    ``cutout`` set to 0, centred anywhere), random rotation by up to
    ``rotate`` degrees. ``policy`` (an :class:`operad.experiments.autoaugment.Policy`)
    runs on the uint8 batch before normalisation (:meth:`before_normalize`);
    ``erasing`` is the RandomErasing probability per image, last."""

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    rotate: float = 0.0
    policy: Optional[Callable] = None
    erasing: float = 0.0
    erasing_area: Tuple[float, float] = (0.02, 0.4)

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.cutout or self.rotate or self.policy or self.erasing)

    def before_normalize(self, x: torch.Tensor, gen: torch.Generator, total: Optional[int] = None,
                         part: Optional[slice] = None) -> torch.Tensor:
        """The ``policy`` on the raw (uint8) batch; the identity without one."""
        return x if self.policy is None else self.policy(x, gen, total, part)

    def __call__(self, x: torch.Tensor, gen: torch.Generator, total: Optional[int] = None,
                 part: Optional[slice] = None) -> torch.Tensor:
        """Augment ``x``; parameters are drawn for ``total`` samples (default
        ``len(x)``) and ``part`` selects this batch's rows among them."""
        n = total or x.shape[0]
        B, C, H, W = x.shape
        dev = x.device
        if self.crop_padding:
            p = self.crop_padding
            oy = _slice(torch.randint(0, 2 * p + 1, (n,), generator=gen, device=dev), part)
            ox = _slice(torch.randint(0, 2 * p + 1, (n,), generator=gen, device=dev), part)
            xp = F.pad(x, (p, p, p, p))
            rows = (oy[:, None] + torch.arange(H, device=dev))[:, None, :, None].expand(B, C, H, W + 2 * p)
            x = torch.gather(xp, 2, rows)
            cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, None, :].expand(B, C, H, W)
            x = torch.gather(x, 3, cols)
        if self.flip:
            f = _slice(torch.rand(n, generator=gen, device=dev) < 0.5, part)
            x = torch.where(f[:, None, None, None], x.flip(3), x)
        if self.rotate:
            ang = _slice((torch.rand(n, generator=gen, device=dev) * 2 - 1) * self.rotate, part)
            x = rotate_batch(x, ang)
        if self.cutout:
            cy = _slice(torch.randint(0, H, (n,), generator=gen, device=dev), part)
            cx = _slice(torch.randint(0, W, (n,), generator=gen, device=dev), part)
            s = int(self.cutout)
            ys = torch.arange(H, device=dev)[None, :, None] - (cy - s // 2)[:, None, None]
            xs = torch.arange(W, device=dev)[None, None, :] - (cx - s // 2)[:, None, None]
            inside = (ys >= 0) & (ys < s) & (xs >= 0) & (xs < s)
            x = x.masked_fill(inside[:, None], 0.0)
        if self.erasing:
            from operad.experiments.autoaugment import random_erasing
            x = random_erasing(x, gen, self.erasing, tuple(self.erasing_area), total=n, part=part)
        return x


def rotate_batch(x: torch.Tensor, degrees: torch.Tensor | float, mode: str = "bilinear") -> torch.Tensor:
    """Rotate each image about its centre by ``degrees`` (counter-clockwise),
    zero outside the source image.

    >>> rotate_batch(torch.ones(1, 1, 4, 4), 0.0).sum().item()
    16.0
    """
    B = x.shape[0]
    a = torch.as_tensor(degrees, dtype=torch.float32, device=x.device).expand(B) * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    H, W = x.shape[-2:]
    # normalised coordinates are anisotropic when H != W: scale through pixel units
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * H / W
    theta[:, 1, 0] = sin * W / H
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="zeros", align_corners=False)


@dataclass
class SegAugment:
    """Segmentation augmentation applied to image and label map together:
    random scale in ``scale``, random crop of ``crop`` (H, W) (padding with 0
    and the ignore index where the scaled image is smaller), horizontal flip.
    One ``grid_sample`` per batch: bilinear for images, nearest for labels."""

    scale: Tuple[float, float] = (1.0, 1.0)
    crop: Optional[Tuple[int, int]] = None
    flip: bool = False
    ignore_index: int = 255

    @property
    def active(self) -> bool:
        return bool(self.flip or self.crop or tuple(self.scale) != (1.0, 1.0))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, total: Optional[int] = None,
                 part: Optional[slice] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        n = total or x.shape[0]
        B, C, H, W = x.shape
        dev = x.device
        ch, cw = self.crop or (H, W)
        lo, hi = self.scale
        s = _slice(lo + (hi - lo) * torch.rand(n, generator=gen, device=dev), part)
        flip = _slice(torch.rand(n, generator=gen, device=dev) < 0.5, part) if self.flip else None
        u = _slice(torch.rand(n, 2, generator=gen, device=dev) * 2 - 1, part)
        ax, ay = cw / (W * s), ch / (H * s)
        tx = u[:, 0] * (1 - ax).abs()
        ty = u[:, 1] * (1 - ay).abs()
        theta = torch.zeros(B, 2, 3, device=dev)
        theta[:, 0, 0] = ax if flip is None else torch.where(flip, -ax, ax)
        theta[:, 1, 1] = ay
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        grid = F.affine_grid(theta, [B, C, ch, cw], align_corners=False)
        xo = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
        yl = (y.float() + 1)[:, None]
        yo = F.grid_sample(yl, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long() - 1
        yo = torch.where(yo < 0, torch.full_like(yo, self.ignore_index), yo)
        return xo, yo


def mix_batch(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, mixup: float = 0.0,
              cutmix: float = 0.0, gen: Optional[torch.Generator] = None):
    """Mixup (``mixup`` = Beta alpha) or CutMix (``cutmix`` = alpha), one of
    them per batch (chosen at random when both are on). Returns
    ``(x, y_a, y_b, lam)``; use :func:`mixed_loss`. Pairs are formed inside
    the (local) batch.

    >>> xs, ya, yb, lam = mix_batch(torch.rand(4, 3, 8, 8), torch.arange(4), np.random.default_rng(0), mixup=1.0)
    >>> 0.0 <= lam <= 1.0
    True
    """
    if not (mixup or cutmix):
        return x, y, y, 1.0
    use_cutmix = bool(cutmix) and (not mixup or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    perm = torch.randperm(x.shape[0], generator=gen, device=x.device if gen is not None else "cpu").to(x.device)
    if use_cutmix:
        H, W = x.shape[-2:]
        rh, rw = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(H)), int(rng.integers(W))
        y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, H)
        x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, W)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, y, y[perm], lam


def mixed_loss(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float,
               label_smoothing: float = 0.0, ignore_index: int = -100) -> torch.Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)`` with label smoothing."""
    loss = F.cross_entropy(logits, y_a, label_smoothing=label_smoothing, ignore_index=ignore_index)
    if lam < 1.0:
        loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=label_smoothing,
                                                        ignore_index=ignore_index)
    return loss


class DeviceBatches:
    """A whole split as one uint8 tensor on ``device``; yields normalised float
    batches, augmented on the device. Shuffling and augmentation depend only
    on ``(seed, epoch, step)``. With ``world_size > 1`` every rank draws the
    same global batch and keeps its contiguous slice (the global batch is
    ``batch_size``; each rank gets ``batch_size // world_size``).

    >>> from operad.experiments.data import ArrayData
    >>> d = ArrayData("t", "train", np.zeros((10, 8, 8, 3), np.uint8), np.arange(10), list("abcdefghij"))
    >>> b = DeviceBatches(d, batch_size=4, shuffle=True, drop_last=True)
    >>> len(b), [tuple(x.shape) for x, y in b.epoch(0)]
    (2, [(4, 3, 8, 8), (4, 3, 8, 8)])
    """

    def __init__(self, data: ArrayData, batch_size: int, device: torch.device | str = "cpu",
                 shuffle: bool = False, drop_last: bool = False, augment=None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False, shard_eval: bool = False):
        self.data = data
        self.device = torch.device(device)
        self.x = torch.from_numpy(np.ascontiguousarray(data.images)).to(self.device).permute(0, 3, 1, 2)
        self.y = torch.from_numpy(np.ascontiguousarray(data.labels)).to(self.device)
        if data.task == "segmentation":
            self.y = self.y.long()
        self.mean = torch.tensor(data.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(data.std, device=self.device).view(1, 3, 1, 1) * 255
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.seed = augment, seed
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        if shuffle and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.local = batch_size // world_size if shuffle else batch_size
        self.shard_eval = shard_eval
        n = len(data)
        if shard_eval and world_size > 1:  # evaluation: each rank a contiguous shard
            bounds = np.linspace(0, n, world_size + 1).astype(int)
            self.lo, self.hi = int(bounds[rank]), int(bounds[rank + 1])
        else:
            self.lo, self.hi = 0, n

    def __len__(self) -> int:
        n = self.hi - self.lo
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float32."""
        return (xb.float() - self.mean) / self.std

    def order(self, epoch: int) -> torch.Tensor:
        n = self.hi - self.lo
        if not self.shuffle:
            return torch.arange(self.lo, self.hi, device=self.device)
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))
        return torch.randperm(n, generator=g).to(self.device) + self.lo

    def epoch(self, epoch: int = 0, start: int = 0, step_offset: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one epoch from batch ``start`` on; ``step_offset + i`` is
        the global step number that seeds batch ``i``'s augmentation."""
        idx = self.order(epoch)
        for i in range(start, len(self)):
            sel = idx[i * self.batch_size:(i + 1) * self.batch_size]
            total = sel.shape[0]
            part = None
            if self.shuffle and self.world_size > 1:
                part = slice(self.rank * self.local, (self.rank + 1) * self.local)
                sel = sel[part]
            xb, yb = self.x[sel], self.y[sel]
            active = self.augment is not None and self.augment.active
            gen = step_generator(self.seed, step_offset + i, self.device) if active else None
            if active and hasattr(self.augment, "before_normalize"):
                xb = self.augment.before_normalize(xb, gen, total, part)
            xb = self.normalize(xb)
            if active:
                if isinstance(self.augment, SegAugment):
                    xb, yb = self.augment(xb, yb, gen, total, part)
                else:
                    xb = self.augment(xb, gen, total, part)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    def __iter__(self):
        return self.epoch(0)
