"""Measurements the structural claims share (exact costs from the algebra, rewrites, latency)."""
from __future__ import annotations

from typing import Callable

import torch


def model_cost(name: str, what: str) -> Callable[[int, str], float]:
    """``measure`` for a registered model's exact ``params`` or ``macs`` at its native input size."""

    def measure(seed: int, profile: str) -> float:
        import operad
        from operad import Field
        from operad.models import model_info, model_term

        i = model_info(name).input_size
        c = operad.cost(model_term(name), Field(i[0]), size=i[1:])
        return float(getattr(c, what))

    measure.__name__ = f"{what}({name})"
    return measure


def cost_ratio(subject: str, baseline: str, what: str) -> Callable[[int, str], float]:
    """``measure``: subject's exact ``params``/``macs`` over the baseline's."""
    a, b = model_cost(subject, what), model_cost(baseline, what)

    def measure(seed: int, profile: str) -> float:
        return a(seed, profile) / b(seed, profile)

    measure.__name__ = f"{what}({subject})/{what}({baseline})"
    return measure


def randomize_bn(m: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every batch norm non-trivial statistics and affine weights (as after training)."""
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            mod.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            if mod.weight is not None:
                mod.weight.data.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.data.copy_(0.2 * torch.randn(n, generator=g))
    return m.eval()


def rewrite_error(name: str, rewrite: str) -> Callable[[int, str], float]:
    """``measure``: the largest output change, relative to the output's scale, when
    a randomly initialised ``name`` (random BN statistics) is rewritten by
    ``operad.rewrite.<rewrite>`` (float64)."""

    def measure(seed: int, profile: str) -> float:
        from operad import rewrite as rw
        from operad.models import create_model, model_info

        torch.manual_seed(seed)
        m = randomize_bn(create_model(name), seed).double()
        s = 16 if profile == "smoke" else model_info(name).input_size[1]
        x = torch.randn(4, 3, s, s, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        d = getattr(rw, rewrite)(m) if rewrite != "remove_residuals" else rw.remove_residuals(m)
        with torch.no_grad():
            ref = m(x)
            return float((d(x) - ref).abs().max() / ref.abs().max())

    measure.__name__ = f"rel_error({rewrite}({name}))"
    return measure


def latency_ratio(subject: Callable[[], torch.nn.Module], baseline: Callable[[], torch.nn.Module],
                  size: int = 32, batch: int = 32) -> Callable[[int, str], float]:
    """``measure``: inference latency of ``subject()`` over ``baseline()`` (eval, no_grad,
    timed in alternation with one thread on the CPU, on the GPU when there is one)."""

    def measure(seed: int, profile: str) -> float:
        from operad.experiments.bench.timing import time_interleaved

        dev = torch.device("cuda" if profile in ("gpu", "full") and torch.cuda.is_available() else "cpu")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(seed)
            a, b = subject().to(dev).eval(), baseline().to(dev).eval()
            n = 4 if profile == "smoke" else batch
            x = torch.randn(n, 3, size, size, device=dev)
            runs = 3 if profile == "smoke" else 9
            with torch.no_grad():
                t = time_interleaved({"a": lambda: a(x), "b": lambda: b(x)}, runs=runs, warmup=2, device=dev)
            return t["a"] / t["b"]
        finally:
            torch.set_num_threads(threads)

    return measure
