"""Binary and quantized networks (XNOR-Net and BWN, Rastegari et al. 2016;
BinaryNet and QNN, Hubara et al. 2016).

The float layouts are ordinary expressions (``nin_cifar``, ``vgg_cifar``,
``alexnet``); every binary or quantized network is registered *by rewriting*
a float one with :func:`operad.rewrite.binarize` or
:func:`operad.rewrite.quantize` (first and last layer kept at full precision,
as in the papers), never by copying it:

==================  ============================================================
``*_bwn``           binary weights (``alpha * sign(W)``), float activations
``*_xnor``          binary weights and inputs, blocks BN -> sign -> conv -> pool
``*_qnn``           QNN: 1-bit weights, 2-bit activations
``bnn_vgg_cifar``   BinaryNet's CIFAR-10 net, 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10
==================  ============================================================

>>> import operad
>>> from operad import Field
>>> f = operad.cost(nin_cifar(), Field(3), size=(32, 32))
>>> x = operad.cost(nin_cifar_xnor(), Field(3), size=(32, 32))
>>> round(f.bytes / x.bytes, 1), round(f.bops / x.bops, 1)
(19.4, 14.8)
"""
from __future__ import annotations

from .. import ops
from ..operators.algebra.term import Term
from ..operators.rewrites import binarize, quantize
from .registry import register_model
from .resnet import chain, resnet18, resnet20

__all__ = ["nin_cifar", "vgg_cifar", "bnn_vgg_cifar", "alexnet"]

_CIFAR = dict(input_size=(3, 32, 32))


def _cbr(out: int, k: int = 3, stride: int = 1, padding="same") -> Term:
    return ops.conv(out, k=k, stride=stride, padding=padding, bias=False) >> ops.bn() >> ops.relu()


@register_model(**_CIFAR, tags=("nin", "cifar"))
def nin_cifar(num_classes: int = 10, in_chans: int = 3, drop: float = 0.0) -> Term:
    """Network-in-Network for CIFAR-10 as XNOR-Net's CIFAR results use it (the
    reference reimplementation): 192-160-96 / 192-192-192 / 192-192-classes,
    5x5, 5x5 and 3x3 convolutions each followed by 1x1 ones; 0.97M parameters."""
    d = [ops.dropout(drop)] if drop else []
    return chain([
        _cbr(192, 5), _cbr(160, 1), _cbr(96, 1), ops.max_pool(3, stride=2, padding=1),
        *d, _cbr(192, 5), _cbr(192, 1), _cbr(192, 1), ops.avg_pool(3, stride=2, padding=1),
        *d, _cbr(192, 3), _cbr(192, 1),
        (ops.conv(num_classes, k=1) >> ops.global_pool()).named("head")])


@register_model(**_CIFAR, tags=("vgg", "cifar"))
def vgg_cifar(num_classes: int = 10, in_chans: int = 3) -> Term:
    """BinaryNet's CIFAR-10 layout at full precision: 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10
    (every layer with batch norm; FC as linear layers on the flattened 4x4x512 map)."""
    items = []
    for w in (128, 256, 512):
        items += [_cbr(w), ops.conv(w, bias=False), ops.max_pool(2), ops.bn(), ops.relu()]
    head = chain([ops.rearrange("b c h w -> b (c h w)", h=4, w=4),
                  ops.linear(1024, bias=False), ops.bn(), ops.relu(),
                  ops.linear(1024, bias=False), ops.bn(), ops.relu(),
                  ops.linear(num_classes)])
    return chain(items + [head.named("head")])


@register_model(**_CIFAR, tags=("vgg", "cifar", "binary"))
def bnn_vgg_cifar(num_classes: int = 10, in_chans: int = 3) -> Term:
    """BinaryNet on CIFAR-10 (Hubara et al. 2016): :func:`vgg_cifar` binarized,
    weights and activations (``binarize(..., "xnor")``), first and last layer float.
    The papers report 10.2-11.4% test error."""
    return binarize(vgg_cifar(num_classes, in_chans), "xnor")


@register_model(input_size=(3, 224, 224), tags=("alexnet", "imagenet"))
def alexnet(num_classes: int = 1000, in_chans: int = 3, drop: float = 0.5) -> Term:
    """AlexNet in the layout BWN/XNOR-Net binarize (with batch norm):
    96C11/4-MP3/2-256C5-MP3/2-384C3-384C3-256C3-MP3/2-4096FC-4096FC-classes,
    a 6x6 adaptive average pool before the FC layers (as torchvision)."""
    d = [ops.dropout(drop)] if drop else []
    return chain([
        _cbr(96, 11, 4, 2), ops.max_pool(3, stride=2), _cbr(256, 5), ops.max_pool(3, stride=2),
        _cbr(384), _cbr(384), _cbr(256), ops.max_pool(3, stride=2), ops.adaptive_pool(6),
        chain([ops.rearrange("b c h w -> b (c h w)", h=6, w=6),
               *d, ops.linear(4096, bias=False), ops.bn(), ops.relu(),
               *d, ops.linear(4096, bias=False), ops.bn(), ops.relu(),
               ops.linear(num_classes)]).named("head")])


def _register_variants(base, name: str, input_size, tags) -> None:
    """``{name}_bwn``, ``{name}_xnor`` and ``{name}_qnn``: ``base`` rewritten."""
    kinds = {
        "bwn": (lambda t: binarize(t, "bwn"), "binary weights (BWN)"),
        "xnor": (lambda t: binarize(t, "xnor"), "binary weights and inputs (XNOR-Net)"),
        "qnn": (lambda t: quantize(t, w_bits=1, a_bits=2), "1-bit weights and 2-bit activations (QNN)"),
    }
    for kind, (rewrite, what) in kinds.items():
        fn = _variant(base, rewrite, 10 if input_size[1] == 32 else 1000)
        fn.__name__ = fn.__qualname__ = f"{name}_{kind}"
        fn.__doc__ = f"{name} with {what}: ``{base.__name__}`` rewritten, first and last layer float."
        register_model(fn, input_size=input_size, tags=tags + ("binary" if kind != "qnn" else "quantized",))
        globals()[fn.__name__] = fn
        __all__.append(fn.__name__)


def _variant(base, rewrite, classes: int):
    def fn(num_classes: int = classes, in_chans: int = 3) -> Term:
        return rewrite(base(num_classes=num_classes, in_chans=in_chans))
    fn.__module__ = __name__
    return fn


for _base, _name, _size, _tags in ((nin_cifar, "nin_cifar", (3, 32, 32), ("nin", "cifar")),
                                   (resnet20, "resnet20", (3, 32, 32), ("resnet", "cifar")),
                                   (resnet18, "resnet18", (3, 224, 224), ("resnet", "imagenet")),
                                   (alexnet, "alexnet", (3, 224, 224), ("alexnet", "imagenet"))):
    _register_variants(_base, _name, _size, _tags)
