"""Segmentation heads on any registered backbone: DeepLabv3 (ASPP), LR-ASPP and FCN.

A backbone is the trunk of a registered classifier: its term with the
classifier removed (``features_only=True`` where the model accepts it, else
:func:`operad.models.features.trunk`). Its named top-level stages give the
feature pyramid (:mod:`operad.models.features`): :func:`pyramid` lists
``(name, channels, stride)`` and :func:`split_at_stride` cuts the trunk after
the last stage at a given stride (LR-ASPP's low-level features).

Each head ends in ``resize_to_input`` (bilinear to the image size); the ASPP
image-pooling branch is ``image_pool``. Registered for CamVid: 11 classes,
input (3, 360, 480), ``task="segmentation"``.
"""
from __future__ import annotations

import inspect
from typing import List, Sequence, Tuple

from .. import ops
from ..operators.algebra.combinators import Seq
from ..operators.algebra.field import Field
from ..operators.algebra.term import Term
from .features import feature_info, trunk
from .registry import MODELS, model_term, register_model

__all__ = ["backbone", "pyramid", "split_at_stride", "aspp", "deeplabv3", "lraspp", "fcn"]

def _items(term: Term) -> Tuple[Term, ...]:
    return term.items if isinstance(term, Seq) else (term,)


def _chain(items):
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


def backbone(name: str, in_chans: int = 3, **kwargs) -> Term:
    """The trunk of registered model ``name`` (no pooling or classifier), as
    :func:`operad.models.features.trunk` defines it."""
    fn = MODELS[name].fn if name in MODELS else None
    if fn is not None and "features_only" in inspect.signature(fn).parameters:
        return model_term(name, features_only=True, **kwargs)
    return trunk(model_term(name, **kwargs), Field(in_chans))


def pyramid(trunk_term: Term, in_type: Field = Field(3)) -> List[Tuple[str, int, int]]:
    """``(name, channels, stride)`` after each top-level item of a trunk
    (:func:`operad.models.features.feature_info`)."""
    return [(f["name"], f["channels"], f["reduction"]) for f in feature_info(trunk_term, in_type)]


def split_at_stride(trunk: Term, stride: int, in_type: Field = Field(3)) -> Tuple[Term, Term, int]:
    """``(low, high, low_channels)``: the trunk cut after the last item at ``stride``."""
    items = _items(trunk)
    pyr = pyramid(trunk, in_type)
    cut = max((i for i, (_, _, s) in enumerate(pyr) if s == stride), default=None)
    if cut is None or cut == len(items) - 1:
        raise ValueError(f"the trunk has no stage boundary at stride {stride} followed by more stages "
                         f"(pyramid: {pyr})")
    return _chain(items[:cut + 1]), _chain(items[cut + 1:]), pyr[cut][1]


def _cbr(out: int, k: int = 1, dilation: int = 1) -> Term:
    return ops.conv(out, k=k, dilation=dilation, bias=False) >> ops.bn() >> ops.relu()


def aspp(out: int = 256, rates: Sequence[int] = (6, 12, 18), drop: float = 0.1) -> Term:
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, and the image-pooling
    branch, concatenated and projected to ``out`` channels."""
    branches = [_cbr(out)] + [_cbr(out, 3, r) for r in rates]
    branches.append(ops.image_pool(ops.linear(out, bias=False) >> ops.bn() >> ops.relu()))
    return ops.concat(*branches) >> _cbr(out) >> ops.dropout(drop)


def deeplabv3(trunk: Term, num_classes: int = 11, rates: Sequence[int] = (6, 12, 18), channels: int = 256) -> Term:
    """DeepLabv3: trunk >> ASPP >> 3x3 conv-BN-ReLU >> 1x1 classifier, resized to the input."""
    head = aspp(channels, rates) >> _cbr(channels, 3) >> ops.conv(num_classes, k=1)
    return ops.resize_to_input(trunk >> head)


def lraspp(trunk: Term, num_classes: int = 11, low_stride: int = 8, inter: int = 128,
           in_type: Field = Field(3)) -> Term:
    """LR-ASPP (MobileNetV3 paper): on the high-level features, 1x1 conv-BN-ReLU gated by a
    global-pool -> 1x1 -> sigmoid branch, resized to the low-level (``low_stride``) size and
    classified, plus a classifier on the low-level features; resized to the input."""
    low, high, _ = split_at_stride(trunk, low_stride, in_type)
    scale = ops.global_pool() >> ops.linear(inter, bias=False) >> ops.sigmoid()
    high_path = ops.resize_to_input(high >> ops.gate(scale, _cbr(inter))) >> ops.conv(num_classes, k=1)
    return ops.resize_to_input(low >> (high_path + ops.conv(num_classes, k=1)))


def fcn(trunk: Term, num_classes: int = 11, in_type: Field = Field(3), drop: float = 0.1) -> Term:
    """FCN head: 3x3 conv to C/4, BN, ReLU, dropout, 1x1 classifier, resized to the input."""
    c = trunk._infer(in_type).channels
    head = _cbr(max(c // 4, 1), 3) >> ops.dropout(drop) >> ops.conv(num_classes, k=1)
    return ops.resize_to_input(trunk >> head)


_SEG = dict(input_size=(3, 360, 480), task="segmentation", tags=("segmentation", "zoo2"))


@register_model(**_SEG)
def deeplabv3_mobilenetv2(num_classes: int = 11, in_chans: int = 3, output_stride: int = 16, width: float = 1.0) -> Term:
    """Mobile DeepLabv3: MobileNetV2 (dilated to output stride 16 or 8) + ASPP (rates 6/12/18, doubled at 8)."""
    from .mobilenet import mobilenetv2
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    trunk = mobilenetv2(width, in_chans=in_chans, output_stride=output_stride, features_only=True)
    return deeplabv3(trunk, num_classes, rates)


@register_model(**_SEG)
def lraspp_mobilenetv2(num_classes: int = 11, in_chans: int = 3, width: float = 1.0) -> Term:
    """LR-ASPP on MobileNetV2 (low level: stride 8; high level: output stride 16, dilated)."""
    from .mobilenet import mobilenetv2
    trunk = mobilenetv2(width, in_chans=in_chans, output_stride=16, features_only=True)
    return lraspp(trunk, num_classes, 8, in_type=Field(in_chans))


@register_model(**_SEG)
def fcn_mobilenetv2(num_classes: int = 11, in_chans: int = 3, width: float = 1.0) -> Term:
    """FCN head on MobileNetV2 (output stride 16, dilated)."""
    from .mobilenet import mobilenetv2
    trunk = mobilenetv2(width, in_chans=in_chans, output_stride=16, features_only=True)
    return fcn(trunk, num_classes, Field(in_chans))


@register_model(**_SEG)
def fcn_resnet18(num_classes: int = 11, in_chans: int = 3) -> Term:
    """FCN head on the ResNet-18 trunk (needs ``resnet18`` in the registry)."""
    if "resnet18" not in MODELS:
        raise KeyError("fcn_resnet18 needs the registered model 'resnet18' (models/resnet.py)")
    return fcn(backbone("resnet18", in_chans), num_classes, Field(in_chans))
