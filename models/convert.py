"""State-dict converters from torchvision and timm checkpoints.

operad's ResNets and DenseNets register their parameterised layers in the
same order as torchvision's and timm's (ResNet: stem conv, BN, then per block
conv1, bn1, conv2, bn2[, conv3, bn3], downsample conv, BN, and the classifier;
DenseNet: conv0, norm0, per layer norm1, conv1, norm2, conv2, per transition
norm, conv, then norm5 and the classifier). A checkpoint converts by pairing
entries in order, checked tensor by tensor: the last name segment (``weight``,
``bias``, ``running_mean`` ...) and the shape must agree, otherwise the error
names the first pair that does not.

    import torchvision
    from operad.models import create_model
    from operad.models.convert import load_pretrained
    ref = torchvision.models.resnet50(weights="IMAGENET1K_V2")   # or a checkpoint on disk
    model = create_model("resnet50")
    load_pretrained(model, ref.state_dict())

MobileNetV2 (``mobilenetv2_100``) registers its layers in torchvision's order
too (stem conv, BN, per inverted residual the expansion, depthwise and
projection conv/BN pairs, the last 1x1 conv/BN and the classifier), so it
converts the same way.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Mapping

import torch
from torch import nn

__all__ = ["convert_state_dict", "load_pretrained", "SUPPORTED", "SOURCE_NAMES", "reference_model", "conversion_check"]

SUPPORTED = ("resnet18", "resnet34", "resnet50", "densenet121", "mobilenetv2_100")

_SKIP_SUFFIXES = ()


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def convert_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The checkpoint ``state_dict`` (torchvision/timm names) renamed to ``model``'s keys."""
    ours = list(model.state_dict().items())
    theirs = [(k, v) for k, v in state_dict.items() if not k.endswith(_SKIP_SUFFIXES)]
    if len(ours) != len(theirs):
        raise ValueError(f"the checkpoint has {len(theirs)} entries, the model {len(ours)}: they are not the same "
                         f"architecture (converters exist for {', '.join(SUPPORTED)}; check num_classes)")
    out = OrderedDict()
    for (k, v), (tk, tv) in zip(ours, theirs):
        if _kind(k) != _kind(tk) or tuple(v.shape) != tuple(tv.shape):
            raise ValueError(f"checkpoint entry {tk!r} {tuple(tv.shape)} does not match model entry {k!r} "
                             f"{tuple(v.shape)}: the layer orders differ (num_classes or the variant may be wrong)")
        out[k] = tv
    return out


def load_pretrained(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Convert and load a torchvision/timm checkpoint into ``model`` (strict); returns the model."""
    model.load_state_dict(convert_state_dict(model, state_dict))
    return model


# the same architectures under the source libraries' names
SOURCE_NAMES = {"torchvision": {"mobilenetv2_100": "mobilenet_v2"}, "timm": {}}


def reference_model(name: str, source: str) -> nn.Module:
    """A randomly initialised ``source`` (``"torchvision"`` or ``"timm"``) network of
    the architecture operad registers as ``name``; ImportError where that library does not import."""
    if source not in SOURCE_NAMES:
        raise ValueError(f"unknown source {source!r}: use 'torchvision' or 'timm'")
    if name not in SUPPORTED:
        raise ValueError(f"no converter for {name!r}; converters exist for {', '.join(SUPPORTED)}")
    theirs = SOURCE_NAMES[source].get(name, name)
    if source == "torchvision":
        import torchvision

        return getattr(torchvision.models, theirs)(weights=None)
    import timm

    return timm.create_model(theirs, pretrained=False)


def conversion_check(name: str, source: str, size: int = 64, seed: int = 0, device="cpu") -> Dict[str, float]:
    """Convert a random ``source`` checkpoint of ``name`` (non-trivial batch-norm
    statistics) and compare outputs with the source model on a random batch:
    ``{"max_abs_diff", "output_abs_max"}`` (the difference is about 1e-6 or 0 when
    the layer orders agree). ImportError where ``source`` does not import.

    >>> conversion_check("resnet18", "torchvision")["max_abs_diff"] < 1e-4   # doctest: +SKIP
    True
    """
    from operad.models import create_model

    torch.manual_seed(seed)
    ref = reference_model(name, source).eval()
    with torch.no_grad():
        for mod in ref.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    model = load_pretrained(create_model(name), ref.state_dict()).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    ref, model, x = ref.to(device), model.to(device), x.to(device)
    with torch.no_grad():
        want = ref(x)
        return {"max_abs_diff": float((model(x) - want).abs().max()), "output_abs_max": float(want.abs().max())}
