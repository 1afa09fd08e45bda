"""ResNets as operator expressions: the CIFAR family (He et al. 2016, option-A
shortcuts), the ImageNet family (torchvision layout, with bottlenecks), and
pre-activation variants (He et al. 2016b).

Two reusable builders take a pluggable ``block(cin, cout, stride) -> Term``,
so other units (Min blocks, dendritic, nonlocal, Ghost, MGIC ...) drop in::

    from functools import partial
    from operad.models.resnet import cifar_resnet, basic_block
    net = cifar_resnet(56, block=partial(basic_block, act=ops.gelu))
    mine = cifar_resnet(20, block=lambda cin, cout, stride: my_block(cin, cout, stride))

The builders infer each block's output width from its term, so a block may
widen (bottlenecks return ``4 * cout``). Every network is a sequence of named
top-level items ``stem, stage1, ..., stageN, head``; ``features_only=True``
drops the head, which is how :mod:`operad.models.features` and the
segmentation heads find the feature pyramid.

>>> import operad
>>> from operad import Field
>>> operad.cost(cifar_resnet(20), Field(3), size=(32, 32)).params
269722
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence

from .. import ops
from ..operators.algebra.field import Field
from ..operators.algebra.term import Term
from .registry import register_model

__all__ = ["conv_bn", "basic_block", "bottleneck", "preact_block", "cifar_resnet", "resnet",
           "imagenet_stem", "chain", "Block", "cifar_resnet_cost"]

Block = Callable[[int, int, int], Term]
Act = Callable[[], Term]


def chain(items: Sequence[Term]) -> Term:
    """``items[0] >> items[1] >> ...``."""
    out = items[0]
    for it in items[1:]:
        out = out >> it
    return out


def conv_bn(out: int, k: int = 3, stride: int = 1, act: Optional[Act] = ops.relu) -> Term:
    """``conv(out, k, stride, bias=False) >> bn()`` and, when ``act`` is given, ``>> act()``."""
    t = ops.conv(out, k=k, stride=stride, bias=False) >> ops.bn()
    return t >> act() if act is not None else t


def _shortcut(cin: int, cout: int, stride: int, kind: str) -> Optional[Term]:
    if stride == 1 and cin == cout:
        return None
    if kind == "A":
        return ops.option_a(cout, stride)
    if kind == "B":
        return conv_bn(cout, 1, stride, None)
    raise ValueError(f"shortcut must be 'A' (subsample + zero channels) or 'B' (1x1 conv + BN); got {kind!r}")


def basic_block(cin: int, cout: int, stride: int = 1, act: Act = ops.relu, shortcut: str = "A") -> Term:
    """``act(shortcut(x) + bn(conv(act(bn(conv(x))))))``: two 3x3 convolutions.

    ``shortcut="A"`` (CIFAR) subsamples and zero-pads when the shape changes;
    ``"B"`` (ImageNet) projects with a strided 1x1 conv + BN.

    >>> from operad import Field
    >>> basic_block(16, 32, 2).bind(Field(16)).out_type
    Field(32)
    """
    body = conv_bn(cout, 3, stride, act) >> conv_bn(cout, 3, 1, None)
    return ops.residual(body, _shortcut(cin, cout, stride, shortcut)) >> act()


def bottleneck(cin: int, width: int, stride: int = 1, act: Act = ops.relu, expansion: int = 4,
               shortcut: str = "B") -> Term:
    """The ResNet-50 bottleneck (torchvision's v1.5: the stride sits on the 3x3):
    1x1 to ``width``, 3x3 (stride), 1x1 to ``expansion * width``; output
    ``expansion * width`` channels.

    >>> from operad import Field
    >>> bottleneck(64, 64).bind(Field(64)).out_type
    Field(256)
    """
    out = width * expansion
    body = conv_bn(width, 1, 1, act) >> conv_bn(width, 3, stride, act) >> conv_bn(out, 1, 1, None)
    return ops.residual(body, _shortcut(cin, out, stride, shortcut)) >> act()


def preact_block(cin: int, cout: int, stride: int = 1, act: Act = ops.relu, shortcut: str = "B") -> Term:
    """Pre-activation block (He et al. 2016b): ``x + conv(act(bn(conv(act(bn(x))))))``.
    When the shape changes, BN-act is applied once before the split and the
    shortcut (1x1 conv, or option A) sees the pre-activated input.

    >>> from operad import Field
    >>> preact_block(16, 16).bind(Field(16)).out_type
    Field(16)
    """
    def pre():
        return ops.bn() >> act()
    convs = ops.conv(cout, k=3, stride=stride, bias=False) >> pre() >> ops.conv(cout, k=3, bias=False)
    if stride == 1 and cin == cout:
        return ops.residual(pre() >> convs)
    short = ops.conv(cout, k=1, stride=stride, bias=False) if shortcut == "B" else ops.option_a(cout, stride)
    return pre() >> ops.residual(convs, short)


def _stage(block: Block, cin: int, cout: int, stride: int, n: int):
    items, c = [], cin
    for j in range(n):
        b = block(c, cout, stride if j == 0 else 1)
        if not isinstance(b, Term):
            raise TypeError(f"block(cin, cout, stride) must return a term; got {type(b).__name__}")
        items.append(b)
        c = b._infer(Field(c)).channels
    return chain(items), c


def _head(num_classes: int, pre: Optional[Term], drop: float) -> Term:
    items = [pre] if pre is not None else []
    items.append(ops.global_pool())
    if drop:
        items.append(ops.dropout(drop))
    items.append(ops.linear(num_classes))
    return chain(items)


def cifar_resnet(depth: int, num_classes: int = 10, in_chans: int = 3, widths: Sequence[int] = (16, 32, 64),
                 block: Block = basic_block, act: Act = ops.relu, stem: Optional[Term] = None,
                 pre_head: Optional[Term] = None, drop: float = 0.0, features_only: bool = False,
                 blocks_per_stage: Optional[int] = None, drop_path: float = 0.0, drop_block: float = 0.0,
                 drop_block_size: int = 3, spatial_dropout: float = 0.0) -> Term:
    """A CIFAR ResNet of ``depth = 6n + 2`` (2 layers per block, n blocks per stage).

    ``stem`` defaults to ``conv_bn(widths[0], 3, 1, act)``; stage i (named
    ``stage{i+1}``) has ``n`` blocks ``block(cin, widths[i], stride)`` with stride
    2 on the first block of every stage after the first. ``pre_head`` (e.g.
    ``bn() >> relu()`` for pre-activation nets) runs before global pooling.
    ``blocks_per_stage`` overrides n (for blocks that are not two layers deep).
    ``drop_path`` is stochastic depth with the linear decay rule: the l-th of
    L residuals drops its body with probability ``drop_path * l / L``.
    ``drop_block = p`` appends ``drop_block(drop_block_size, p)`` to the last
    two stages (as Ghiasi et al. 2018 do to ResNet-50's groups 3 and 4);
    ``spatial_dropout = p`` appends ``spatial_dropout(p)`` (whole channels,
    Tompson et al. 2015) there instead.

    >>> cifar_resnet(20).bind(Field(3)).stage2[0].out_type
    Field(32)
    """
    if blocks_per_stage is None:
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...); got {depth!r}")
        blocks_per_stage = (depth - 2) // 6
    stem = stem if stem is not None else conv_bn(widths[0], 3, 1, act)
    items = [stem.named("stem")]
    c = stem._infer(Field(in_chans)).channels
    for i, w in enumerate(widths):
        st, c = _stage(block, c, w, 1 if i == 0 else 2, blocks_per_stage)
        if drop_block and i >= len(widths) - 2:
            st = st >> ops.drop_block(drop_block_size, drop_block)
        if spatial_dropout and i >= len(widths) - 2:
            st = st >> ops.spatial_dropout(spatial_dropout)
        items.append(st.named(f"stage{i + 1}"))
    if not features_only:
        items.append(_head(num_classes, pre_head, drop).named("head"))
    return _drop_path(chain(items), drop_path)


def _drop_path(term: Term, p: float) -> Term:
    if not p:
        return term
    from ..operators.regularize import linear_drop_path
    return linear_drop_path(term, p)


def cifar_resnet_cost(n=None, width=None, size=(32, 32), num_classes: int = 10, block: Block = basic_block):
    """The exact cost of a CIFAR ResNet as a formula in its blocks per stage ``n``
    (depth ``6n + 2``) and base width ``width`` (sympy symbols by default), at ``size``.

    >>> import sympy
    >>> n, C = sympy.symbols("n C", positive=True, integer=True)
    >>> c = cifar_resnet_cost(n, C)
    >>> c.params
    378*C**2*n - 90*C**2 + 28*C*n + 69*C + 10
    >>> c.macs
    55296*C**2*n - 9216*C**2 + 27688*C
    >>> c.subs({n: 3, C: 16}).params
    269722
    """
    import sympy
    n = n if n is not None else sympy.Symbol("n", positive=True, integer=True)
    C = width if width is not None else sympy.Symbol("C", positive=True, integer=True)
    from ..theory.cost import cost
    t3 = Field(3)
    total = cost(conv_bn(C, 3, 1), t3, size)
    cin, sz = C, tuple(size)
    for i, w in enumerate((C, 2 * C, 4 * C)):
        stride = 1 if i == 0 else 2
        first, rest = block(cin, w, stride), block(w, w, 1)
        total = total + cost(first, Field(cin), sz)
        sz = first.out_size(Field(cin), sz)
        total = total + cost(rest, Field(w), sz) * (n - 1)
        cin = w
    total = total + cost(ops.global_pool() >> ops.linear(num_classes), Field(4 * C), sz)
    return total


def imagenet_stem(width: int = 64, act: Act = ops.relu) -> Term:
    """7x7 stride-2 conv + BN + act (the max pool opens stage1)."""
    return conv_bn(width, 7, 2, act)


def resnet(layers: Sequence[int], num_classes: int = 1000, in_chans: int = 3, block: Block = None,
           widths: Sequence[int] = (64, 128, 256, 512), act: Act = ops.relu, stem: Optional[Term] = None,
           stem_width: int = 64, pre_head: Optional[Term] = None, drop: float = 0.0,
           features_only: bool = False, max_pool: bool = True, drop_path: float = 0.0) -> Term:
    """An ImageNet-style ResNet: ``stem`` (7x7/2 conv-BN-act, stride 2), then
    stage i with ``layers[i]`` blocks ``block(cin, widths[i], stride)`` (stage1
    opens with a 3x3/2 max pool; stages 2.. stride 2 on their first block).
    ``block`` defaults to the basic block with 1x1-conv shortcuts.
    ``drop_path``: stochastic depth with the linear decay rule, as in :func:`cifar_resnet`.

    >>> resnet((2, 2, 2, 2)).bind(Field(3)).out_type
    Field(1000, rank=0)
    """
    if block is None:
        block = partial(basic_block, act=act, shortcut="B")
    stem = stem if stem is not None else imagenet_stem(stem_width, act)
    items = [stem.named("stem")]
    c = stem._infer(Field(in_chans)).channels
    for i, (w, n) in enumerate(zip(widths, layers)):
        st, c2 = _stage(block, c, w, 1 if i == 0 else 2, n)
        if i == 0 and max_pool:
            st = ops.max_pool(3, stride=2, padding=1) >> st
        items.append(st.named(f"stage{i + 1}"))
        c = c2
    if not features_only:
        items.append(_head(num_classes, pre_head, drop).named("head"))
    return _drop_path(chain(items), drop_path)


# ---------------------------------------------------------------------------
# Registered networks
# ---------------------------------------------------------------------------
def _cifar(depth):
    def fn(num_classes: int = 10, in_chans: int = 3, features_only: bool = False, drop: float = 0.0,
           drop_path: float = 0.0, drop_block: float = 0.0, drop_block_size: int = 3,
           spatial_dropout: float = 0.0) -> Term:
        return cifar_resnet(depth, num_classes, in_chans, features_only=features_only, drop=drop,
                            drop_path=drop_path, drop_block=drop_block, drop_block_size=drop_block_size,
                            spatial_dropout=spatial_dropout)
    fn.__name__ = f"resnet{depth}"
    fn.__qualname__ = fn.__name__
    fn.__doc__ = (f"ResNet-{depth} for CIFAR (He et al. 2016): widths 16/32/64, "
                  f"{(depth - 2) // 6} basic blocks per stage, option-A shortcuts.")
    return register_model(fn, input_size=(3, 32, 32), tags=("resnet", "cifar"))


resnet20, resnet32, resnet44, resnet56, resnet110 = (_cifar(d) for d in (20, 32, 44, 56, 110))


def _preact_cifar(depth):
    def fn(num_classes: int = 10, in_chans: int = 3, features_only: bool = False,
                drop_path: float = 0.0) -> Term:
        return cifar_resnet(depth, num_classes, in_chans, block=partial(preact_block, shortcut="B"),
                            pre_head=ops.bn() >> ops.relu(), features_only=features_only, drop_path=drop_path)
    fn.__name__ = f"preact_resnet{depth}"
    fn.__qualname__ = fn.__name__
    fn.__doc__ = f"Pre-activation ResNet-{depth} for CIFAR (He et al. 2016b), 1x1-conv shortcuts."
    return register_model(fn, input_size=(3, 32, 32), tags=("resnet", "preact", "cifar"))


preact_resnet20, preact_resnet56, preact_resnet110 = (_preact_cifar(d) for d in (20, 56, 110))

_IMNET = dict(input_size=(3, 224, 224), tags=("resnet", "imagenet"))


@register_model(**_IMNET)
def resnet18(num_classes: int = 1000, in_chans: int = 3, features_only: bool = False,
                drop_path: float = 0.0) -> Term:
    """ResNet-18 (torchvision layout): basic blocks (2, 2, 2, 2), 11.69M parameters."""
    return resnet((2, 2, 2, 2), num_classes, in_chans, features_only=features_only, drop_path=drop_path)


@register_model(**_IMNET)
def resnet34(num_classes: int = 1000, in_chans: int = 3, features_only: bool = False,
                drop_path: float = 0.0) -> Term:
    """ResNet-34 (torchvision layout): basic blocks (3, 4, 6, 3), 21.80M parameters."""
    return resnet((3, 4, 6, 3), num_classes, in_chans, features_only=features_only, drop_path=drop_path)


@register_model(**_IMNET)
def resnet50(num_classes: int = 1000, in_chans: int = 3, features_only: bool = False,
                drop_path: float = 0.0) -> Term:
    """ResNet-50 (torchvision v1.5 layout): bottlenecks (3, 4, 6, 3), 25.56M parameters."""
    return resnet((3, 4, 6, 3), num_classes, in_chans, block=bottleneck, features_only=features_only,
                  drop_path=drop_path)


@register_model(input_size=(3, 32, 32), tags=("resnet", "preact", "cifar"))
def preact_resnet18(num_classes: int = 10, in_chans: int = 3, features_only: bool = False,
                drop_path: float = 0.0) -> Term:
    """Pre-activation ResNet-18 for 32x32 inputs (3x3 stem, widths 64..512, as in the
    common CIFAR setup of He et al. 2016b / Zhang et al. mixup): 11.17M parameters."""
    return resnet((2, 2, 2, 2), num_classes, in_chans, block=preact_block, stem=ops.conv(64, k=3, bias=False),
                  pre_head=ops.bn() >> ops.relu(), features_only=features_only, max_pool=False,
                  drop_path=drop_path)
