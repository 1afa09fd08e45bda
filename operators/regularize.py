"""Regularizers that change the network in training only: ``drop_block``,
``spatial_dropout``, ``shake_drop`` (leaves) and ``shake_shake(a, b)`` (a
two-branch combinator). Stochastic depth is ``residual(f, drop_path=p)``;
:func:`linear_drop_path` spreads it over a network with the linear decay rule.

Each is its expectation in eval mode, where the algebra states its
properties: ``drop_block``, ``spatial_dropout`` are the identity,
``shake_drop`` scales by ``E[b + alpha - b alpha]`` and ``shake_shake`` is
``0.5 a + 0.5 b``. So types, costs (no MACs), Lipschitz bounds and
equivariances follow from the parts::

    >>> from operad import ops, Field
    >>> body = ops.shake_shake(ops.conv(8) >> ops.bn(), ops.conv(8) >> ops.bn())
    >>> ops.residual(body >> ops.shake_drop(0.5)).bind(Field(8)).out_type
    Field(8)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .algebra.combinators import Residual, _BranchTerm, _leaf, _size, lipschitz_of
from .algebra.errors import OpArgError, OpArgTypeError
from .algebra.field import Field, TypeMismatch
from .algebra.term import ALL_TRANSFORMS, Term, op, register_family
from .algebra.util import check_float, check_int, check_prob

__all__ = ["DropBlock", "SpatialDropout", "ShakeDrop", "ShakeShake", "drop_block", "spatial_dropout",
           "shake_drop", "shake_shake", "shake", "linear_drop_path", "set_drop_block_progress"]


def _check_p(name: str, p, arg: str = "p") -> float:
    """A drop probability in [0, 1) as a float; else an :class:`OpArgError` naming the op."""
    return float(check_prob(name, arg, p, hi_open=True))


# ---------------------------------------------------------------------------
# The shake: forward by one coefficient, backward by another
# ---------------------------------------------------------------------------
class _Shake(torch.autograd.Function):
    """``x * fwd`` in the forward pass; the gradient is ``grad * bwd``."""

    @staticmethod
    def forward(ctx, x, fwd, bwd):
        ctx.save_for_backward(bwd)
        return x * fwd

    @staticmethod
    def backward(ctx, grad):
        (bwd,) = ctx.saved_tensors
        return grad * bwd, None, None


def shake(x: torch.Tensor, fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    """``x * fwd`` whose gradient with respect to ``x`` is ``grad * bwd``
    (the coefficients broadcast against ``x`` and get no gradient).

    >>> x = torch.ones(2, requires_grad=True)
    >>> shake(x, torch.tensor(3.0), torch.tensor(0.5)).sum().backward()
    >>> x.grad.tolist()
    [0.5, 0.5]
    """
    return _Shake.apply(x, fwd, bwd)


def _per_sample(x: torch.Tensor) -> Tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.dim() - 1)


# ---------------------------------------------------------------------------
# DropBlock
# ---------------------------------------------------------------------------
class DropBlockModule(nn.Module):
    """DropBlock (Ghiasi et al. 2018): in training, zero ``block x block``
    squares whose top-left corners are Bernoulli(gamma) seeds placed where the
    whole square fits, per sample and channel, and rescale by
    ``count(mask) / count_ones(mask)``. ``gamma`` is chosen so that about a
    fraction ``p * scale`` of the units drops; ``scale`` (a buffer, 1 by
    default) carries the engine's linear schedule of p."""

    def __init__(self, block_size: int, p: float):
        super().__init__()
        self.block_size, self.p = block_size, p
        self.register_buffer("scale", torch.ones(()), persistent=False)

    def gamma(self, h: int, w: int) -> torch.Tensor:
        """The seed rate for an ``h x w`` map (``block`` clipped to the map)."""
        b = min(self.block_size, h, w)
        return self.p * self.scale * (h * w) / (b * b * (h - b + 1) * (w - b + 1))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The keep mask (1 kept, 0 dropped) of one draw, shaped like ``x``."""
        B, C, H, W = x.shape
        b = min(self.block_size, H, W)
        seeds = (torch.rand(B, C, H - b + 1, W - b + 1, device=x.device) < self.gamma(H, W)).to(x.dtype)
        covered = F.max_pool2d(F.pad(seeds, (b - 1, b - 1, b - 1, b - 1)), b, stride=1)
        return 1.0 - covered

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        m = self.mask(x)
        return x * m * (m.numel() / m.sum().clamp_min(1.0))

    def extra_repr(self):
        return f"block_size={self.block_size}, p={self.p}"


def _db_examples(draw):
    from hypothesis import strategies as st
    return (drop_block(draw(st.integers(1, 5)), draw(st.floats(0.0, 0.5))), Field(draw(st.integers(1, 5))),
            (draw(st.integers(3, 10)), draw(st.integers(3, 10))))


class _TrainOnly(Term):
    """A regularizer that is the identity in eval mode (and in training multiplies
    by a non-negative mask, so it keeps non-negative inputs non-negative)."""

    linear = True
    keeps_nonnegative = True

    def out_type(self, t):
        return self.require_real(t)

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return 1.0


@register_family("drop_block", examples=_db_examples)
@dataclass(frozen=True, repr=False)
class DropBlock(_TrainOnly):
    """DropBlock with square blocks of side ``block_size`` and drop rate ``p``
    (the identity in eval mode)."""

    block_size: int = 7
    p: float = 0.1
    _positional = ("block_size", "p")

    def __post_init__(self):
        check_int("drop_block", "block_size", self.block_size)
        _check_p("drop_block", self.p)

    def build(self, t):
        return DropBlockModule(self.block_size, float(self.p))


@op("drop_block")
def drop_block(block_size: int = 7, p: float = 0.1) -> DropBlock:
    """DropBlock: drop contiguous ``block_size`` squares so that about a
    fraction ``p`` of each feature map is zero in training; rescales the rest.

    >>> from operad import ops, Field
    >>> ops.drop_block(3, 0.1).bind(Field(4)).eval()(torch.ones(1, 4, 8, 8)).mean().item()
    1.0
    """
    return DropBlock(block_size, _check_p("drop_block", p))


def set_drop_block_progress(model: nn.Module, fraction: float) -> int:
    """The linear schedule of DropBlock: set every DropBlock in ``model`` to
    drop ``fraction * p`` (``fraction`` clipped to [0, 1]); returns how many.

    >>> m = drop_block(3, 0.2).bind(Field(2))
    >>> set_drop_block_progress(m, 0.5), round(float(m.gamma(8, 8)) * 9 * 36 / 64, 4)
    (1, 0.1)
    """
    n = 0
    for mod in model.modules():
        if isinstance(mod, DropBlockModule):
            mod.scale.fill_(min(1.0, max(0.0, float(fraction))))
            n += 1
    return n


# ---------------------------------------------------------------------------
# Spatial dropout
# ---------------------------------------------------------------------------
def _sd_examples(draw):
    from hypothesis import strategies as st
    return spatial_dropout(draw(st.floats(0.0, 0.9))), Field(draw(st.integers(1, 6))), (5, 6)


@register_family("spatial_dropout", examples=_sd_examples)
@dataclass(frozen=True, repr=False)
class SpatialDropout(_TrainOnly):
    """Spatial dropout (Tompson et al. 2015): whole channels dropped per sample
    with probability ``p``, the rest scaled by ``1 / (1 - p)``; the identity in
    eval mode."""

    p: float = 0.1
    _positional = ("p",)

    def __post_init__(self):
        _check_p("spatial_dropout", self.p)

    def build(self, t):
        return nn.Dropout2d(self.p)


@op("spatial_dropout")
def spatial_dropout(p: float = 0.1) -> SpatialDropout:
    """Drop whole feature maps (channels) per sample with probability ``p``.

    >>> from operad import ops
    >>> ops.spatial_dropout(0.2)
    spatial_dropout(0.2)
    """
    return SpatialDropout(_check_p("spatial_dropout", p))


# ---------------------------------------------------------------------------
# ShakeDrop
# ---------------------------------------------------------------------------
class ShakeDropModule(nn.Module):
    """ShakeDrop (Yamada et al. 2019) on a residual branch: per sample, a gate
    ``b ~ Bernoulli(1 - p)``; the forward pass multiplies by
    ``b + alpha - b alpha`` (alpha uniform in ``alpha_range``), the backward
    pass by ``b + beta - b beta`` (beta uniform in ``beta_range``). Eval
    multiplies by the expectation ``(1 - p) + p E[alpha]``."""

    def __init__(self, p: float, alpha_range: Tuple[float, float], beta_range: Tuple[float, float]):
        super().__init__()
        self.p, self.alpha_range, self.beta_range = p, tuple(alpha_range), tuple(beta_range)
        self.expectation = (1.0 - p) + p * 0.5 * (alpha_range[0] + alpha_range[1])

    def coefficients(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One draw of the per-sample forward and backward coefficients."""
        shape = _per_sample(x)
        gate = (torch.rand(shape, device=x.device) >= self.p).to(x.dtype)
        (a0, a1), (b0, b1) = self.alpha_range, self.beta_range
        alpha = a0 + (a1 - a0) * torch.rand(shape, device=x.device, dtype=x.dtype)
        beta = b0 + (b1 - b0) * torch.rand(shape, device=x.device, dtype=x.dtype)
        return gate + alpha - gate * alpha, gate + beta - gate * beta

    def forward(self, x):
        if not self.training:
            return x * self.expectation
        fwd, bwd = self.coefficients(x)
        return shake(x, fwd, bwd)

    def extra_repr(self):
        return f"p={self.p}, alpha_range={self.alpha_range}, beta_range={self.beta_range}"


def _sdrop_examples(draw):
    from hypothesis import strategies as st
    a0 = draw(st.floats(-1.0, 0.0))
    return (shake_drop(draw(st.floats(0.0, 0.9)), (a0, draw(st.floats(a0, 1.0)))), Field(draw(st.integers(1, 5))),
            _size(draw))


def _range(name: str, r) -> Tuple[float, float]:
    if not isinstance(r, (tuple, list)):
        raise OpArgTypeError(f"shake_drop {name} must be (low, high) with low <= high; got {r!r} "
                             f"({type(r).__name__})")
    if len(r) != 2:
        raise OpArgError(f"shake_drop {name} must be (low, high) with low <= high; got {r!r}")
    r = tuple(float(check_float("shake_drop", name, v)) for v in r)
    if r[0] > r[1]:
        raise OpArgError(f"shake_drop {name} must be (low, high) with low <= high; got {r!r}")
    return r


@register_family("shake_drop", examples=_sdrop_examples)
@dataclass(frozen=True, repr=False)
class ShakeDrop(Term):
    """ShakeDrop with drop probability ``p`` (the paper's ``1 - p_l``); in eval
    mode a scaling by its expectation, hence linear with Lipschitz constant
    ``|E|``."""

    p: float = 0.5
    alpha_range: Tuple[float, float] = (-1.0, 1.0)
    beta_range: Tuple[float, float] = (0.0, 1.0)
    _positional = ("p",)
    linear = True

    def __post_init__(self):
        _check_p("shake_drop", self.p)
        _range("alpha_range", self.alpha_range)
        _range("beta_range", self.beta_range)

    def _expectation(self) -> float:
        return (1.0 - self.p) + self.p * 0.5 * (self.alpha_range[0] + self.alpha_range[1])

    def nonnegative(self, t, input_nonnegative=False):
        """On non-negative inputs when ``alpha >= 0``: every coefficient ``b + alpha - b alpha``
        of training (b in {0, 1}) and the eval expectation are then >= 0."""
        return bool(input_nonnegative and self.alpha_range[0] >= 0)

    def out_type(self, t):
        return self.require_real(t, rank=None)

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return abs(self._expectation())

    def build(self, t):
        return ShakeDropModule(float(self.p), self.alpha_range, self.beta_range)


@op("shake_drop")
def shake_drop(p: float = 0.5, alpha_range=(-1.0, 1.0), beta_range=(0.0, 1.0)) -> ShakeDrop:
    """ShakeDrop on the output of a residual branch: dropped (with probability
    ``p``) samples are scaled by alpha forward and beta backward.

    >>> from operad import ops, Field
    >>> m = ops.shake_drop(0.5).bind(Field(2)).eval()
    >>> m(torch.ones(1, 2, 3, 3)).mean().item()
    0.5
    """
    return ShakeDrop(_check_p("shake_drop", p), _range("alpha_range", alpha_range), _range("beta_range", beta_range))


# ---------------------------------------------------------------------------
# Shake-Shake
# ---------------------------------------------------------------------------
class ShakeShakeModule(nn.Module):
    """``alpha a(x) + (1 - alpha) b(x)`` forward and ``beta``, ``1 - beta`` in the
    backward pass, alpha and beta independent U(0, 1) per sample ("Shake-Shake-Image",
    Gastaldi 2017); ``0.5 a(x) + 0.5 b(x)`` in eval mode."""

    def __init__(self, branches):
        super().__init__()
        self.branch = nn.ModuleList(branches)

    def coefficients(self, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        shape = _per_sample(y)
        return (torch.rand(shape, device=y.device, dtype=y.dtype),
                torch.rand(shape, device=y.device, dtype=y.dtype))

    def forward(self, x):
        a, b = self.branch[0](x), self.branch[1](x)
        if not self.training:
            return 0.5 * (a + b)
        alpha, beta = self.coefficients(a)
        return shake(a, alpha, beta) + shake(b, 1.0 - alpha, 1.0 - beta)


def _ss_examples(draw):
    from hypothesis import strategies as st
    cin, out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return ShakeShake((_leaf(draw, out), _leaf(draw, out))), Field(cin), _size(draw)


@register_family("shake_shake", examples=_ss_examples)
@dataclass(frozen=True, repr=False)
class ShakeShake(_BranchTerm):
    """Two branches mixed by random convex weights in training, 0.5 / 0.5 in eval."""

    items: Tuple[Term, ...]
    module_cls = ShakeShakeModule

    def __post_init__(self):
        if len(self.items) != 2:
            raise OpArgError(f"shake_shake takes two branches; got {len(self.items)}")

    def out_type(self, t):
        a, b = self._branch_types(t)
        if a != b:
            raise TypeMismatch(f"expects branches that produce one field; branch[0] gives {a!r}, "
                               f"branch[1] gives {b!r}", op="shake_shake")
        self.require_real(a, rank=None)
        return a

    @property
    def linear(self):
        return all(b.linear for b in self.items)

    def lipschitz_bound(self, m, size=None):
        bounds = self._branch_bounds(m, size)
        return None if None in bounds else 0.5 * float(sum(bounds))


@op("shake_shake")
def shake_shake(a: Term, b: Term) -> ShakeShake:
    """Shake-Shake of two branches that see the same input and give one field.

    >>> from operad import ops, Field
    >>> ops.shake_shake(ops.conv(4), ops.conv(4)).bind(Field(3)).out_type
    Field(4)
    """
    if not isinstance(a, Term) or not isinstance(b, Term):
        raise OpArgTypeError("ops.shake_shake takes two terms: shake_shake(a, b)")
    return ShakeShake((a, b))


# ---------------------------------------------------------------------------
# Stochastic depth over a network
# ---------------------------------------------------------------------------
def linear_drop_path(term: Term, p_last: float) -> Term:
    """The linear decay rule of stochastic depth (Huang et al. 2016): the l-th of
    L residual nodes (in order of appearance) gets ``drop_path = p_last * l / L``,
    so the last block drops with ``p_last`` and early blocks rarely. A block
    repeated with ``* n`` shares one rate. Nested residuals count separately.

    >>> from operad import ops
    >>> t = ops.residual(ops.conv(4)) >> ops.residual(ops.conv(4))
    >>> [r.drop_path for r in linear_drop_path(t, 0.5).walk() if isinstance(r, Residual)]
    [0.25, 0.5]
    """
    _check_p("linear_drop_path", p_last, "p_last")
    total = sum(isinstance(t, Residual) for t in term.walk())
    if total == 0 or p_last == 0.0:
        return term
    seen = [0]

    def rate(t: Term) -> Term:
        if not isinstance(t, Residual):
            return t
        seen[0] += 1
        return replace(t, drop_path=p_last * seen[0] / total)

    return term.map(rate)
