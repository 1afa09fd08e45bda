"""Weights files and timm's conventions for registered models.

- :func:`save_safetensors` / :func:`load_weights`: state dicts as safetensors (or
  ``.pt`` read with ``weights_only=True``); loading checks names and shapes and lists
  every mismatch. ``create_model(name, checkpoint_path=...)`` uses it.
- :func:`default_cfg`: a model's input size, mean/std, interpolation and crop for
  evaluation, number of classes, first conv and classifier (timm's keys).
- :func:`attach_timm`: ``forward_features``, ``forward_head(x, pre_logits=False)``,
  ``reset_classifier(n)``, ``get_classifier()``, ``feature_info`` and ``default_cfg``
  on the module ``create_model`` returns.
- timm's names for the same architectures are registered as aliases
  (``skresnext50_32x4d`` is operad's ``sknet50``).

>>> import torch
>>> from operad.models import create_model
>>> m = create_model("resnet20", num_classes=7)
>>> m.default_cfg["input_size"], m.default_cfg["num_classes"], m.get_classifier().out_features
((3, 32, 32), 7, 7)
>>> m.forward_head(m.forward_features(torch.randn(2, 3, 32, 32)), pre_logits=True).shape
torch.Size([2, 64])
>>> m.reset_classifier(3); m(torch.randn(1, 3, 32, 32)).shape
torch.Size([1, 3])
"""
from __future__ import annotations

import os
import types
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from . import sknet as _sknet  # noqa: F401  (registers sknet50 before its alias)
from ..operators.algebra.combinators import SeqModule
from .features import feature_info as _feature_info
from .features import forward_features as _features_forward
from .registry import MODELS, ModelEntry

__all__ = ["save_safetensors", "load_state_file", "load_weights", "default_cfg", "attach_timm", "TIMM_ALIASES",
           "classifier_path", "TimmSeqModule", "create_pyramid"]

# statistics the training data are normalised with (as operad.experiments.data.MEAN_STD)
_CIFAR = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_GRAY = ((0.5,), (0.5,))

# timm's name -> operad's name, for the same architecture
TIMM_ALIASES = {"skresnext50_32x4d": "sknet50"}


# ----------------------------------------------------------------------------- weights files

def save_safetensors(model: nn.Module, path: str, metadata: Optional[Dict[str, str]] = None) -> str:
    """Write ``model.state_dict()`` (or a state dict) to ``path`` as safetensors.

    >>> import tempfile, os; from operad.models import create_model
    >>> p = save_safetensors(create_model("resnet20"), os.path.join(tempfile.mkdtemp(), "w.safetensors"))
    >>> load_weights(create_model("resnet20"), p).default_cfg["architecture"]
    'resnet20'
    """
    from safetensors.torch import save_file

    sd = model.state_dict() if isinstance(model, nn.Module) else model
    seen, out = set(), OrderedDict()
    for k, v in sd.items():
        t = v.detach().cpu().contiguous()
        if t.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    meta = {"format": "pt"}
    if isinstance(model, nn.Module) and getattr(model, "model_name", None):
        meta["model"] = model.model_name
    meta.update(metadata or {})
    save_file(out, path, metadata=meta)
    return path


def load_state_file(path: str, use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """The state dict in ``path``: safetensors, or a ``.pt`` file read with ``weights_only=True``
    (a plain state dict, or a run's ``final.pt``/checkpoint, whose EMA weights are preferred)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ck, dict) and any(k in ck for k in ("model", "ema", "state_dict")) and \
            not all(torch.is_tensor(v) for v in ck.values()):
        sd = ck.get("ema") if use_ema and ck.get("ema") is not None else ck.get("model", ck.get("state_dict"))
        if sd is None:
            raise ValueError(f"{path}: a checkpoint without 'model', 'ema' or 'state_dict' weights")
        return sd
    if not isinstance(ck, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(ck).__name__}")
    return dict(ck)


def _mismatches(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> List[str]:
    ours = model.state_dict()
    lines = [f"missing from the file: {k} {tuple(v.shape)}" for k, v in ours.items() if k not in sd]
    lines += [f"not in the model: {k} {tuple(v.shape)}" for k, v in sd.items() if k not in ours]
    lines += [f"shape of {k}: file {tuple(sd[k].shape)}, model {tuple(v.shape)}"
              for k, v in ours.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    return lines


def load_weights(model: nn.Module, source, use_ema: bool = True) -> nn.Module:
    """Load a state dict or weights file (``.safetensors`` or ``.pt``) into ``model``,
    after checking every name and shape; the error lists all mismatches."""
    sd = load_state_file(str(source), use_ema) if isinstance(source, (str, os.PathLike)) else source
    bad = _mismatches(model, sd)
    if bad:
        name = getattr(model, "model_name", type(model).__name__)
        shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise ValueError(f"the weights do not fit {name} ({len(bad)} mismatches; check the model name, "
                         f"num_classes and in_chans):\n  {shown}")
    model.load_state_dict(sd)
    return model


# ----------------------------------------------------------------------------- default configuration

def _head_leaves(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The head's steps, nested sequences flattened: ``[(path, module)]``."""
    head = getattr(model, "head", None)
    if head is None:
        return []

    def walk(prefix, m):
        if isinstance(m, nn.Sequential):
            for k, c in m.named_children():
                yield from walk(f"{prefix}.{k}", c)
        else:
            yield prefix, m
    return list(walk("head", head))


def _classifier_index(leaves: List[Tuple[str, nn.Module]]) -> Optional[int]:
    """The last head step with a parameter of 2 or more dimensions (a linear, conv or harmonic
    conv classifier, not a norm or a scale)."""
    for i in range(len(leaves) - 1, -1, -1):
        if _weighted(leaves[i][1], 2):
            return i
    return None


def _weighted(m: nn.Module, dim: int) -> bool:
    return any(p.dim() >= dim for p in m.parameters())


def classifier_path(model: nn.Module) -> Optional[str]:
    """Path of the classifier layer (``"head.1"``), or None for a model without a head."""
    leaves = _head_leaves(model)
    i = _classifier_index(leaves)
    return None if i is None else leaves[i][0]


def default_cfg(entry: ModelEntry, num_classes: Optional[int], in_chans: int,
                model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """timm-style default configuration of a registered model."""
    _, h, w = entry.input_size
    if in_chans == 1 or entry.input_size[0] == 1:
        mean, std = _GRAY
    elif "cifar" in entry.tags or (h, w) == (32, 32):
        mean, std = _CIFAR
    else:
        mean, std = _IMAGENET
    if in_chans != len(mean):
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    imagenet = (h, w) == (224, 224)
    first_conv = None
    if model is not None:
        first_conv = next((k for k, m in model.named_modules() if any(
            p.dim() >= 3 for p in m.parameters(recurse=False))), None)  # nn.Conv2d or an operad conv (harmonic ...)
    return {"architecture": entry.name, "task": entry.task, "input_size": (in_chans, h, w),
            "mean": tuple(mean), "std": tuple(std), "interpolation": "bilinear",
            "crop_pct": 0.875 if imagenet else 1.0, "crop_mode": "center", "num_classes": num_classes,
            "first_conv": first_conv, "classifier": classifier_path(model) if model is not None else None,
            "tags": entry.tags}


# ----------------------------------------------------------------------------- timm's methods

class _PreLogits(nn.Module):
    """A head without its classifier (``reset_classifier(0)``): the steps before the
    classifier, then a global average over any spatial dimensions."""

    def __init__(self, steps: List[nn.Module]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for s in self.steps:
            x = s(x)
        return x.flatten(2).mean(-1) if x.dim() > 2 else x


def _forward_head(self: nn.Module, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
    """The head on features from ``forward_features``; ``pre_logits=True`` stops before the
    classifier layer (pooled to ``(N, C)`` where still spatial)."""
    if isinstance(getattr(self, "head", None), _PreLogits):
        return self.head(x)
    leaves = _head_leaves(self)
    if not leaves:
        raise ValueError(f"{getattr(self, 'model_name', 'this model')} has no 'head' (built with features_only?)")
    i = _classifier_index(leaves) if pre_logits else len(leaves)
    if i is None:
        raise ValueError(f"{self.model_name}: no classifier layer found in the head, so no pre-logits")
    for _, m in leaves[:i]:
        x = m(x)
    return x.flatten(2).mean(-1) if pre_logits and x.dim() > 2 else x


def _forward_features(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network up to (not including) its head."""
    return _features_forward(self, x)


def _get_classifier(self: nn.Module) -> nn.Module:
    """The classifier layer (timm's ``get_classifier``)."""
    leaves = _head_leaves(self)
    i = _classifier_index(leaves)
    if i is None:
        return nn.Identity()
    return leaves[i][1]


def _reset_classifier(self: nn.Module, num_classes: int) -> None:
    """A new classifier for ``num_classes`` (freshly initialised; hidden head layers keep their
    weights); ``0`` leaves the pre-logits features as the output."""
    from .registry import create_model

    leaves = _head_leaves(self)
    if num_classes == 0:
        i = _classifier_index(leaves)
        if i is None:
            raise ValueError(f"{self.model_name}: no classifier layer found in the head")
        self.head = _PreLogits([m for _, m in leaves[:i]])
    else:
        new = create_model(self.model_name, num_classes=num_classes, in_chans=self.default_cfg["input_size"][0],
                           **self._create_kwargs)
        old = self.head.state_dict() if hasattr(self, "head") else {}
        fresh = new.head.state_dict()
        cls = (classifier_path(new) or "head.")[len("head."):]
        keep = {k: v for k, v in old.items() if k in fresh and v.shape == fresh[k].shape
                and not k.startswith(cls + ".")}
        new.head.load_state_dict(keep, strict=False)
        ref = next(p for p in self.parameters() if p.is_floating_point())
        self.head = new.head.to(device=ref.device, dtype=ref.dtype)
        for a in ("term", "out_type"):
            if hasattr(new, a):
                setattr(self, a, getattr(new, a))
    self.num_classes = num_classes
    self.default_cfg = dict(self.default_cfg, num_classes=num_classes, classifier=classifier_path(self))
    self.pretrained_cfg = self.default_cfg


def _timm_feature_info(model: nn.Module) -> List[Dict[str, Any]]:
    """:func:`operad.models.features.feature_info` plus timm's keys: ``num_chs`` (tensor
    channels: twice the complex channels of harmonic fields) and ``module``."""
    from .features import _items, trunk

    if not hasattr(model, "term"):
        return []
    try:
        info = _feature_info(model.term, model.in_type)
        t, items = model.in_type, _items(trunk(model.term, model.in_type))
    except (ValueError, AttributeError):
        return []
    out = []
    for f, it in zip(info, items):
        t = it._infer(t)
        out.append(dict(f, num_chs=int(t.tensor_channels), module=f["name"]))
    return out


def attach_timm(model: nn.Module, entry: ModelEntry, num_classes: Optional[int], in_chans: int,
                create_kwargs: Dict[str, Any]) -> nn.Module:
    """Give a bound model timm's attributes and methods (see the module docstring)."""
    model._create_kwargs = {k: v for k, v in create_kwargs.items() if k not in ("num_classes", "in_chans")}
    model.num_classes = num_classes
    model.default_cfg = default_cfg(entry, num_classes, in_chans, model)
    model.pretrained_cfg = model.default_cfg
    model.feature_info = _timm_feature_info(model)
    model.num_features = model.feature_info[-1]["num_chs"] if model.feature_info else None
    if type(model) is SeqModule:  # every registered network: a class, so the model pickles and deep-copies
        model.__class__ = TimmSeqModule
    else:  # pragma: no cover - a root of another kind: bound methods (deepcopy works, pickle does not)
        for fn in (_forward_features, _forward_head, _get_classifier, _reset_classifier):
            setattr(model, fn.__name__[1:], types.MethodType(fn, model))
    return model


class TimmSeqModule(SeqModule):
    """A bound sequence with timm's methods: what ``create_model`` returns."""

    forward_features = _forward_features
    forward_head = _forward_head
    get_classifier = _get_classifier
    reset_classifier = _reset_classifier


def _register_aliases() -> None:
    for alias, target in TIMM_ALIASES.items():
        e = MODELS[target]
        if alias not in MODELS:
            MODELS[alias] = ModelEntry(alias, e.fn, e.input_size, e.task, e.tags + ("timm_alias",))


_register_aliases()


def create_pyramid(name: str, in_chans: Optional[int], checkpoint_path: Optional[str], **overrides) -> nn.Module:
    """``create_model(name, features_only=True[, out_indices=...])``: a feature pyramid whose
    forward returns the listed stages (every stage without ``out_indices``); a classifier's weights file loads into its trunk
    (the head's entries are left out, every other name and shape is checked)."""
    from .features import create_features

    overrides.pop("features_only")
    idx = overrides.pop("out_indices", None)
    overrides.pop("num_classes", None)
    pyr = create_features(name, out_indices=idx, in_chans=in_chans, **overrides)
    if checkpoint_path:
        sd = {k: v for k, v in load_state_file(checkpoint_path).items() if not k.startswith("head.")}
        load_weights(pyr.trunk, sd)
    return pyr
