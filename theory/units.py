"""Mathematics of Min units and dendritic units.

Costs (exact, sympy; MACs as :class:`~torch.utils.flop_counter.FlopCounterMode`
counts them, per sample):

* :func:`dendritic_conv_cost`, :func:`dendritic_linear_cost`, :func:`min_unit_cost`,
  :func:`min_block_cost`: one unit;
* :func:`cifar_resnet_cost`: a whole CIFAR ResNet of depth 6n + 2, symbolic in n
  and the input size, in its standard, dendritic and Min versions (the "FLOPs
  and weights change" of a substitution).

Geometry of a dendritic unit ``y = sum_i w_i ReLU(x_i + b_i)``: it is linear on
each cell of the axis-aligned grid cut by the hyperplanes ``x_i = -b_i``, so a
unit on d inputs has 2^d regions of linearity (a standard unit
``ReLU(w . x + b)`` has 2), and a layer of m dendritic units has at most
``prod_i (m_i + 1)`` regions, m_i the number of distinct biases on input i
(:func:`dendritic_regions`); a layer of m standard units on d inputs at most
``sum_{i<=d} C(m, i)`` (:func:`standard_regions_max`).

Representational power: on one input, ``linear(n) >> relu >> linear(1)`` has at
most n breakpoints, while the dendritic net ``dendritic_linear(n) >>
dendritic_linear(1)`` of the same width realises 2n (:func:`dendritic_staircase`),
so it represents exactly a function the standard width-n net cannot.
Universal approximation: the same dendritic net of width n realises every
continuous piecewise-linear interpolant with n knots
(:func:`dendritic_interpolant`), hence approximates any continuous function on
an interval (error O(1/n^2) for C^2 targets).

End-stopping: the minimum of two non-negative filter responses is their AND;
with the two orthogonal second derivatives as filters it answers to the end of
a line segment but not to a line passing through (:func:`end_stopping_response`).
"""
from __future__ import annotations

import math
from itertools import product
from typing import Dict, Sequence, Tuple

import sympy
import torch
from torch import nn

from ..operators.algebra.term import Cost
from .cost import H, W

__all__ = ["dendritic_conv_cost", "dendritic_linear_cost", "conv_cost", "min_unit_cost", "min_block_cost",
           "cifar_resnet_cost", "dendritic_regions", "standard_regions_max", "activation_patterns",
           "breakpoints", "dendritic_staircase", "standard_max_breakpoints", "dendritic_interpolant",
           "end_stopping_stimuli", "end_stopping_response"]

n_sym = sympy.Symbol("n", positive=True, integer=True)


# ---------------------------------------------------------------------------
# Costs
# ---------------------------------------------------------------------------
def conv_cost(cin, out, k, ho, wo, bias=False) -> Cost:
    """A k x k convolution: ``params = out cin k^2 (+ out)``, ``macs = out cin k^2 ho wo``."""
    return Cost(out * cin * k * k + (out if bias else 0), out * cin * k * k * ho * wo)


def dendritic_conv_cost(cin, out, k, ho, wo, bias=False) -> Cost:
    """A dendritic k x k convolution: ``params = 2 out cin k^2 (+ out)`` (weights and
    per-connection biases), ``macs = out cin k^2 ho wo`` (the same contraction as a
    conv; the ``2 out cin k^2 ho wo`` bias additions and ReLUs are element-wise)."""
    return Cost(2 * out * cin * k * k + (out if bias else 0), out * cin * k * k * ho * wo)


def dendritic_linear_cost(cin, out, bias=False) -> Cost:
    """``params = 2 out cin (+ out)``, ``macs = out cin``."""
    return Cost(2 * out * cin + (out if bias else 0), out * cin)


def min_unit_cost(cin, out, h, w, k=3, q=2, n=2, stride=1, norm="instance") -> Cost:
    """The Min unit on ``cin`` channels of size h x w (hidden ``c = q out``, outputs of
    size ``h / stride`` x ``w / stride``; sizes divisible by the stride)::

        params = c cin + n c k^2 + out c + 2 c + 2 n c [norm] + 2 out
        macs   = c cin h w + (n c k^2 + out c) (h / s)(w / s)
    """
    c = q * out
    ho, wo = sympy.sympify(h) / stride, sympy.sympify(w) / stride
    norm_params = 2 * n * c if norm in ("instance", "bn") else 0
    params = c * cin + n * c * k * k + out * c + 2 * c + norm_params + 2 * out
    macs = c * cin * h * w + (n * c * k * k + out * c) * ho * wo
    return Cost(_num(params), _num(macs))


def min_block_cost(cin, out, h, w, k=3, q=2, n=2, stride=1, norm="instance") -> Cost:
    """The Min block: its unit (the shortcut, pooling and zero channels, costs nothing)."""
    return min_unit_cost(cin, out, h, w, k, q, n, stride, norm)


def _basic(cin, out, hi, wi, stride, dendritic: bool) -> Cost:
    """A basic block: two 3x3 convs (both dendritic in the dendritic version: the first
    is fed by the ReLU after the previous sum, the second by the inner ReLU) + 2 BNs."""
    f = dendritic_conv_cost if dendritic else conv_cost
    ho, wo = hi / stride, wi / stride
    return f(cin, out, 3, ho, wo) + f(out, out, 3, ho, wo) + Cost(4 * out, 0)


def cifar_resnet_cost(variant: str = "standard", n=n_sym, widths: Sequence[int] = (16, 32, 64),
                      num_classes: int = 10, in_chans: int = 3, h=H, w=W, k: int = 3, q: int = 2,
                      branches: int = 2, blocks: str = "first") -> Cost:
    """Exact cost of a CIFAR ResNet of depth ``6n + 2`` (``n`` may be a symbol), for
    input sizes divisible by 4, in one of its versions:

    * ``"standard"``: ``resnet{6n+2}`` (option-A shortcuts, bias-free convs, BN);
    * ``"dendritic"``: ``to_dendritic`` of it: every conv but the stem and the FC
      head dendritic (weights doubled, MACs unchanged);
    * ``"min"``: ``to_min(..., blocks)``: the first unit of each stage (or all
      units) a Min block.

    >>> cifar_resnet_cost("standard", 3, h=32, w=32)
    Cost(params=269722, macs=40551040)
    """
    if variant not in ("standard", "dendritic", "min"):
        raise ValueError(f"variant must be 'standard', 'dendritic' or 'min'; got {variant!r}")
    dend = variant == "dendritic"
    h, w, n = sympy.sympify(h), sympy.sympify(w), sympy.sympify(n)
    total = conv_cost(in_chans, widths[0], 3, h, w) + Cost(2 * widths[0], 0)
    cin, hi, wi = widths[0], h, w
    for i, out in enumerate(widths):
        s = 1 if i == 0 else 2
        if variant == "min":
            first = min_block_cost(cin, out, hi, wi, k, q, branches, s)
        else:
            first = _basic(cin, out, hi, wi, s, dend)
        hi, wi = hi / s, wi / s
        if variant == "min" and blocks == "all":
            rest = min_block_cost(out, out, hi, wi, k, q, branches, 1)
        else:
            rest = _basic(out, out, hi, wi, 1, dend)
        total = total + first + rest * (n - 1)
        cin = out
    head = (dendritic_linear_cost if dend else lambda a, b, bias: Cost(a * b + b, a * b))(cin, num_classes, True)
    total = total + head
    return Cost(_num(total.params), _num(total.macs))


def _num(e):
    e = sympy.expand(sympy.sympify(e))
    return int(e) if e.is_Integer else e


# ---------------------------------------------------------------------------
# Regions of linearity
# ---------------------------------------------------------------------------
def dendritic_regions(b: torch.Tensor) -> int:
    """The number of regions of linearity of a dendritic layer with dendrite biases
    ``b`` of shape (m, d) (all weights non-zero): the cells of the grid cut by the
    hyperplanes ``x_i = -b_ji``, ``prod_i (#distinct b[:, i] + 1)``."""
    return math.prod(len(torch.unique(b[:, i])) + 1 for i in range(b.shape[1]))


def standard_regions_max(m: int, d: int) -> int:
    """Zaslavsky's bound: m hyperplanes cut R^d into at most ``sum_{i<=d} C(m, i)`` regions."""
    return sum(math.comb(m, i) for i in range(d + 1))


def activation_patterns(pre: torch.Tensor) -> int:
    """The number of distinct on/off patterns among rows of pre-activations ``pre``
    (points x units): the linear regions a sample of points visits."""
    return len({tuple(r) for r in (pre > 0).to(torch.int8).tolist()})


def breakpoints(f, lo: float = -4.0, hi: float = 4.0, num: int = 80001, tol: float = 1e-6) -> int:
    """The number of kinks of a 1-D piecewise-linear function ``f`` on [lo, hi]
    (second differences on a fine grid, adjacent hits merged)."""
    x = torch.linspace(lo, hi, num, dtype=torch.float64)
    with torch.no_grad():
        y = f(x[:, None]).reshape(-1)
    d2 = (y[2:] - 2 * y[1:-1] + y[:-2]).abs() > tol
    idx = torch.nonzero(d2).reshape(-1).tolist()
    count, last = 0, -10
    for i in idx:
        if i > last + 2:
            count += 1
        last = i
    return count


def standard_max_breakpoints(width: int) -> int:
    """``linear(width) >> relu >> linear(1)`` on one input has at most ``width`` kinks
    (one per hidden unit, at ``x = -b_j / w_j``)."""
    return width


def dendritic_staircase(width: int) -> nn.Module:
    """A dendritic net 1 -> width -> 1 (``dendritic_linear(width, bias=True) >>
    dendritic_linear(1, bias=True)``, biases set by hand) whose function has 2 width
    kinks: the sum of ``width`` clipped ramps ``ReLU(1 - ReLU(x - 2j))``, each
    falling from 1 to 0 on [2j, 2j + 1]. No standard width-``width`` net can
    represent it (:func:`standard_max_breakpoints`)."""
    from .. import ops
    from ..operators.algebra.field import Field
    net = (ops.dendritic_linear(width, bias=True) >> ops.dendritic_linear(1, bias=True)).bind(Field(1, rank=0))
    l1, l2 = net[0], net[1]
    with torch.no_grad():
        centre = (width - 1)  # ramps on [2j - centre, 2j - centre + 1] keep the kinks inside [-4, 4] for width <= 4
        for j in range(width):
            l1.weight[j, 0] = -1.0
            l1.dendrite_bias[j, 0] = -(2.0 * j - centre)   # h_j = -ReLU(x - t_j)
            l1.bias[j] = 0.0
            l2.weight[0, j] = 1.0
            l2.dendrite_bias[0, j] = 1.0                   # ReLU(1 + h_j)
        l2.bias.zero_()
    return net.double()


def dendritic_interpolant(knots: torch.Tensor, values: torch.Tensor) -> nn.Module:
    """The continuous piecewise-linear interpolant of ``values`` at sorted ``knots``
    (extended linearly beyond them) as a dendritic net 1 -> n -> 1 with
    ``n = len(knots) - 1``: hidden unit j is ``ReLU(x - t_j)`` (weight 1, dendrite bias
    ``-t_j``), the output ``v_0 + sum_j s_j ReLU(h_j + 0)`` with the slope changes s_j."""
    from .. import ops
    from ..operators.algebra.field import Field
    t = knots.to(torch.float64)
    v = values.to(torch.float64)
    slopes = (v[1:] - v[:-1]) / (t[1:] - t[:-1])
    n = len(t) - 1
    net = (ops.dendritic_linear(n, bias=True) >> ops.dendritic_linear(1, bias=True)).bind(Field(1, rank=0))
    net = net.double()
    l1, l2 = net[0], net[1]
    with torch.no_grad():
        l1.weight.fill_(1.0)
        l1.dendrite_bias[:, 0] = -t[:-1]
        l1.bias.zero_()
        l2.dendrite_bias.zero_()
        l2.weight[0, 0] = slopes[0]
        l2.weight[0, 1:] = slopes[1:] - slopes[:-1]
        l2.bias[0] = v[0]
    # below t_0 every hidden unit is 0: the net is constant v_0 there (flat extension)
    return net


# ---------------------------------------------------------------------------
# End-stopping: min of two filters as AND
# ---------------------------------------------------------------------------
def end_stopping_stimuli(size: int = 21, row: int = None) -> Dict[str, torch.Tensor]:
    """A bright horizontal line on a dark (1, 1, size, size) image: ``"through"``
    crosses the whole image; ``"ending"`` stops at the centre column."""
    row = size // 2 if row is None else row
    through = torch.zeros(1, 1, size, size, dtype=torch.float64)
    through[..., row, :] = 1.0
    ending = through.clone()
    ending[..., row, size // 2 + 1:] = 0.0
    return {"through": through, "ending": ending}


def end_stopping_response(stimulus: torch.Tensor, radius: int = 3) -> Dict[str, float]:
    """Responses inside a (2 radius + 1)^2 receptive field at the image centre of
    ``min_filters(k=3, n=2, norm=None)`` whose two depthwise filters are the negative
    second derivatives across (``-d2/dy2``) and along (``-d2/dx2``) the line, and of
    the first filter alone (a linear line detector + ReLU)."""
    from .. import ops
    from ..operators.algebra.field import Field
    m = ops.min_filters(k=3, n=2, norm=None, padding_mode="circular").bind(Field(1)).double().eval()
    across = torch.tensor([[0, -1, 0], [0, 2, 0], [0, -1, 0]], dtype=torch.float64)
    along = across.t().clone()
    with torch.no_grad():
        m.branch[0][0].weight.copy_(across.view(1, 1, 3, 3))
        m.branch[1][0].weight.copy_(along.view(1, 1, 3, 3))
        y_min = m(stimulus)
        y_line = m.branch[0](stimulus)
    c = stimulus.shape[-1] // 2
    win = (..., slice(c - radius, c + radius + 1), slice(c - radius, c + radius + 1))
    return {"min": float(y_min[win].max()), "line": float(y_line[win].max())}
