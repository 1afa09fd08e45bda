"""The engine's side of regularization (issue 19): label transformations (TSLA,
DisturbLabel), DropBlock's linear schedule of p, and the augmentation options
a config turns on. ``train`` calls :func:`augment_options` once and
:func:`step_regularization` once per step; both are pure functions of the
config and ``(seed, step)``, so a resumed run draws what the uninterrupted one
drew. The keys' ranges (and ``erasing_area``'s low <= high) are declared in
:class:`operad.experiments.config.Config` and checked when a config loads.

    >>> from operad.experiments.config import Config
    >>> tsla_smoothing(Config(label_smoothing=0.1, tsla_until=3), epoch=2), \\
    ...     tsla_smoothing(Config(label_smoothing=0.1, tsla_until=3), epoch=3)
    (0.1, 0.0)
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

__all__ = ["tsla_smoothing", "disturb_labels", "step_regularization", "augment_options"]


def tsla_smoothing(cfg, epoch: int) -> float:
    """Two-stage label smoothing (Xu et al. 2020): ``label_smoothing`` before
    epoch ``tsla_until``, hard labels from then on (``tsla_until = 0``: always
    smooth)."""
    if cfg.tsla_until and epoch >= cfg.tsla_until:
        return 0.0
    return cfg.label_smoothing


def disturb_labels(y: torch.Tensor, rate: float, num_classes: int, gen: torch.Generator, total: int = 0,
                   part: slice = None) -> torch.Tensor:
    """DisturbLabel (Xie et al. 2016): each label is, with probability ``rate``,
    replaced by a class drawn uniformly (possibly itself), so the true class
    keeps probability ``1 - rate (C - 1) / C``. Labels outside ``[0, C)``
    (ignore indices) are kept. Draws are made for ``total`` labels (the global
    batch; default ``len(y)``) and ``part`` selects this rank's.

    >>> y = torch.zeros(10000, dtype=torch.long)
    >>> z = disturb_labels(y, 0.2, 10, torch.Generator().manual_seed(0))
    >>> round((z != 0).float().mean().item(), 2)
    0.18
    """
    if not rate:
        return y
    shape = (total or y.shape[0],) + tuple(y.shape[1:])
    sel = part if part is not None else slice(None)
    hit = (torch.rand(shape, generator=gen, device=y.device) < rate)[sel]
    new = torch.randint(0, num_classes, shape, generator=gen, device=y.device)[sel]
    return torch.where(hit & (y >= 0) & (y < num_classes), new.to(y.dtype), y)


def step_regularization(cfg, model: nn.Module, y: torch.Tensor, step: int, total: int, steps_per_epoch: int,
                        num_classes: int) -> Tuple[torch.Tensor, float]:
    """Per training step: set DropBlock's scheduled rate, disturb the labels
    (DisturbLabel), and return ``(labels, label_smoothing)`` for the loss."""
    if cfg.drop_block_ramp:
        from operad.operators.regularize import set_drop_block_progress
        set_drop_block_progress(model, step / max(1.0, cfg.drop_block_ramp * total))
    if cfg.disturb_label:
        from operad.experiments.augment import step_generator
        total, part = _global_part(len(y))
        y = disturb_labels(y, cfg.disturb_label, num_classes, step_generator(cfg.seed + 2, step, y.device),
                           total, part)
    return y, tsla_smoothing(cfg, step // steps_per_epoch)


def _global_part(local: int) -> Tuple[int, slice]:
    """The global batch size and this rank's rows (contiguous local slices, as
    :class:`~operad.experiments.augment.DeviceBatches` deals them)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return local, slice(None)
    r, w = dist.get_rank(), dist.get_world_size()
    return local * w, slice(r * local, (r + 1) * local)


def augment_options(cfg) -> Dict[str, Any]:
    """The keyword arguments of :class:`~operad.experiments.augment.Augment` for
    the augmentation policy and RandomErasing of a config."""
    out: Dict[str, Any] = {}
    if cfg.auto_augment:
        from operad.experiments.autoaugment import Policy
        out["policy"] = Policy(cfg.auto_augment, cfg.rand_augment_n, cfg.rand_augment_m)
    if cfg.erasing:
        out.update(erasing=cfg.erasing, erasing_area=tuple(cfg.erasing_area))
    return out
