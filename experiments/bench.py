"""Inference throughput of a model (images/s), timed with device synchronisation.

    >>> import torch
    >>> ips = inference_speed(torch.nn.Conv2d(3, 4, 3), (16, 16), batch_size=8, iters=2)
    >>> ips > 0
    True
"""
from __future__ import annotations

import contextlib
import time
from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["inference_speed"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def inference_speed(model: nn.Module, hw: Tuple[int, int], batch_size: int = 256, device="cpu",
                    amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False, warmup: int = 2,
                    iters: int = 10, in_chans: int = 3) -> float:
    """Forward passes per second times the batch size, in eval mode, on random input."""
    device = torch.device(device)
    was = model.training
    model.eval()
    x = torch.randn(batch_size, in_chans, *hw, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    for _ in range(warmup):
        with ctx():
            model(x)
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        with ctx():
            model(x)
    _sync(device)
    dt = time.perf_counter() - t
    model.train(was)
    return batch_size * iters / dt
