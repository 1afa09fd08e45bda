"""Feature extraction on any backbone: ``forward_features``, ``feature_info`` and
a feature-pyramid wrapper (timm's ``features_only``).

How a backbone opts in: make the network a sequence of *named* top-level items
(``term.named("stem")``, ``.named("stage1")``, ...) whose outputs are rank-2
fields, with the classifier last and named ``"head"``; accept
``features_only: bool = False`` and drop the head when it is true. Then

- ``create_model(name, features_only=True)`` is a :class:`FeaturePyramid` of every
  stage (``out_indices`` picks some), as timm's; :func:`trunk` is the trunk as one module;
- :func:`feature_info` lists ``{"name", "index", "channels", "reduction"}`` per stage,
  computed from the term alone (types and ``out_size``, no forward pass);
- :func:`create_features` returns a module whose forward gives the list of stage
  outputs (a pyramid for segmentation or detection heads);
- :func:`forward_features` runs a bound classifier up to its head.

Models that are plain sequences without names still work: unnamed rank-2 items
are reported as ``"[i]"``.

>>> import torch
>>> from operad.models.features import create_features
>>> net = create_features("resnet20")
>>> [(f["name"], f["channels"], f["reduction"]) for f in net.feature_info]
[('stem', 16, 1), ('stage1', 16, 1), ('stage2', 32, 2), ('stage3', 64, 4)]
>>> [tuple(y.shape) for y in net(torch.randn(1, 3, 32, 32))][-1]
(1, 64, 8, 8)
"""
from __future__ import annotations

import inspect
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..operators.algebra.combinators import Named, Seq
from ..operators.algebra.field import Field
from ..operators.algebra.term import Term
from .registry import MODELS, create_model, model_info, model_term

__all__ = ["trunk", "feature_info", "forward_features", "FeaturePyramid", "create_features"]

_PROBE = 2 ** 20


def _items(term: Term):
    return term.items if isinstance(term, Seq) else (term,)


def _name(item: Term, i: int) -> str:
    return item.name if isinstance(item, Named) else f"[{i}]"


def trunk(term: Term, in_type: Field = Field(3)) -> Term:
    """The leading items of a sequence that produce rank-2 fields, stopping at an
    item named ``"head"``."""
    keep, t = [], in_type
    for it in _items(term):
        if isinstance(it, Named) and it.name == "head":
            break
        o = it._infer(t)
        if o.rank != 2:
            break
        keep.append(it)
        t = o
    if not keep:
        raise ValueError("the term has no leading rank-2 items to use as a trunk")
    out = keep[0]
    for it in keep[1:]:
        out = out >> it
    return out


def feature_info(term: Term, in_type: Field = Field(3)) -> List[Dict]:
    """``[{"name", "index", "channels", "reduction", "num_chs", "module"}]`` after each
    trunk item: ``channels`` counts the field's channels (complex ones for harmonic
    fields), timm's ``num_chs`` the output tensor's (twice as many there)."""
    out, t, size = [], in_type, (_PROBE, _PROBE)
    for i, it in enumerate(_items(trunk(term, in_type))):
        size = it.out_size(t, size)
        t = it._infer(t)
        out.append({"name": _name(it, i), "index": i, "channels": t.channels,
                    "reduction": round(_PROBE / size[0]), "num_chs": int(t.tensor_channels), "module": _name(it, i)})
    return out


def forward_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a bound sequential model up to (not including) its head: the last
    top-level child named ``head`` or producing a rank-0 field."""
    for key, child in model.named_children():
        if key == "head" or getattr(child, "out_type", None) is not None and child.out_type.rank != 2:
            break
        x = child(x)
    return x


class FeaturePyramid(nn.Module):
    """A bound trunk whose forward returns the outputs of the stages in ``out_indices``.

    ``feature_info`` lists the selected stages (name, channels, reduction); the
    trunk itself is ``self.trunk`` (an ordinary bound operad module, so its
    state dict keys are the classifier's minus the head)."""

    def __init__(self, trunk_module: nn.Module, info: List[Dict], out_indices: Sequence[int]):
        super().__init__()
        self.trunk = trunk_module
        self.out_indices = tuple(out_indices)
        self.feature_info = [info[i] for i in self.out_indices]
        self._last = max(self.out_indices)

    def forward(self, x):
        outs = []
        for i, child in enumerate(self.trunk.children()):
            x = child(x)
            if i in self.out_indices:
                outs.append(x)
            if i == self._last:
                break
        return outs


def create_features(name: str, out_indices: Optional[Sequence[int]] = None, in_chans: Optional[int] = None,
                    **kwargs) -> FeaturePyramid:
    """A feature pyramid on registered model ``name`` (all trunk stages by default;
    negative indices count from the end).

    >>> create_features("resnet18", out_indices=(-2, -1)).feature_info[-1]["reduction"]
    32
    """
    chans = in_chans if in_chans is not None else model_info(name).input_size[0]
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    fn = MODELS[name].fn if name in MODELS else None
    if fn is not None and "features_only" in inspect.signature(fn).parameters:
        term = model_term(name, features_only=True, **kwargs)
    else:
        term = trunk(model_term(name, **kwargs), Field(chans))
    info = feature_info(term, Field(chans))
    n = len(info)
    idx = tuple(range(n)) if out_indices is None else tuple(i % n for i in out_indices)
    if any(not -n <= i < n for i in (out_indices or ())):
        raise IndexError(f"out_indices {out_indices} out of range for {n} stages of {name!r}: "
                         f"{[f['name'] for f in info]}")
    module = term.bind(Field(chans))
    if not isinstance(module, nn.Sequential):
        module = nn.Sequential(module)
    return FeaturePyramid(module, info, idx)
