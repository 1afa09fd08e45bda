"""``channel_pad``: zero channels before and after a field. The option-A shortcut
of CIFAR ResNets is ``avg_pool(1, stride=2) >> channel_pad(d // 2, d - d // 2)``
for a width increase d."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from .field import Field
from .term import ALL_TRANSFORMS, Term, op, register_family

__all__ = ["ChannelPad", "channel_pad"]


class _PadModule(nn.Module):
    def __init__(self, before: int, after: int, rank: int):
        super().__init__()
        self.pad = (0, 0) * rank + (before, after)

    def forward(self, x):
        return F.pad(x, self.pad)


def _examples(draw):
    from hypothesis import strategies as st
    rank = draw(st.sampled_from([2, 2, 0]))
    size = (draw(st.integers(3, 8)), draw(st.integers(3, 8))) if rank == 2 else None
    return (channel_pad(draw(st.integers(0, 3)), draw(st.integers(0, 3))), Field(draw(st.integers(1, 5)), rank=rank),
            size)


@register_family("channel_pad", examples=_examples)
@dataclass(frozen=True, repr=False)
class ChannelPad(Term):
    """``before`` zero channels, the input, ``after`` zero channels (real fields):
    an isometry, commuting with every spatial transform."""

    before: int = 0
    after: int = 0
    _positional = ("before", "after")
    linear = True

    def out_type(self, t):
        self.require_real(t, rank=None)
        return t.with_(channels=t.channels + self.before + self.after)

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return 1.0

    def build(self, t):
        return _PadModule(self.before, self.after, t.rank)


@op("channel_pad")
def channel_pad(before: int, after: int = 0) -> ChannelPad:
    """Pad a field with zero channels.

    >>> from operad import ops, Field
    >>> ops.channel_pad(2, 2).bind(Field(4)).out_type
    Field(8)
    """
    if not (isinstance(before, int) and isinstance(after, int)) or before < 0 or after < 0:
        raise ValueError(f"channel_pad takes non-negative ints; got {before!r}, {after!r}")
    return ChannelPad(before, after)
