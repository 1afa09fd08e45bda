"""How many filters a layer really uses: the singular spectrum of its per-sample filter gradients.

After Zhou, Lian, Yin and Wang, "Neural Network Compression via Effective Filter
Analysis and Hierarchical Pruning", arXiv:2206.03596 (2022). What of the paper
could be read here (its abstract, and a public summary of its sections; the full
text was not available): it "propose[s] a gradient-matrix singularity
analysis-based method to estimate the maximum network redundancy" and, guided by
that rate, prunes "layer-wise and then filter-wise" (hierarchical pruning); its
preliminaries name three singularities of CNNs (overlap: two filters alike;
linear: a filter a combination of others; elimination: a filter with no effect),
and it relates the layer's pruning error, through a Taylor expansion, to the
small singular values of the Hessian. Its exact matrix layout, threshold and
ranking rule could not be read, so the definitions below are operad's, chosen to
measure exactly those singularities; no constant here is the paper's.

Definitions (per prunable layer with ``C`` filters ``W_1..W_C``, each of ``d``
weights, and ``N`` samples with per-sample losses ``l_n``):

* the **gradient matrix** ``M`` is ``C x (N d)``: row ``c`` holds
  ``dl_1/dW_c, ..., dl_N/dW_c``, filter ``c``'s gradients over all samples. The
  three singularities make rows dependent: an eliminated filter's row is zero,
  two overlapping filters' rows are proportional, a linearly dependent filter's
  row is a combination of others. ``M M^T = sum_n G_n G_n^T`` (``G_n`` the
  ``C x d`` gradient of sample ``n``) is the filter block of the empirical
  Fisher, the Gauss-Newton stand-in for the Hessian.
* its singular values ``s_1 >= ... >= s_C`` (float64); the **effective rank**
  at energy ``e`` is the smallest ``r`` with ``s_1^2 + ... + s_r^2 >= e (s_1^2 +
  ... + s_C^2)`` (0 when every gradient is zero).
* the **maximal pruning ratio** ``1 - r / C``: the share of filter directions
  that together carry less than ``1 - e`` of the gradient energy the data
  produces. It bounds how much of the layer can go before the loss's first-
  and (Gauss-Newton) second-order response loses more than that share; it is
  an estimate from ``N`` samples, not a promise about accuracy after pruning.
* **filter scores** (``importance="grad_rank"``): column-pivoted QR of ``M^T``,
  which picks first the filter whose gradient row is largest, then each time the
  one with the largest part outside the span of those already picked. A
  filter's score is that residual norm at its pick (non-increasing in pick
  order); the first ``r`` picked span the principal gradient subspace up to the
  usual rank-revealing bounds. Duplicates and dead filters score (near) 0, so
  pruning the lowest scores removes the singular filters first; ranking by
  projection on the top singular vectors instead would score two duplicates
  alike and keep or drop both.

>>> import torch
>>> from operad import ops, Field
>>> from operad.theory import redundancy
>>> net = (ops.conv(8) >> ops.relu() >> ops.global_pool() >> ops.linear(3)).bind(Field(3))
>>> data = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))]
>>> rep = redundancy(net, data, batches=1, progress=False)
>>> [(l.path, l.out_channels) for l in rep.layers], list(rep.skipped)
([('[0]', 8)], ['[3]'])
>>> 1 <= rep.layers[0].effective_rank <= 8
True
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..operators.algebra.errors import OperadError
from ..operators.algebra.sizes import check_input_shape
from .verify import _eval

__all__ = ["redundancy", "RedundancyReport", "LayerRedundancy", "RedundancyError", "per_sample_gradients",
           "gradient_matrix", "effective_rank", "prunable_layers", "PRUNABLE_FAMILIES"]

#: term families whose bound module holds filters as ``weight[C_out, ...]``
PRUNABLE_FAMILIES = ("conv", "linear", "binary_conv", "binary_linear", "quant_conv", "quant_linear")

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class RedundancyError(OperadError, ValueError):
    """A model, data set or setting the redundancy analysis cannot work with."""


# ----------------------------------------------------------------------------- layers

def prunable_layers(model: nn.Module, layers: Optional[Sequence[str]] = None
                    ) -> Tuple[Dict[str, Tuple[str, nn.Module]], Dict[str, str]]:
    """The layers to analyse, ``{path: (parameter name of the weight, module)}``, and
    the skipped ones with the reason, ``{path: why}``.

    Skipped by default: depthwise convolutions (each filter is tied to its one input
    channel, so it is pruned with the layer that makes that channel) and the output
    layer (the last prunable layer whose width is the network's output width: the
    classes, not filters). ``layers`` (operad paths, as ``summary`` prints them)
    picks layers explicitly, the output layer included if named.
    """
    if not hasattr(model, "term"):
        raise RedundancyError("redundancy needs a bound operad module (term.bind(Field(...)) or create_model(...))")
    found: Dict[str, Tuple[str, nn.Module]] = {}
    skipped: Dict[str, str] = {}
    for name, m in model.named_modules():
        if getattr(getattr(m, "term", None), "family", None) not in PRUNABLE_FAMILIES:
            continue
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
            skipped[m.path] = "depthwise: its filters follow their input channels"
            continue
        found[m.path] = ((name + "." if name else "") + "weight", m)
    out_width = getattr(getattr(model, "out_type", None), "channels", None)
    if found:
        last = list(found)[-1]
        if found[last][1].weight.shape[0] == out_width:
            skipped[last] = "output layer: its width is the network's output"
            if layers is None:
                del found[last]
    if layers is not None:
        unknown = [p for p in layers if p not in found]
        if unknown:
            raise RedundancyError(f"no prunable layer at {', '.join(map(repr, unknown))}; the model's are: "
                                  + ", ".join(found) + (f" (skipped: {', '.join(skipped)})" if skipped else ""))
        found = {p: found[p] for p in layers}
        skipped = {p: why for p, why in skipped.items() if p not in found}
    if not found:
        raise RedundancyError("the model has no prunable layer (a convolution or linear layer with filters of its "
                              "own" + (f"; skipped: {', '.join(f'{p} ({w})' for p, w in skipped.items())}"
                                       if skipped else "") + ")")
    return found, skipped


# ----------------------------------------------------------------------------- per-sample gradients

def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Optional[Loss] = None,
                         layers: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """``{path: g}`` with ``g[n, c, :]`` the gradient of sample ``n``'s loss
    ``loss(model(x[n:n+1]), y[n:n+1])`` with respect to filter ``c`` of the layer
    (flattened to ``d`` weights), in eval mode, by ``torch.func.vmap(grad)``.

    >>> import torch
    >>> from operad import ops, Field
    >>> net = (ops.conv(4) >> ops.global_pool() >> ops.linear(2)).bind(Field(3))
    >>> g = per_sample_gradients(net, torch.randn(5, 3, 6, 6), torch.tensor([0, 1, 0, 1, 1]))
    >>> {p: tuple(t.shape) for p, t in g.items()}
    {'[0]': (5, 4, 27)}
    """
    found, _ = prunable_layers(model, layers)
    loss = loss or F.cross_entropy
    names = {path: pname for path, (pname, _) in found.items()}
    params = dict(model.named_parameters())
    target = {pname: params[pname].detach() for pname in names.values()}
    rest = {k: v.detach() for k, v in params.items() if k not in target}
    buffers = dict(model.named_buffers())

    def one(weights, xi, yi):
        out = functional_call(model, ({**rest, **weights}, buffers), (xi.unsqueeze(0),))
        value = loss(out, yi.unsqueeze(0))
        if value.dim() != 0:
            raise RedundancyError(f"the loss must return a scalar per sample; got shape {tuple(value.shape)}")
        return value

    with _eval(model):
        g = vmap(grad(one), in_dims=(None, 0, 0), randomness="different")(target, x, y)
    return {path: g[pname].reshape(x.shape[0], g[pname].shape[1], -1) for path, pname in names.items()}


def gradient_matrix(g: torch.Tensor) -> torch.Tensor:
    """The ``C x (N d)`` gradient matrix from per-sample gradients ``g[N, C, d]``:
    row ``c`` is filter ``c``'s gradient for sample 1, then sample 2, ...

    >>> gradient_matrix(torch.arange(12.).reshape(2, 3, 2))
    tensor([[ 0.,  1.,  6.,  7.],
            [ 2.,  3.,  8.,  9.],
            [ 4.,  5., 10., 11.]])
    """
    return g.transpose(0, 1).reshape(g.shape[1], -1)


# ----------------------------------------------------------------------------- spectra

def effective_rank(s: torch.Tensor, energy: float) -> int:
    """The smallest ``r`` with ``sum(s[:r]**2) >= energy * sum(s**2)`` for singular
    values ``s`` in decreasing order; 0 when all are 0. ``energy`` in (0, 1].

    >>> effective_rank(torch.tensor([3.0, 1.0, 0.0]), 0.9), effective_rank(torch.tensor([3.0, 1.0, 0.0]), 1.0)
    (1, 2)
    """
    _check_energy(energy)
    e = s.detach().to(torch.float64).square().cumsum(0)
    if e.numel() == 0 or e[-1] <= 0:
        return 0
    return int(torch.searchsorted(e, energy * e[-1])) + 1


def _check_energy(energy: float) -> None:
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
        raise RedundancyError(f"energy must be a number in (0, 1] (the share of gradient energy kept, "
                              f"e.g. 0.99); got {energy!r}")


class _Spectrum:
    """The ``C x C`` triangular factor ``R`` of ``M^T`` (so ``R^T R = M M^T``),
    updated block by block (TSQR): ``M`` itself, ``C x N d``, is never stored."""

    def __init__(self, channels: int, device):
        self.r = torch.zeros(channels, channels, dtype=torch.float64, device=device)
        self.samples = 0

    def update(self, g: torch.Tensor) -> None:
        block = gradient_matrix(g.detach().to(torch.float64)).T
        self.r = torch.linalg.qr(torch.cat([self.r, block]), mode="r")[1]
        self.samples += g.shape[0]

    def singular_values(self) -> torch.Tensor:
        return torch.linalg.svdvals(self.r).cpu()

    def filter_scores(self) -> torch.Tensor:
        """Column-pivoted QR (LAPACK ``geqp3``) of ``R``, whose columns (one per filter)
        have the same Gram matrix as the rows of ``M``: filter ``P[k]`` scores ``|R'_kk|``."""
        import scipy.linalg

        r, piv = scipy.linalg.qr(self.r.cpu().numpy(), mode="r", pivoting=True)
        scores = torch.zeros(self.r.shape[1], dtype=torch.float64)
        scores[torch.from_numpy(piv)] = torch.from_numpy(abs(r.diagonal()).copy())
        return scores


# ----------------------------------------------------------------------------- report

@dataclass
class LayerRedundancy:
    """One layer's spectrum and what follows from it (see the module docstring)."""

    path: str
    family: str
    out_channels: int
    filter_size: int
    samples: int
    energy: float
    singular_values: torch.Tensor
    filter_scores: torch.Tensor
    effective_rank: int = field(init=False)
    max_prune_ratio: float = field(init=False)

    def __post_init__(self):
        self.effective_rank = effective_rank(self.singular_values, self.energy)
        self.max_prune_ratio = 1.0 - self.effective_rank / self.out_channels

    def to_dict(self) -> dict:
        return {"path": self.path, "family": self.family, "out_channels": self.out_channels,
                "filter_size": self.filter_size, "samples": self.samples, "energy": self.energy,
                "effective_rank": self.effective_rank, "max_prune_ratio": self.max_prune_ratio,
                "singular_values": self.singular_values.tolist(), "filter_scores": self.filter_scores.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerRedundancy":
        return cls(d["path"], d["family"], int(d["out_channels"]), int(d["filter_size"]), int(d["samples"]),
                   float(d["energy"]), torch.tensor(d["singular_values"], dtype=torch.float64),
                   torch.tensor(d["filter_scores"], dtype=torch.float64))


@dataclass
class RedundancyReport:
    """Per-layer spectra, effective ranks and maximal pruning ratios at ``energy``,
    from ``samples`` samples in ``batches`` batches; ``skipped`` says which layers
    were left out and why."""

    layers: List[LayerRedundancy]
    energy: float
    samples: int
    batches: int
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def filter_scores(self) -> Dict[str, torch.Tensor]:
        """``{path: tensor[C_out]}``, higher = more important (``importance="grad_rank"``)."""
        return {l.path: l.filter_scores for l in self.layers}

    @property
    def max_prune_ratios(self) -> Dict[str, float]:
        """``{path: 1 - r / C_out}``: ``ratios=`` for a pruning pass."""
        return {l.path: l.max_prune_ratio for l in self.layers}

    def with_energy(self, energy: float) -> "RedundancyReport":
        """The same spectra read at another energy threshold (no new gradients)."""
        _check_energy(energy)
        layers = [LayerRedundancy(l.path, l.family, l.out_channels, l.filter_size, l.samples, float(energy),
                                  l.singular_values, l.filter_scores) for l in self.layers]
        return RedundancyReport(layers, float(energy), self.samples, self.batches, dict(self.skipped))

    def table(self) -> str:
        head = ("layer", "family", "filters", "filter size", f"rank@{self.energy:g}", "max prune")
        body = [(l.path, l.family, str(l.out_channels), str(l.filter_size), str(l.effective_rank),
                 f"{100 * l.max_prune_ratio:.1f}%") for l in self.layers]
        widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
        fmt = lambda row: "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
        lines = [fmt(head), "-" * len(fmt(head))] + [fmt(r) for r in body]
        total = sum(l.out_channels for l in self.layers)
        kept = sum(l.effective_rank for l in self.layers)
        lines.append(f"filters {total}, effective {kept} ({100 * (1 - kept / total):.1f}% redundant) at energy "
                     f"{self.energy:g}, from {self.samples} samples in {self.batches} batches")
        lines += [f"skipped {p}: {why}" for p, why in self.skipped.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        """A JSON-serialisable dict; :meth:`from_dict` reads it back."""
        return {"energy": self.energy, "samples": self.samples, "batches": self.batches,
                "skipped": dict(self.skipped), "layers": [l.to_dict() for l in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> "RedundancyReport":
        try:
            return cls([LayerRedundancy.from_dict(l) for l in d["layers"]], float(d["energy"]), int(d["samples"]),
                       int(d["batches"]), dict(d.get("skipped", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise RedundancyError(f"not a redundancy report ({type(e).__name__}: {e})") from None

    def plot(self, path: str) -> str:
        """A PNG: the normalised singular spectra (log scale, one line per layer,
        coloured by depth, a dot at the effective rank) and the maximal pruning
        ratio per layer. Returns ``path``."""
        return _plot(self, path)


def _plot(rep: RedundancyReport, path: str) -> str:
    import os

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(rep.layers)
    cmap = plt.get_cmap("viridis")
    colours = [cmap(i / max(n - 1, 1)) for i in range(n)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    for l, col in zip(rep.layers, colours):
        s = l.singular_values.numpy()
        if s.size == 0 or s[0] <= 0:
            continue
        x = np.arange(1, s.size + 1) / s.size
        y = np.maximum(s / s[0], 1e-16)
        a.semilogy(x, y, color=col, lw=1.2)
        if l.effective_rank:
            a.semilogy([x[l.effective_rank - 1]], [y[l.effective_rank - 1]], "o", color=col, ms=4)
    a.set_xlabel("singular value index / filters")
    a.set_ylabel("s_i / s_1")
    a.set_title(f"gradient spectra (dot: effective rank at energy {rep.energy:g})")
    a.grid(True, which="both", alpha=0.3)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, max(n - 1, 1)))
    fig.colorbar(sm, ax=a, label="layer (input to output)")
    b.bar(range(n), [l.max_prune_ratio for l in rep.layers], color=colours)
    b.set_xticks(range(n))
    b.set_xticklabels([l.path for l in rep.layers], rotation=90, fontsize=7)
    b.set_ylim(0, 1)
    b.set_ylabel("max prune ratio 1 - r / filters")
    b.set_title(f"{rep.samples} samples")
    b.grid(True, axis="y", alpha=0.3)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the analysis

def redundancy(model: nn.Module, data: Iterable, batches: int = 4, loss: Optional[Loss] = None,
               energy: float = 0.99, layers: Optional[Sequence[str]] = None, chunk: int = 32,
               progress: bool = True) -> RedundancyReport:
    """Each prunable layer's gradient spectrum, effective rank at ``energy`` and
    maximal pruning ratio, from the first ``batches`` ``(x, y)`` batches of ``data``.

    ``loss(logits, targets)`` (default cross entropy) is applied per sample; the
    model runs in eval mode (batch-norm statistics untouched; the training flag is
    restored). ``layers`` restricts the analysis to these paths; ``chunk`` samples
    go through ``vmap`` at a time (memory: ``chunk`` copies of the analysed weights).

    >>> import torch
    >>> from operad import ops, Field
    >>> net = (ops.conv(6) >> ops.bn() >> ops.relu() >> ops.conv(6) >> ops.relu()
    ...        >> ops.global_pool() >> ops.linear(2)).bind(Field(3))
    >>> rep = redundancy(net, [(torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,)))], batches=1, progress=False)
    >>> print(rep.table())  # doctest: +ELLIPSIS
    layer  family  filters  filter size  rank@0.99  max prune
    ...
    """
    _check_energy(energy)
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise RedundancyError(f"batches must be a positive int; got {batches!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise RedundancyError(f"chunk must be a positive int; got {chunk!r}")
    found, skipped = prunable_layers(model, layers)
    paths = list(found)
    p0 = next(model.parameters())
    spectra = {p: _Spectrum(m.weight.shape[0], p0.device) for p, (_, m) in found.items()}
    used = _accumulate(model, data, batches, loss, paths, spectra, chunk, p0, progress)
    out = []
    for p, (_, m) in found.items():
        sp = spectra[p]
        c, d = m.weight.shape[0], m.weight[0].numel()
        if sp.samples * d < c:
            warnings.warn(f"redundancy: {p} has {c} filters but only {sp.samples} samples x {d} weights: its rank "
                          f"is bounded by the data; pass more batches", stacklevel=2)
        out.append(LayerRedundancy(p, m.term.family, c, d, sp.samples, float(energy), sp.singular_values(),
                                   sp.filter_scores()))
    return RedundancyReport(out, float(energy), spectra[paths[0]].samples, used, skipped)


def _accumulate(model, data, batches, loss, paths, spectra, chunk, p0, progress) -> int:
    """Feed ``batches`` batches of ``data``, ``chunk`` samples at a time, into the
    layers' spectra; returns how many batches there were."""
    from tqdm.auto import tqdm

    try:
        total = min(batches, len(data))
    except TypeError:
        total = batches
    bar = tqdm(total=total, desc="redundancy", unit="batch", disable=not progress, dynamic_ncols=True, leave=False)
    used = 0
    it = iter(data)
    with _eval(model):
        while used < batches:
            try:
                item = next(it)
            except StopIteration:
                break
            x, y = _batch(model, item, used, p0)
            for lo in range(0, x.shape[0], chunk):
                g = per_sample_gradients(model, x[lo:lo + chunk], y[lo:lo + chunk], loss, paths)
                for i, p in enumerate(paths):
                    bar.set_postfix_str(f"{p} ({i + 1}/{len(paths)})", refresh=False)
                    spectra[p].update(g[p])
            used += 1
            bar.update(1)
    bar.close()
    if used == 0:
        raise RedundancyError("the data yielded no batches: pass an iterable of (inputs, targets) batches")
    return used


def _batch(model: nn.Module, item, index: int, p0: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One ``(x, y)`` batch, checked against the model, on its device (``x`` in its dtype)."""
    try:
        if isinstance(item, torch.Tensor):
            raise TypeError
        x, y = item
    except (TypeError, ValueError):
        raise RedundancyError(f"batch {index} is not a pair (inputs, targets); got {type(item).__name__}") from None
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise RedundancyError(f"batch {index}: inputs and targets must be tensors; got "
                              f"{type(x).__name__} and {type(y).__name__}")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise RedundancyError(f"batch {index}: inputs {tuple(x.shape)} and targets {tuple(y.shape)} must hold the "
                              f"same positive number of samples")
    check_input_shape(model, tuple(x.shape))
    x = x.to(p0.device, p0.dtype if x.is_floating_point() else None)
    return x, y.to(p0.device)
