"""Inference throughput of a model (images/s), timed with device synchronisation.

    >>> import torch
    >>> ips = inference_speed(torch.nn.Conv2d(3, 4, 3), (16, 16), batch_size=8, iters=2)
    >>> ips > 0
    True
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["inference_speed", "saved_mib", "time_fn", "time_interleaved"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], runs: int = 5, warmup: int = 1, device=None, reduce: str = "median") -> float:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then the median (or
    ``reduce="min"``, robust on a loaded machine) of ``runs`` timed ones, with
    device synchronisation around each.

    >>> time_fn(lambda: sum(range(100)), runs=3) >= 0
    True
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    for _ in range(warmup):
        fn()
    _sync(dev)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return min(times) if reduce == "min" else statistics.median(times)


def time_interleaved(fns: Dict[str, Callable[[], object]], runs: int = 7, warmup: int = 2, device=None,
                     reduce: str = "median", warmup_s: float = 0.0,
                     tick: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    """Seconds per call of each function, timed in alternation (one call of each per round),
    so that load on a shared machine, thread wake-ups and allocator state hit every
    candidate alike; ``reduce`` is ``"median"`` or ``"min"`` over the ``runs`` rounds.
    Warm-up runs ``warmup`` rounds and then goes on until ``warmup_s`` seconds have passed
    (caches, thread pools and the allocator settle over time, not over a call count).
    ``tick(key)`` is called after every timed call (a progress bar's update).

    >>> t = time_interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(10))}, runs=3)
    >>> sorted(t)
    ['a', 'b']
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    start, done = time.perf_counter(), 0
    while done < warmup or time.perf_counter() - start < warmup_s:
        for fn in fns.values():
            fn()
        _sync(dev)
        done += 1
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            _sync(dev)
            t = time.perf_counter()
            fn()
            _sync(dev)
            times[k].append(time.perf_counter() - t)
            if tick is not None:
                tick(k)
    pick = min if reduce == "min" else statistics.median
    return {k: pick(v) for k, v in times.items()}


def saved_mib(fn: Callable[[], object]):
    """Run ``fn`` and measure what autograd keeps for the backward pass: returns ``(out, MiB)``,
    the bytes of every tensor saved for backward (counted once per save, via saved-tensor hooks).

    >>> x = torch.randn(256, 256, requires_grad=True)
    >>> _, mib = saved_mib(lambda: (x * x).sum())
    >>> round(mib, 2)   # x, saved twice by the product
    0.5
    """
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0] / 2 ** 20


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
