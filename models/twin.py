"""Twin networks (Leterme et al.): the first layer split into freely trained
channels and wavelet channels computed by CMod (or by its RMax baseline).

A standard network's first stage (conv + BN + ReLU + max-pool at total stride
``2**J``) becomes ``concat(free, wavelet)``: ``free`` is the same stage with
fewer output channels, ``wavelet`` is ``ops.cmod(wavelet, levels=J, mix=...)``
(``first="rmax"`` gives the RMax baseline with the same filters;
``first="conv"`` gives the standard network itself). The rest is unchanged.

Exact parameter counts of the first layer (``in`` input channels, ``C`` outputs
of which ``Cw`` wavelet ones, ``k`` the first kernel size, ``M`` colour mixtures):

- standard (conv without bias + BN): ``C (in k**2 + 2)``
- twin, CMod or RMax: ``(C - Cw)(in k**2 + 2) + in M + 2 Cw``

so a twin saves ``Cw (in k**2 + 2) - in M - 2 Cw = Cw in k**2 - in M`` parameters.
AlexNet's first conv has a bias and no BN: standard ``C (in k**2 + 1)``, twin
``(C - Cw)(in k**2 + 1) + in M + 2 Cw`` (the CMod path keeps its BN).
See :func:`first_layer_params`, which ``tests/test_twin.py`` checks against the
bound models.

>>> from operad.models import create_model
>>> create_model("twin_resnet18_cifar", width=16).stem.out_type
Field(16)
"""
from __future__ import annotations

from typing import Callable, Optional

from .. import ops
from ..operators.algebra.term import Term
from .registry import register_model
from .resnet import conv_bn, resnet

__all__ = ["twin_stem", "first_layer_params", "twin_resnet", "twin_alexnet_term"]

_FIRST = ("cmod", "rmax", "conv")


def twin_stem(out: int, free: Callable[[int], Term], first: str = "cmod", wavelet: int = 32, levels: int = 2,
              mix: int = 1, filters: str = "qshift_a") -> Term:
    """``concat(free(out - wavelet), cmod(wavelet, levels, mix))`` (or RMax, or
    ``free(out)`` alone for ``first="conv"``). ``free(c)`` must reach stride ``2**levels``."""
    if first not in _FIRST:
        raise ValueError(f"twin first layer must be one of {_FIRST}; got {first!r}")
    if first == "conv" or wavelet == 0:
        return free(out)
    if not 0 < wavelet <= out:
        raise ValueError(f"twin wavelet channels must be in 1..{out}; got {wavelet}")
    block = ops.cmod if first == "cmod" else ops.rmax
    wav = block(wavelet, levels=levels, filters=filters, mix=mix)
    return wav if wavelet == out else ops.concat(free(out - wavelet), wav)


def first_layer_params(out: int, wavelet: int, k: int, in_chans: int = 3, mix: int = 1, bias: bool = False,
                       norm: bool = True) -> int:
    """Exact parameters of a (twin) first layer: ``wavelet=0`` is the standard one."""
    free = out - wavelet
    p = free * (in_chans * k * k + (2 if norm else 0) + (1 if bias else 0))
    if wavelet:
        p += in_chans * mix + 2 * wavelet
    return p


# ----------------------------------------------------------------------------- ResNets
def _imagenet_free(c: int) -> Term:
    return conv_bn(c, 7, 2) >> ops.max_pool(3, stride=2, padding=1)


def _cifar_free(c: int) -> Term:
    return conv_bn(c, 3, 1) >> ops.max_pool(3, stride=2, padding=1)


def twin_resnet(layers, num_classes: int = 1000, in_chans: int = 3, first: str = "cmod", wavelet: int = 32,
                mix: int = 2, levels: int = 2, filters: str = "qshift_a", cifar: bool = False, width: int = 64,
                features_only: bool = False) -> Term:
    """A twin ResNet (basic blocks, ``layers`` per stage, widths ``width * (1, 2, 4, 8)``).

    ImageNet layout: free path 7x7/2 conv-BN-ReLU + 3x3/2 max-pool, wavelet
    path CMod at J = 2 (stride 4). ``cifar=True``: free path 3x3 conv-BN-ReLU +
    3x3/2 max-pool, wavelet path CMod at J = 1 (stride 2), for 32x32 inputs.
    """
    widths = tuple(width * m for m in (1, 2, 4, 8))
    stem = twin_stem(widths[0], _cifar_free if cifar else _imagenet_free, first, wavelet, levels, mix, filters)
    return resnet(layers, num_classes, in_chans, widths=widths, stem=stem, max_pool=False,
                  features_only=features_only)


def _imagenet(layers, first, doc):
    def fn(num_classes: int = 1000, in_chans: int = 3, first: str = first, wavelet: int = 32, mix: int = 2,
           levels: int = 2, filters: str = "qshift_a", width: int = 64, features_only: bool = False) -> Term:
        return twin_resnet(layers, num_classes, in_chans, first, wavelet, mix, levels, filters, False, width,
                           features_only)
    fn.__doc__ = doc
    return fn


def _cifar(layers, first, doc):
    def fn(num_classes: int = 10, in_chans: int = 3, first: str = first, wavelet: Optional[int] = None,
           mix: Optional[int] = None, levels: int = 1, filters: str = "qshift_a", width: int = 64,
           features_only: bool = False) -> Term:
        mix = mix or max(1, width // 32)
        wavelet = wavelet if wavelet is not None else 6 * mix  # the 6 oriented packets at J = 1, per mixture
        return twin_resnet(layers, num_classes, in_chans, first, wavelet, mix, levels, filters, True, width,
                           features_only)
    fn.__doc__ = doc
    return fn


_IMNET = dict(input_size=(3, 224, 224), tags=("twin", "resnet", "imagenet"))
_CIFAR = dict(input_size=(3, 32, 32), tags=("twin", "resnet", "cifar"))

for _name, _layers in (("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))):
    for _first, _suffix in (("cmod", ""), ("rmax", "_rmax")):
        _what = "CMod wavelet channels" if _first == "cmod" else "RMax baseline channels (same filters)"
        _f = _imagenet(_layers, _first, f"Twin {_name}: 64 first-layer channels, 32 of them {_what} (J=2). "
                                        f"first='conv' gives the standard {_name}.")
        _f.__name__ = _f.__qualname__ = f"twin_{_name}{_suffix}"
        register_model(_f, **_IMNET)
        globals()[_f.__name__] = _f
        _g = _cifar(_layers, _first, f"Twin {_name} for 32x32 inputs: stride-2 first stage, "
                                     f"6 * mix {_what} (J=1). first='conv' gives its standard counterpart.")
        _g.__name__ = _g.__qualname__ = f"twin_{_name}_cifar{_suffix}"
        register_model(_g, **_CIFAR)
        globals()[_g.__name__] = _g


# ----------------------------------------------------------------------------- AlexNet
def _alexnet_free(c: int) -> Term:
    return ops.conv(c, k=11, stride=4, padding=5) >> ops.relu() >> ops.max_pool(3, stride=2, padding=1)


def twin_alexnet_term(num_classes: int = 1000, in_chans: int = 3, first: str = "cmod", wavelet: int = 32,
                      mix: int = 1, levels: int = 3, filters: str = "qshift_a", drop: float = 0.5) -> Term:
    """Twin AlexNet (torchvision widths): first stage at stride 8 (224 -> 28), free path
    11x11/4 conv + ReLU + 3x3/2 max-pool, wavelet path CMod at J = 3."""
    stem = twin_stem(64, _alexnet_free, first, wavelet, levels, mix, filters).named("stem")
    feats = (ops.conv(192, k=5, padding=2) >> ops.relu() >> ops.max_pool(3, stride=2)
             >> ops.conv(384, k=3) >> ops.relu() >> ops.conv(256, k=3) >> ops.relu()
             >> ops.conv(256, k=3) >> ops.relu() >> ops.max_pool(3, stride=2)).named("features")
    head = (ops.adaptive_pool(6) >> ops.rearrange("b c h w -> b (c h w)", h=6, w=6)
            >> ops.dropout(drop) >> ops.linear(4096) >> ops.relu()
            >> ops.dropout(drop) >> ops.linear(4096) >> ops.relu() >> ops.linear(num_classes)).named("head")
    return stem >> feats >> head


@register_model(input_size=(3, 224, 224), tags=("twin", "alexnet", "imagenet"))
def twin_alexnet(num_classes: int = 1000, in_chans: int = 3, first: str = "cmod", wavelet: int = 32, mix: int = 1,
                 levels: int = 3, filters: str = "qshift_a") -> Term:
    """Twin AlexNet: 32 of the 64 first-layer channels are CMod wavelet channels (J=3)."""
    return twin_alexnet_term(num_classes, in_chans, first, wavelet, mix, levels, filters)


@register_model(input_size=(3, 224, 224), tags=("twin", "alexnet", "imagenet"))
def twin_alexnet_rmax(num_classes: int = 1000, in_chans: int = 3, first: str = "rmax", wavelet: int = 32,
                      mix: int = 1, levels: int = 3, filters: str = "qshift_a") -> Term:
    """Twin AlexNet's RMax baseline (same filters, real parts + max-pool)."""
    return twin_alexnet_term(num_classes, in_chans, first, wavelet, mix, levels, filters)
