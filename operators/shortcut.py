"""Parameter-free shortcuts: ``subsample`` (keep every s-th pixel) and
``pad_channels`` (zero channels up to a width), and ``option_a``, the CIFAR
ResNet shortcut of He et al. (2016) that combines them::

    >>> from operad import ops, Field
    >>> ops.option_a(32, stride=2)
    subsample(2) >> pad_channels(32)
    >>> ops.option_a(32, stride=2).bind(Field(16)).out_type
    Field(32)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch.nn.functional as F
from torch import nn

from .algebra.util import check_channels, check_int, floordiv
from .algebra.field import Field
from .algebra.term import ALL_TRANSFORMS, Term, op, register_family

__all__ = ["Subsample", "PadChannels", "subsample", "pad_channels", "option_a"]


class _SubsampleModule(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride]

    def extra_repr(self):
        return f"stride={self.stride}"


def _sub_examples(draw):
    from hypothesis import strategies as st
    kind = draw(st.sampled_from(["real", "complex"]))
    size = (draw(st.integers(3, 11)), draw(st.integers(3, 11)))
    return subsample(draw(st.integers(1, 3))), Field(draw(st.integers(1, 4)), kind=kind), size


@register_family("subsample", examples=_sub_examples)
@dataclass(frozen=True, repr=False)
class Subsample(Term):
    """``x[:, :, ::s, ::s]``: the top-left pixel of every s x s cell (same as
    ``avg_pool(1, stride=s)``, without the pooling kernel). Output size
    ``ceil(n / s)``; an l2 contraction; linear."""

    stride: int = 2
    _positional = ("stride",)
    linear = True
    keeps_nonnegative = True

    def __post_init__(self):
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"subsample stride must be a positive int; got {self.stride!r}")

    def out_type(self, t):
        if t.rank != 2:
            self.reject("a rank-2 field", t)
        return t

    def out_size(self, t, size):
        return tuple(floordiv(n - 1, self.stride) + 1 for n in size)

    def equivariance(self, t):
        return ALL_TRANSFORMS if self.stride == 1 else frozenset()

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return _SubsampleModule(self.stride)


class _PadChannelsModule(nn.Module):
    def __init__(self, before: int, after: int, rank: int):
        super().__init__()
        self.pad = (0, 0) * rank + (before, after)

    def forward(self, x):
        return F.pad(x, self.pad)


def _pad_examples(draw):
    from hypothesis import strategies as st
    rank = draw(st.sampled_from([2, 2, 0]))
    c = draw(st.integers(1, 5))
    size = (draw(st.integers(3, 8)), draw(st.integers(3, 8))) if rank == 2 else None
    extra = draw(st.integers(0, 4))
    before = draw(st.sampled_from([None, None, draw(st.integers(0, extra))]))
    return pad_channels(c + extra, before), Field(c, rank=rank), size


@register_family("pad_channels", examples=_pad_examples)
@dataclass(frozen=True, repr=False)
class PadChannels(Term):
    """Zero-pad a real field to ``out`` channels: ``(out - C) // 2`` zero channels
    before the input, the rest after (the option-A layout), or exactly ``before``
    zero channels first when given (what pruning leaves of that layout). An
    isometry that commutes with every spatial transform."""

    out: int
    before: Optional[int] = None
    _positional = ("out",)
    linear = True
    keeps_nonnegative = True

    def out_type(self, t):
        self.require_real(t, rank=None)
        if isinstance(t.channels, int) and t.channels > self.out:
            self.reject(f"at most {self.out} channels (pad_channels only adds channels; "
                        f"use a 1x1 conv to narrow)", t)
        if self.before is not None and isinstance(t.channels, int) and t.channels + self.before > self.out:
            self.reject(f"at most {self.out - self.before} channels to put {self.before} zero channels "
                        f"before them within out={self.out}", t)
        return t.with_(channels=self.out)

    def split(self, c: int):
        """``(before, after)`` zero channels for an input of ``c`` channels."""
        d = self.out - c
        before = d // 2 if self.before is None else self.before
        return before, d - before

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return _PadChannelsModule(*self.split(t.channels), t.rank)


@op("subsample")
def subsample(stride: int = 2) -> Subsample:
    """Keep every ``stride``-th pixel along both axes.

    >>> from operad import ops, Field
    >>> ops.subsample(2).out_size(Field(4), (32, 31))
    (16, 16)
    """
    return Subsample(stride)


@op("pad_channels")
def pad_channels(out: int, before: Optional[int] = None) -> PadChannels:
    """Zero-pad to ``out`` channels (half before, half after the input; or ``before`` first).

    >>> from operad import ops, Field
    >>> ops.pad_channels(8).bind(Field(4)).out_type
    Field(8)
    >>> ops.pad_channels(8, before=1).build(Field(4)).pad
    (0, 0, 0, 0, 1, 3)
    """
    check_channels("pad_channels", "out", out)
    if before is not None:
        check_int("pad_channels", "before", before, lo=0)
    return PadChannels(out, before)


def option_a(out: int, stride: int = 1) -> Term:
    """The option-A shortcut (He et al. 2016, CIFAR): ``subsample(stride) >>
    pad_channels(out)``; at stride 1 just the padding. No parameters, no MACs.

    >>> from operad import ops, Field
    >>> ops.option_a(16, 1)
    pad_channels(16)
    """
    check_int("option_a", "stride", stride)
    pad = pad_channels(out)
    return subsample(stride) >> pad if stride > 1 else pad


op("option_a")(option_a)
