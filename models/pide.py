"""PIDE networks (Bohn, Griebel, Kannan, "Deep neural networks and PIDE discretizations"):
CNNs with one nonlocal block per unit, their local baselines, nonlocal ResNets and a
segmentation network.

``nonlocal`` picks the nonlocal operator F of every block:

=================  ==================================================================
``"fractional"``   the paper's feature-space fractional Laplacian (keys pooled by 2)
``"weighted"``     the paper's weighted Laplacian, embedded Gaussian (softmax rows)
``"inverse"``      the feature-space inverse fractional Laplacian (Riesz potential)
``"grid"``         the grid fractional Laplacian by the FFT, learnable order per channel
``"grid_inverse"`` the grid pseudo-inverse ``(-Delta_h)^-s``
=================  ==================================================================

``normalize`` picks how the feature-space kernels are normalised (the grid kinds ignore
it): ``"rows"`` (the default of every registered network) divides each row by its sum, a
weighted average over the keys; ``"paper"`` is the paper's ``c(n, s) k(d_ij) / M`` with the
fractional Laplacian's constant ``c(n, s) = 4^s Gamma(n/2+s) / (pi^(n/2) |Gamma(-s)|)``
(or the Riesz potential's). ``create_model("pide_net", normalize="paper")``.

    >>> from operad.models import create_model
    >>> create_model("pide_net").out_type
    Field(10, rank=0)
"""
from __future__ import annotations

from typing import Optional, Sequence

from .. import ops
from ..operators.algebra.combinators import Named, Seq
from ..operators.algebra.term import Term
from .registry import register_model

__all__ = ["make_nonlocal", "local_block", "pide_classifier", "NONLOCAL_KINDS"]

NONLOCAL_KINDS = ("fractional", "weighted", "inverse", "grid", "grid_inverse")
_STEP = {"fractional": 0.5, "weighted": 0.5, "inverse": 0.5, "grid": 0.25, "grid_inverse": 0.25}


NORMALIZE = {"rows": "rows", "paper": "n"}


def make_nonlocal(kind: str = "fractional", order: float = 0.5, pool: int = 2, normalize: str = "rows") -> Term:
    """The nonlocal operator F of a block, by name (see the module table); ``normalize`` is
    ``"rows"`` or ``"paper"`` (``c(n, s) / M``) for the feature-space kinds.

    >>> make_nonlocal("fractional", normalize="paper").normalize
    'n'
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {sorted(NORMALIZE)}; got {normalize!r}")
    norm = NORMALIZE[normalize]
    if kind == "fractional":
        return ops.fractional_laplacian(order, space="feature", pool=pool, normalize=norm, eps=0.1)
    if kind == "weighted":
        return ops.weighted_laplacian(kernel="gaussian", pool=pool, normalize=norm)
    if kind == "inverse":
        return ops.inverse_fractional_laplacian(order, space="feature", pool=pool, normalize=norm, eps=0.1)
    if kind == "grid":
        return ops.fractional_laplacian(order, learn_order=0 < order < 1)
    if kind == "grid_inverse":
        return ops.inverse_fractional_laplacian(order)
    raise ValueError(f"nonlocal must be one of {NONLOCAL_KINDS}; got {kind!r}")


def _nonlocal_block(width: int, kind: str, order: float, pool: int, h: Optional[float],
                    normalize: str = "rows") -> Term:
    return ops.nonlocal_block(make_nonlocal(kind, order, pool, normalize), width, _STEP[kind] if h is None else h)


def local_block(width: int) -> Term:
    """The local stand-in for a nonlocal block, at about the same budget: the same 1x1 conv + BN +
    ReLU, then ``x + pointwise(depthwise3x3(x))`` (C^2 + 9C parameters against the C^2 of the
    nonlocal operator's two C -> C/2 embeddings)."""
    return (ops.pointwise(width, bias=False) >> ops.bn() >> ops.relu()
            >> ops.residual(ops.depthwise(3, bias=False) >> ops.pointwise(width, bias=False)))


def _conv_bn(out: int, stride: int = 1, relu: bool = True) -> Term:
    t = ops.conv(out, k=3, stride=stride, bias=False) >> ops.bn()
    return t >> ops.relu() if relu else t


def _res_block(width: int) -> Term:
    return ops.residual(_conv_bn(width) >> _conv_bn(width, relu=False)) >> ops.relu()


def _chain(items: Sequence[Term]) -> Term:
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


def pide_classifier(num_classes: int = 10, in_chans: int = 3, widths: Sequence[int] = (32, 64, 112),
                    blocks: int = 2, nonlocal_: Optional[str] = "fractional", order: float = 0.5, pool: int = 2,
                    h: Optional[float] = None, features_only: bool = False, normalize: str = "rows") -> Term:
    """Stem (3x3 conv, BN, ReLU), then per width a unit: a stride-2 transition (after the first),
    ``blocks`` residual blocks and one nonlocal block (a local block when ``nonlocal_`` is None);
    global pooling and a linear classifier."""
    items = [_conv_bn(widths[0]).named("stem")]
    for i, w in enumerate(widths):
        unit = [_conv_bn(w, stride=2)] if i > 0 else []
        unit += [_res_block(w) for _ in range(blocks)]
        unit.append(local_block(w) if nonlocal_ is None else _nonlocal_block(w, nonlocal_, order, pool, h, normalize))
        items.append(_chain(unit).named(f"unit{i + 1}"))
    if not features_only:
        items.append((ops.global_pool() >> ops.linear(num_classes)).named("head"))
    return _chain(items)


@register_model(tags=("pide", "nonlocal"))
def pide_net(num_classes: int = 10, in_chans: int = 3, blocks: int = 2, nonlocal_op: str = "fractional",
             order: float = 0.5, pool: int = 2, h: Optional[float] = None, normalize: str = "rows") -> Term:
    """The paper's classification network: widths 32, 64, 112, one nonlocal block per unit."""
    return pide_classifier(num_classes, in_chans, (32, 64, 112), blocks, nonlocal_op, order, pool, h,
                           normalize=normalize)


@register_model(tags=("pide", "nonlocal"))
def pide_net_grid(num_classes: int = 10, in_chans: int = 3, blocks: int = 2, order: float = 0.5,
                  h: Optional[float] = None) -> Term:
    """``pide_net`` with the grid fractional Laplacian (FFT, learnable order per channel)."""
    return pide_classifier(num_classes, in_chans, (32, 64, 112), blocks, "grid", order, 1, h)


@register_model(tags=("pide", "baseline"))
def pide_local(num_classes: int = 10, in_chans: int = 3, blocks: int = 2) -> Term:
    """The local baseline of ``pide_net`` at about the same parameter budget (local blocks in
    place of the nonlocal ones)."""
    return pide_classifier(num_classes, in_chans, (32, 64, 112), blocks, None)


def _nonlocal_resnet(depth: int, num_classes: int, in_chans: int, kind: str, order: float, pool: int,
                     h: Optional[float], normalize: str = "rows") -> Term:
    from .resnet import cifar_resnet
    net = cifar_resnet(depth, num_classes=num_classes, in_chans=in_chans)
    widths = (16, 32, 64)
    items, i = [], 0
    for it in (net.items if isinstance(net, Seq) else (net,)):
        if isinstance(it, Named) and it.name.startswith("stage"):
            it = Named(it.inner >> _nonlocal_block(widths[i], kind, order, pool, h, normalize), it.name)
            i += 1
        items.append(it)
    return _chain(items)


@register_model(tags=("pide", "nonlocal"))
def nonlocal_resnet20(num_classes: int = 10, in_chans: int = 3, nonlocal_op: str = "fractional",
                      order: float = 0.5, pool: int = 2, h: Optional[float] = None,
                      normalize: str = "rows") -> Term:
    """ResNet-20 (CIFAR) with one nonlocal block at the end of each stage."""
    return _nonlocal_resnet(20, num_classes, in_chans, nonlocal_op, order, pool, h, normalize)


@register_model(tags=("pide", "nonlocal"))
def nonlocal_resnet56(num_classes: int = 10, in_chans: int = 3, nonlocal_op: str = "fractional",
                      order: float = 0.5, pool: int = 2, h: Optional[float] = None,
                      normalize: str = "rows") -> Term:
    """ResNet-56 (CIFAR) with one nonlocal block at the end of each stage."""
    return _nonlocal_resnet(56, num_classes, in_chans, nonlocal_op, order, pool, h, normalize)


@register_model(input_size=(3, 360, 480), task="segmentation", tags=("pide", "nonlocal", "segmentation"))
def pide_seg(num_classes: int = 11, in_chans: int = 3, widths: Sequence[int] = (32, 64, 112),
             nonlocal_op: str = "grid", order: float = 0.5, pool: int = 4, h: Optional[float] = None,
             normalize: str = "rows") -> Term:
    """Segmentation (CamVid: 11 classes, void 11 ignored by the loss): an encoder at output
    stride 8 (stride-2 stem, then two stride-2 units, each with a residual block and a nonlocal
    block; the grid FFT operator by default, whose cost grows as N log N at 360x480), an FCN
    decoder head (3x3 conv, BN, ReLU, 1x1 classifier) and bilinear resizing to the input."""
    items = [(_conv_bn(widths[0], stride=2) >> _conv_bn(widths[0])).named("stem")]
    for i, w in enumerate(widths[1:]):
        unit = _conv_bn(w, stride=2) >> _res_block(w) >> _nonlocal_block(w, nonlocal_op, order, pool, h, normalize)
        items.append(unit.named(f"unit{i + 1}"))
    trunk = _chain(items)
    head = _conv_bn(widths[-1] // 2) >> ops.conv(num_classes, k=1)
    return ops.resize_to_input(trunk >> head.named("head"))
