"""The model registry: ``create_model(name, **overrides)`` and ``list_models``.

A model is a function that returns a term; registering it makes it
available by name, bound to its input field::

    @register_model
    def tiny_cnn(num_classes=10, in_chans=3, width=16):
        return (ops.conv(width) >> ops.bn() >> ops.relu() >> ops.global_pool()
                >> ops.linear(num_classes))

    model = create_model("tiny_cnn", num_classes=100)

Operator overrides go through the algebra's substitution rewrite:
``create_model("resnet20", act=ops.gelu())`` swaps every activation,
``conv=lambda c: ...`` every convolution, ``norm=...`` every batch norm.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from torch import nn

from ..operators.activation import ACTIVATIONS
from ..operators.algebra.errors import OpArgTypeError, UnknownName
from ..operators.algebra.field import Field
from ..operators.rewrites import substitute
from ..operators.algebra.term import Term

__all__ = ["register_model", "create_model", "model_term", "list_models", "model_info", "MODELS"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., Term]
    input_size: tuple
    task: str  # "classification" or "segmentation"
    tags: tuple


MODELS: Dict[str, ModelEntry] = {}

_ROLES = {
    "act": lambda t: t.family in ACTIVATIONS,
    "conv": "conv",
    "norm": "bn",
}


def register_model(fn=None, *, name: Optional[str] = None, input_size=(3, 32, 32),
                   task: str = "classification", tags=()):
    """Register a function returning a term as a named model."""

    def deco(f):
        key = name or f.__name__
        if key in MODELS and MODELS[key].fn is not f:
            raise ValueError(f"model {key!r} is registered twice ({MODELS[key].fn.__module__} and {f.__module__})")
        MODELS[key] = ModelEntry(key, f, tuple(input_size), task, tuple(tags))
        return f

    return deco(fn) if fn is not None else deco


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownName(f"unknown model {name!r}{hint} (operad.models.list_models() lists them)")
    return MODELS[name]


def model_term(name: str, **kwargs) -> Term:
    """The term of a registered model, with overrides applied (not bound)."""
    entry = _entry(name)
    roles = {k: kwargs.pop(k) for k in list(kwargs) if k in _ROLES and k not in
             inspect.signature(entry.fn).parameters}
    sig = inspect.signature(entry.fn)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [k for k in kwargs if k not in sig.parameters and not accepts_any]
    if unknown:
        valid = [p for p in sig.parameters] + list(_ROLES)
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise OpArgTypeError(f"model {name!r} has no option {unknown[0]!r}{hint} (options: {', '.join(valid)})")
    term = entry.fn(**kwargs)
    for role, repl in roles.items():
        term = substitute(term, _ROLES[role], repl)
    return term


def create_model(name: str, num_classes: Optional[int] = None, in_chans: Optional[int] = None,
                 checkpoint_path: Optional[str] = None, **overrides) -> nn.Module:
    """Build a registered model: its term, bound to ``Field(in_chans)``.

    timm's conventions: ``checkpoint_path`` loads a ``.safetensors`` or ``.pt`` file (names and
    shapes checked); ``features_only=True`` returns a feature pyramid whose forward gives
    the stage outputs listed in ``out_indices`` (default: every stage, as timm;
    :func:`operad.models.features.create_features`);
    the model has ``default_cfg``, ``feature_info``, ``forward_features``, ``forward_head``,
    ``reset_classifier`` and ``get_classifier`` (:mod:`operad.models.hub`).

    >>> from operad.models import create_model, list_models
    >>> 'resnet20' in list_models('resnet*') or True
    True
    """
    entry = _entry(name)
    if overrides.get("features_only"):  # timm: every feature level unless out_indices picks some
        from .hub import create_pyramid

        return create_pyramid(name, in_chans, checkpoint_path, **overrides)
    overrides.pop("out_indices", None)
    create_kwargs = dict(overrides)
    sig = inspect.signature(entry.fn).parameters
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if in_chans is not None:
        overrides["in_chans"] = in_chans
    term = model_term(name, **overrides)
    chans = overrides.get("in_chans", sig["in_chans"].default if "in_chans" in sig else entry.input_size[0])
    model = term.bind(Field(chans))
    model.model_name = name
    model.default_input_size = (chans,) + tuple(entry.input_size[1:])
    from .hub import attach_timm, load_weights

    n = overrides.get("num_classes", sig["num_classes"].default if "num_classes" in sig else None)
    attach_timm(model, entry, None if overrides.get("features_only") else n, chans, create_kwargs)
    return load_weights(model, checkpoint_path) if checkpoint_path else model


def list_models(pattern: str = "*", tags=None, exclude_filters=()) -> List[str]:
    """Registered model names matching a glob pattern (or a list of them), sorted; ``tags``
    keeps models carrying all the given tags, ``exclude_filters`` drops glob matches.

    >>> list_models("resnet*", tags="cifar")[:2]
    ['resnet110', 'resnet20']
    """
    pats = [pattern] if isinstance(pattern, str) else list(pattern)
    want = {tags} if isinstance(tags, str) else set(tags or ())
    excl = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
    return sorted(n for n, e in MODELS.items() if any(fnmatch.fnmatch(n, p) for p in pats)
                  and want <= set(e.tags) and not any(fnmatch.fnmatch(n, x) for x in excl))


def model_info(name: str) -> ModelEntry:
    return _entry(name)
