"""The inverted residual with linear bottleneck (MobileNetV2, Sandler et al. 2018).

``inverted_residual(out, stride, t)`` on a field of C channels is::

    1x1 conv C -> t*C, BN, ReLU6        (omitted when t == 1)
    k x k depthwise, stride, BN, ReLU6
    1x1 conv t*C -> out, BN             (linear: no activation after the projection)

with an identity shortcut exactly when ``stride == 1`` and ``C == out``.
``pw_group`` makes both 1x1 convolutions grouped with that many input
channels per group (the smoother of an MGIC MobileNetV2); ``se`` inserts a
squeeze-excite after the depthwise convolution.

Cost with t*C hidden channels, stride 1, no SE: ``params = t*C*(C + k*k + out)
+ 2*(2*t*C + out)``, ``macs = t*C*(C + k*k + out) * H*W``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .algebra.macro import Macro
from .activation import Activation
from .algebra.combinators import Residual
from .conv import Conv
from .algebra.field import Channels, Field
from .gate import make_divisible
from .norm import BatchNorm
from .algebra.term import Term, op, register_family

__all__ = ["InvertedResidual", "inverted_residual", "make_divisible"]


def _examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 6))
    same = draw(st.booleans())
    out = c if same else draw(st.integers(1, 6))
    stride = 1 if same else draw(st.sampled_from([1, 2]))
    t = draw(st.sampled_from([1, 2, 6]))
    k = draw(st.sampled_from([3, 5]))
    dilation = draw(st.sampled_from([1, 2])) if stride == 1 else 1
    act = Activation(draw(st.sampled_from(["relu6", "relu", "hardswish"])))
    se = draw(st.sampled_from([None, 0.25]))
    size = (draw(st.integers(6, 12)), draw(st.integers(6, 12)))
    mode = draw(st.sampled_from(["zeros", "circular"]))
    return inverted_residual(out, stride, t, k=k, dilation=dilation, act=act, se=se, padding_mode=mode), Field(c), size


@register_family("inverted_residual", examples=_examples)
@dataclass(frozen=True, repr=False)
class InvertedResidual(Macro):
    out: Channels = 16
    stride: int = 1
    t: float = 6
    k: int = 3
    dilation: int = 1
    act: Term = Activation("relu6")
    se: Optional[float] = None
    pw_group: Optional[int] = None
    padding_mode: str = "zeros"  # "circular": the block commutes with circular shifts (by its stride)
    _positional = ("out",)
    _sub = ("act",)

    def __post_init__(self):
        if self.stride not in (1, 2):
            raise ValueError(f"inverted_residual stride must be 1 or 2; got {self.stride!r}")
        if self.t <= 0:
            raise ValueError(f"inverted_residual expansion t must be positive; got {self.t!r}")
        if self.stride != 1 and self.dilation != 1:
            raise ValueError("inverted_residual: use stride 2 or dilation > 1, not both")

    def hidden(self, c: Channels) -> Channels:
        if isinstance(c, int):
            return int(round(c * self.t))
        return c * self.t

    def _groups(self, c: Channels):
        if self.pw_group is None:
            return 1
        if isinstance(c, int) and c % self.pw_group:
            raise ValueError(f"inverted_residual pw_group={self.pw_group} must divide the input width {c}")
        return c // self.pw_group if isinstance(c, int) else c / self.pw_group

    def expand(self, t: Field) -> Term:
        self.require_real(t)
        c = t.channels
        hid = self.hidden(c)
        g = self._groups(c)
        items = []
        if self.t != 1:
            items += [Conv(hid, 1, groups=g, bias=False), BatchNorm(), self.act]
        items += [Conv(None, self.k, self.stride, self.dilation, groups=0, bias=False, padding_mode=self.padding_mode),
                  BatchNorm(), self.act]
        if self.se:
            from .gate import SqueezeExcite
            items.append(SqueezeExcite(self.se))
        items += [Conv(self.out, 1, groups=g, bias=False), BatchNorm()]
        body = items[0]
        for it in items[1:]:
            body = body >> it
        if self.stride == 1 and c == self.out:
            return Residual(body)
        return body


@op("inverted_residual")
def inverted_residual(out: Channels, stride: int = 1, t: float = 6, k: int = 3, dilation: int = 1,
                      act: Optional[Term] = None, se: Optional[float] = None,
                      pw_group: Optional[int] = None, padding_mode: str = "zeros") -> InvertedResidual:
    """MobileNetV2's inverted residual block to ``out`` channels with expansion ``t``.

    >>> from operad import ops, Field
    >>> m = ops.inverted_residual(16, t=6).bind(Field(16))   # keeps the identity shortcut
    >>> type(m).__name__, m.out_type
    ('ResidualModule', Field(16))
    """
    return InvertedResidual(out, stride, t, k, dilation, act or Activation("relu6"), se, pw_group, padding_mode)
