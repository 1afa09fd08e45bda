"""Structural pruning: remove filters, and everything coupled to them, as a rewrite.

``prune(model, amount=0.5)`` traces the network's channel graph
(:func:`~operad.operators.rewrites.channels.trace_channels`), scores every unit
(a set of channels that must go together), removes the lowest-scoring
``amount`` of each space (one layer's filters, or a whole residual stream), and
returns a new bound module of the same expression with smaller widths: its
``term`` prints the new widths, ``operad.cost`` of it is exact, ``summary``
shows it, and its weights are the kept slices of the old ones.

Importance (higher keeps a unit):

==============  ==================================================================
``"l1"``        sum of the L1 norms of the filters writing the unit (magnitude)
``"l2"``        the same with L2 norms
``"bn_scale"``  sum of ``|gamma|`` of the batch norms writing the unit (network
                slimming); units no norm writes fall back to ``"l1"``
``"taylor"``    ``sum (w * dL/dw)^2`` over the unit's filters, accumulated over
                ``data`` (first-order Taylor, Molchanov et al. 2019)
``"grad_rank"`` the gradient-matrix analysis of :func:`operad.theory.redundancy`
                (Zhou et al. 2022): filters ranked by their share of the principal
                gradient subspace; without ``amount`` or ``ratios`` each layer
                loses the ratio the analysis says it can spare
``"random"``    a seeded random draw (a baseline)
==============  ==================================================================

>>> import torch
>>> from operad import ops, Field, cost, rewrite
>>> m = (ops.conv(16) >> ops.bn() >> ops.relu() >> ops.conv(8)).bind(Field(3))
>>> p = rewrite.prune(m, amount=0.5)
>>> p.term
conv(8) >> bn() >> relu() >> conv(8)
>>> p(torch.randn(1, 3, 8, 8)).shape
torch.Size([1, 8, 8, 8])
"""
from __future__ import annotations

import fnmatch
import math
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Set, Union

import numpy as np
import torch
from torch import nn

from .channels import ChannelGraph, Space, trace_channels

__all__ = ["prune", "prune_plan", "zero_channels", "importance_scores", "IMPORTANCE", "amount_for_macs"]

IMPORTANCE = ("l1", "l2", "bn_scale", "taylor", "grad_rank", "random")


# ---------------------------------------------------------------------------
# Importance
# ---------------------------------------------------------------------------
def _per_entry(p: torch.Tensor, dim: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    t = p.detach().double().movedim(dim, 0)
    return fn(t.reshape(t.shape[0], -1))


def _accumulate(g: ChannelGraph, scores: Dict[int, float], kind: str,
                value: Callable[[nn.Module, str, int], Optional[torch.Tensor]]) -> Set[int]:
    touched = set()
    for p in g.producers:
        if p.kind != kind:
            continue
        v = value(p.module, p.name, p.dim)
        if v is None:
            continue
        for u, s in zip(p.units.tolist(), v.tolist()):
            r = g.find(u)
            scores[r] = scores.get(r, 0.0) + float(s)
            touched.add(r)
    return touched


def _norm_scores(g: ChannelGraph, order: int) -> Dict[int, float]:
    scores: Dict[int, float] = {}

    def value(m, name, dim):
        if name != "weight":
            return None
        w = getattr(m, name)
        return _per_entry(w, dim, lambda t: t.abs().sum(1) if order == 1 else t.pow(2).sum(1).sqrt())
    _accumulate(g, scores, "filter", value)
    return scores


def _taylor_scores(g: ChannelGraph, model: nn.Module, data, loss_fn) -> Dict[int, float]:
    params = {id(getattr(p.module, p.name)): getattr(p.module, p.name) for p in g.producers}
    acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    was = model.training
    model.eval()
    n = 0
    try:
        for x, y in data:
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            for k, v in params.items():
                if v.grad is not None:
                    acc[k] += (v.detach() * v.grad.detach()).double()
            n += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    if n == 0:
        raise ValueError("importance='taylor' needs data: an iterable of (input, target) batches; got none")
    scores: Dict[int, float] = {}
    for kind in ("filter", "norm"):
        _accumulate(g, scores, kind, lambda m, name, dim: _per_entry(acc[id(getattr(m, name))], dim,
                                                                      lambda t: t.sum(1).pow(2)))
    return scores


def _grad_rank_scores(g: ChannelGraph, model: nn.Module, data, loss_fn, batches: int):
    from ...theory.redundancy import redundancy

    report = redundancy(model, data, batches=batches, loss=loss_fn, progress=False)
    scores: Dict[int, float] = {}
    ratios: Dict[str, float] = {}
    for p in g.producers:
        if p.kind != "filter" or p.name != "weight" or p.path not in report.filter_scores:
            continue
        s = report.filter_scores[p.path]
        for u, v in zip(p.units.tolist(), s.tolist()):
            r = g.find(u)
            scores[r] = scores.get(r, 0.0) + float(v)
        ratios[p.path] = float(report.max_prune_ratios[p.path])
    return scores, ratios


def importance_scores(g: ChannelGraph, importance: str = "l1", data: Optional[Iterable] = None,
                      loss_fn: Optional[Callable] = None, seed: int = 0, batches: int = 4) -> Dict[int, float]:
    """A score for every removable unit of ``g`` (higher keeps it).

    >>> from operad import ops, Field
    >>> from operad.rewrite import trace_channels
    >>> g = trace_channels((ops.conv(4) >> ops.conv(2)).bind(Field(3)))
    >>> len(importance_scores(g, "l1"))
    4
    """
    if importance not in IMPORTANCE:
        raise ValueError(f"unknown importance {importance!r}; choose from {', '.join(IMPORTANCE)}")
    loss_fn = loss_fn or nn.functional.cross_entropy
    units = g.removable()
    if importance == "random":
        gen = torch.Generator().manual_seed(seed)
        return dict(zip(units, torch.rand(len(units), generator=gen, dtype=torch.float64).tolist()))
    if importance in ("l1", "l2"):
        scores = _norm_scores(g, 1 if importance == "l1" else 2)
    elif importance == "bn_scale":
        scores = {}
        touched = _accumulate(g, scores, "norm", lambda m, name, dim: _per_entry(getattr(m, name), dim,
                                                                                 lambda t: t.abs().sum(1))
                              if name == "weight" else None)
        l1 = _norm_scores(g, 1)
        scores.update({u: v for u, v in l1.items() if u not in touched})
    elif importance == "taylor":
        scores = _taylor_scores(g, g.model, data if data is not None else (), loss_fn)
    else:
        if data is None:
            raise ValueError("importance='grad_rank' needs data: an iterable of (input, target) batches")
        scores, _ = _grad_rank_scores(g, g.model, data, loss_fn, batches)
    return {u: scores.get(u, 0.0) for u in units}


# ---------------------------------------------------------------------------
# Choosing what to remove
# ---------------------------------------------------------------------------
def _space_ratio(sp: Space, amount: Optional[float], ratios: Mapping[str, float]) -> float:
    hits = [r for pat, r in ratios.items() for path in sp.paths if path == pat or fnmatch.fnmatchcase(path, pat)]
    if hits:
        return min(hits)
    return amount or 0.0


def _check_fraction(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise ValueError(f"prune {name} must be a fraction in [0, 1) of each layer's channels to remove; got {v!r}")
    return float(v)


def prune_plan(g: ChannelGraph, scores: Mapping[int, float], amount: Optional[float] = None,
               ratios: Optional[Mapping[str, float]] = None, round_to: int = 1) -> frozenset:
    """The units to remove: in every space, the lowest-scoring ``ratio`` of its units,
    keeping a multiple of ``round_to`` (and at least one). ``ratios`` maps layer paths
    or glob patterns of them (``"stage2*"``; a path such as ``"[0]"`` matches itself) to fractions; a space takes the smallest ratio among
    its layers that match, else ``amount``."""
    ratios = {k: _check_fraction(f"ratios[{k!r}]", v) for k, v in (ratios or {}).items()}
    if amount is not None:
        amount = _check_fraction("amount", amount)
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"prune round_to must be a positive int; got {round_to!r}")
    drop = []
    for sp in g.spaces():
        ratio = _space_ratio(sp, amount, ratios)
        keep = sp.size - math.floor(ratio * sp.size)
        keep = min(sp.size, max(round_to, math.ceil(keep / round_to) * round_to))
        n_drop = min(len(sp.units), sp.size - keep)
        if sp.fixed == 0:
            n_drop = min(n_drop, len(sp.units) - 1)
        if n_drop <= 0:
            continue
        order = sorted(sp.units, key=lambda u: (scores.get(u, 0.0), u))
        drop.extend(order[:n_drop])
    return frozenset(drop)


# ---------------------------------------------------------------------------
# Applying a plan
# ---------------------------------------------------------------------------
@torch.no_grad()
def zero_channels(g: ChannelGraph, drop: Iterable[int]) -> None:
    """Zero, in place, every parameter entry that writes a channel of a unit in ``drop``
    (filters, biases, norm scales and shifts): the network then computes what its
    pruned form computes. The exactness tests use it."""
    drop = g.check_drop(drop)
    for p in g.producers:
        idx = [i for i, u in enumerate(p.units.tolist()) if g.find(u) in drop]
        if idx:
            getattr(p.module, p.name).index_fill_(p.dim, torch.tensor(idx, dtype=torch.long), 0.0)


_TIMM_ATTRS = ("model_name", "default_input_size", "_create_kwargs", "num_classes", "default_cfg",
               "pretrained_cfg")


def _carry_metadata(old: nn.Module, new: nn.Module) -> None:
    """Give the pruned model the registry's attributes (and timm's methods) of the old one."""
    for a in _TIMM_ATTRS:
        if hasattr(old, a):
            setattr(new, a, getattr(old, a))
    if hasattr(old, "feature_info"):
        from ...models.hub import _timm_feature_info

        new.feature_info = _timm_feature_info(new)
        new.num_features = new.feature_info[-1]["num_chs"] if new.feature_info else None
    if type(old) is not type(new) and isinstance(old, type(new)):
        new.__class__ = type(old)


def apply_plan(g: ChannelGraph, drop: Iterable[int]) -> nn.Module:
    """The bound module ``g``'s network becomes without the units in ``drop``."""
    g.drop = g.check_drop(drop)
    model = g.model
    term, load = g.rebuild_root()
    new = term.bind(model.in_type)
    p = next((q for q in [*model.parameters(), *model.buffers()] if q.is_floating_point()), None)
    if p is not None:  # a model with buffers only (a complex norm without affine) keeps their dtype too
        new = new.to(dtype=p.dtype, device=p.device)
    load(new)
    new.train(model.training)
    _carry_metadata(model, new)
    return new


def prune(model: nn.Module, amount: Optional[float] = None, ratios: Optional[Mapping[str, float]] = None,
          importance: str = "l1", round_to: int = 1, data: Optional[Iterable] = None,
          loss_fn: Optional[Callable] = None, seed: int = 0, drop: Optional[Iterable[int]] = None,
          batches: int = 4) -> nn.Module:
    """A smaller bound module: ``model`` without its least important channels.

    ``amount`` is the fraction of every space's channels to remove (a space is one
    layer's filters, or all layers a residual sum couples); ``ratios`` gives layers
    their own fractions by path pattern. ``drop`` removes exactly the given units of
    ``trace_channels(model)`` instead. ``data`` (``(input, target)`` batches) feeds
    the ``"taylor"`` and ``"grad_rank"`` importances. The model's input and output
    widths never change.

    >>> from operad import ops, Field, rewrite
    >>> m = ops.residual(ops.conv(8) >> ops.relu() >> ops.conv(8)).bind(Field(8))
    >>> rewrite.prune(m, amount=0.75).term
    residual(conv(2) >> relu() >> conv(8))
    """
    if importance not in IMPORTANCE:
        raise ValueError(f"unknown importance {importance!r}; choose from {', '.join(IMPORTANCE)}")
    g = trace_channels(model)
    if drop is None:
        if importance == "grad_rank":
            if data is None:
                raise ValueError("importance='grad_rank' needs data: an iterable of (input, target) batches")
            scores, layer_ratios = _grad_rank_scores(g, model, data, loss_fn or nn.functional.cross_entropy,
                                                     batches)
            if amount is None and ratios is None:
                ratios = layer_ratios
        else:
            if amount is None and ratios is None:
                raise ValueError("prune needs amount= (a fraction of each layer's channels), ratios= "
                                 "({path pattern: fraction}) or drop= (units of trace_channels(model))")
            scores = importance_scores(g, importance, data, loss_fn, seed, batches)
        drop = prune_plan(g, scores, amount, ratios, round_to)
    return apply_plan(g, drop)


def amount_for_macs(model: nn.Module, macs_ratio: float, importance: str = "l1", size: Sequence[int] = (32, 32),
                    round_to: int = 1, data=None, seed: int = 0, tol: float = 1e-3) -> float:
    """The smallest uniform ``amount`` whose pruned model has at most ``macs_ratio`` of
    ``model``'s multiply-adds at input ``size`` (bisection on the exact cost formula).

    >>> from operad import ops, Field
    >>> m = (ops.conv(16) >> ops.relu() >> ops.conv(16) >> ops.relu() >> ops.conv(4)).bind(Field(3))
    >>> a = amount_for_macs(m, 0.5)
    >>> 0.2 < a < 0.5
    True
    """
    from ...theory.cost import cost

    if not 0.0 < macs_ratio <= 1.0:
        raise ValueError(f"macs_ratio must be in (0, 1]; got {macs_ratio!r}")
    g = trace_channels(model)
    scores = importance_scores(g, importance if importance != "grad_rank" else "l1", data, None, seed)
    base = float(cost(model.term, model.in_type, size).macs)

    def macs(a: float) -> float:
        g.drop = g.check_drop(prune_plan(g, scores, a, None, round_to))
        term, _ = g.rebuild_root()
        return float(cost(term, model.in_type, size).macs)

    lo, hi = 0.0, 0.999
    if macs(hi) > macs_ratio * base:
        raise ValueError(f"even removing all but one channel of every layer leaves {macs(hi) / base:.3f} of the "
                         f"multiply-adds; {macs_ratio} cannot be reached (the rest is fixed)")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if macs(mid) <= macs_ratio * base:
            hi = mid
        else:
            lo = mid
    return hi
