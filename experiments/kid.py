"""Kernel Inception Distance (KID, Binkowski et al. 2018) between two sets of
features, and the features a trained network sees: the input of its classifier.

KID is the unbiased estimate of the squared maximum mean discrepancy (MMD^2)
with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over
random subsets. :func:`kid` follows torch-fidelity's ``kid_features_to_metric``
exactly: ``subsets`` draws (default 100) of ``subset_size`` rows (default
1000, here clipped to the smaller set) without replacement from each set with
``numpy.random.RandomState(seed)``, seed 2020, and reports the mean and the
population standard deviation of the per-subset MMD^2. Sets drawn from one
distribution give about 0 (slightly negative values are valid).

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(500, 16, generator=g), torch.randn(500, 16, generator=g)
    >>> same, moved = kid(x, y, 50, 200), kid(x, y + 1.0, 50, 200)
    >>> abs(same["mean"]) < same["std"], moved["mean"] > 10 * moved["std"]
    (True, True)

:func:`penultimate_features` runs a network and returns, per image, the input
of its classifier layer averaged over any spatial dimensions: for every
registered model the same as ``forward_head(forward_features(x), pre_logits=True)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

from operad.operators.algebra.errors import OperadError

__all__ = ["KidSettings", "polynomial_kernel", "mmd2_unbiased", "kid", "classifier_layer", "FeatureTap",
           "penultimate_features"]

# below this many kernel entries the three full kernel matrices are computed once and subsets index them
_FULL_KERNEL_ENTRIES = 30_000_000


@dataclass(frozen=True)
class KidSettings:
    """How KID subsamples: ``subsets`` draws of ``subset_size`` rows, with ``seed`` (torch-fidelity's defaults).

    >>> KidSettings().as_dict()
    {'subsets': 100, 'subset_size': 1000, 'seed': 2020}
    """

    subsets: int = 100
    subset_size: int = 1000
    seed: int = 2020

    def __post_init__(self):
        if self.subsets < 1 or self.subset_size < 2:
            raise OperadError(f"KID needs at least 1 subset of at least 2 samples; got subsets={self.subsets}, "
                              f"subset_size={self.subset_size}")

    def as_dict(self) -> Dict[str, int]:
        return asdict(self)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    """``(x y^T / d + coef0) ** degree`` for rows of ``x`` (n, d) and ``y`` (m, d).

    >>> polynomial_kernel(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]])).item()  # (2/2 + 1)^3
    8.0
    """
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(kxx: torch.Tensor, kxy: torch.Tensor, kyy: torch.Tensor) -> float:
    """The unbiased MMD^2 of two equal-sized samples from their kernel matrices:
    off-diagonal means of ``kxx`` and ``kyy`` minus twice the mean of ``kxy``.

    >>> k = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    >>> mmd2_unbiased(k, torch.full((2, 2), 0.5), k)   # (1 + 1 + 1 + 1) / (2 * 1) - 2 * 2 / 4
    1.0
    """
    m = kxx.shape[0]
    off_xx = kxx.sum() - kxx.diagonal().sum()
    off_yy = kyy.sum() - kyy.diagonal().sum()
    return float((off_xx + off_yy) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def _check_features(f1: torch.Tensor, f2: torch.Tensor) -> None:
    for name, f in (("first", f1), ("second", f2)):
        if f.dim() != 2:
            raise OperadError(f"KID takes (N, D) feature matrices; the {name} set has shape {tuple(f.shape)}")
        if f.shape[0] < 2:
            raise OperadError(f"KID needs at least 2 samples per set; the {name} set has {f.shape[0]}")
        if not torch.isfinite(f).all():
            raise OperadError(f"the {name} feature set holds non-finite values (NaN or inf)")
    if f1.shape[1] != f2.shape[1]:
        raise OperadError(f"the feature sets have {f1.shape[1]} and {f2.shape[1]} dimensions; KID needs the same")


def kid(f1: torch.Tensor, f2: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 2020) -> Dict[str, float]:
    """KID between feature sets ``f1`` (n1, d) and ``f2`` (n2, d): ``{"mean", "std",
    "subsets", "subset_size"}``; ``subset_size`` is clipped to ``min(n1, n2)``.
    Computed in float64 on ``f1``'s device."""
    f1, f2 = torch.as_tensor(f1), torch.as_tensor(f2)
    _check_features(f1, f2)
    KidSettings(subsets, subset_size, seed)  # validates
    n1, n2 = f1.shape[0], f2.shape[0]
    m = min(subset_size, n1, n2)
    dev = f1.device if f1.device.type != "mps" else torch.device("cpu")  # no float64 on MPS
    x, y = f1.to(dev, torch.float64), f2.to(dev, torch.float64)
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(n1, m, replace=False), rng.choice(n2, m, replace=False)) for _ in range(subsets)]
    full = n1 * n1 + n2 * n2 + n1 * n2 <= _FULL_KERNEL_ENTRIES
    if full:
        k11, k22, k12 = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    mmds = np.empty(subsets)
    for s, (i1, i2) in enumerate(draws):
        a, b = torch.as_tensor(i1, device=dev), torch.as_tensor(i2, device=dev)
        if full:
            kxx, kyy, kxy = k11[a][:, a], k22[b][:, b], k12[a][:, b]
        else:
            xs, ys = x[a], y[b]
            kxx, kyy, kxy = polynomial_kernel(xs, xs), polynomial_kernel(ys, ys), polynomial_kernel(xs, ys)
        mmds[s] = mmd2_unbiased(kxx, kxy, kyy)
    return {"mean": float(mmds.mean()), "std": float(mmds.std()), "subsets": int(subsets), "subset_size": int(m)}


# ----------------------------------------------------------------------------- the network's own features

def classifier_layer(model: nn.Module) -> nn.Module:
    """The layer whose input is the network's penultimate representation: timm's
    ``get_classifier()`` where the model has one, else the last leaf module with a
    weight of two or more dimensions (a linear, or a 1x1 convolution classifier)."""
    get = getattr(model, "get_classifier", None)
    if callable(get):
        try:
            layer = get()
        except (ValueError, AttributeError):
            layer = None
        if layer is not None and not isinstance(layer, nn.Identity):
            return layer
    last = None
    for mod in model.modules():
        if not any(True for _ in mod.children()) and any(p.dim() >= 2 for p in mod.parameters(recurse=False)):
            last = mod
    if last is None:
        raise OperadError(f"{type(model).__name__} has no layer with a weight matrix, so no classifier whose "
                          f"input could serve as features for KID")
    return last


class FeatureTap:
    """Collects the input of ``model``'s classifier layer (see :func:`classifier_layer`),
    averaged over spatial dimensions, while the model runs.

    >>> m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> with FeatureTap(m) as tap:
    ...     _ = m(torch.zeros(5, 3, 8, 8))
    >>> tap.take().shape
    torch.Size([5, 4])
    """

    def __init__(self, model: nn.Module):
        self.layer = classifier_layer(model)
        self._seen = []
        self._handle = None

    def _hook(self, _mod, inputs) -> None:
        x = inputs[0]
        self._seen.append((x.flatten(2).mean(-1) if x.dim() > 2 else x.flatten(1)).float())

    def __enter__(self) -> "FeatureTap":
        self._handle = self.layer.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def take(self) -> torch.Tensor:
        """The features of the one forward since the last ``take``."""
        seen, self._seen = self._seen, []
        if len(seen) != 1:
            raise OperadError(f"the classifier layer {type(self.layer).__name__} ran {len(seen)} times in one "
                              f"forward; penultimate features need it to run once")
        return seen[0]


@torch.no_grad()
def penultimate_features(model: nn.Module, batches, transform: Optional[Callable] = None,
                         amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The classifier's input for every sample of ``batches`` (a
    :class:`~operad.experiments.augment.DeviceBatches`), after ``transform``,
    averaged over spatial dimensions: float32 (N, D) on the batches' device."""
    from operad.experiments.evaluate import _autocast

    was = model.training
    model.eval()
    out = []
    try:
        with FeatureTap(model) as tap:
            for xb, _ in batches.epoch(0):
                if transform is not None:
                    xb = transform(xb)
                with _autocast(batches.device, amp_dtype):
                    model(xb)
                out.append(tap.take())
    finally:
        model.train(was)
    return torch.cat(out)
