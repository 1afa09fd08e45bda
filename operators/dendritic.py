"""Dendrite-activated connections (Metta et al., "Increasing biases can be more
efficient than increasing weights", WACV 2024): ``dendritic_linear`` and
``dendritic_conv``.

A standard unit sums its inputs and then applies the nonlinearity; a
dendritic unit applies it on every connection, each with its own bias::

    y_j = sum_i w_ji * ReLU(x_i + b_ji)                       (dendritic_linear)
    y_o(p) = sum_{i, t} w_oit * ReLU(x_i(s p + d t) + b_oit)  (dendritic_conv)

one bias per (out, in) pair, and per (out, in, tap) in the convolutional form.
With every ``b = 0`` the unit is exactly ``linear(relu(x))`` / ``conv(relu(x))``
(biases start at zero, so a dendritic network starts as its standard
counterpart; see :func:`operad.rewrite.to_dendritic`). The
convolution sees the zero-padded input: a padded tap contributes
``w * ReLU(b)``.

Implementation (``impl``):

* ``"fused"`` (default): the input is unfolded once to ``u`` of shape
  ``(B, J, L)`` (``J = C_in k_h k_w`` taps, ``L = H_out W_out`` windows); a custom
  autograd function walks the output channels in chunks, forms
  ``ReLU(u + b)`` for one chunk at a time, contracts it with the weights
  (``einsum``, a batched matrix product) and keeps nothing but ``u`` for the
  backward pass, which recomputes each chunk. Peak extra memory is one chunk,
  at most about ``CHUNK_ELEMENTS`` numbers (plus ``u``), in training as well
  as in inference.
* ``"naive"``: the whole ``(B, C_out, J, L)`` tensor at once under plain
  autograd, which also keeps it for the backward pass. Same numbers; kept as
  the reference and for the memory benchmark
  (``python -m operad.experiments.bench.dendritic``).
* ``"compiled"``: the product written as one broadcast multiply-and-sum and
  handed to ``torch.compile``; inductor fuses it and its three gradients into
  loops that read ``u`` and never build the per-connection tensor (C++ on the
  CPU, Triton on the GPU). It keeps what the fused form keeps and is about 30x
  faster than it: 7.6 ms against 212 ms at B16 C16->16 16x16 and 6.2 against
  213 ms at B16 C32->32 8x8 (4.3x and 4.2x ``conv(relu(x))``; one thread,
  timed in alternation by the benchmark below). A dendritic ResNet-20 trains
  at 27 images/s on one thread against about 1 with ``"fused"``. Compiling costs
  seconds per new shape, and where it fails (no C++ compiler) the layer warns
  once and runs the fused form. Under a dispatch mode (``FlopCounterMode``
  counting the cost) it also runs the fused form, which a counter can see.

What ``python -m operad.experiments.bench.dendritic --threads 1`` printed (B16
C16->16 16x16, k=3; forms timed in alternation; a 2-core machine shared by other
jobs, load average 9): autograd keeps 72.0 MiB for the naive form and 2.3 MiB for
the fused one (31x less); at this size one chunk holds the whole per-connection
tensor, so the largest transient is 36 MiB for both. Forward+backward: naive
690 ms, fused 1361 ms (2.0x the naive form: the backward recomputes), against
7.9 ms for ``conv(relu(x))`` (87x and 172x). At B16 C32->32 8x8: 72.0 / 1.2 MiB
saved, 768 / 1456 ms against 1.5 ms. Times on a loaded machine move a lot (with
two threads the same run timed the baseline itself at 516 ms); the memory figures
do not. The fused form is the default, since it needs no compiler; ``impl="naive"``
is faster where memory is ample, and ``impl="compiled"`` is the one to train with.

Under ``torch.compile`` (a whole compiled model) the compiled form stays its own
kernel behind a graph break (inlined into the model's graph it ran 5x slower),
and the fused form runs the same chunks under plain autograd, since Dynamo cannot
trace a custom autograd function's ``jvp`` rule; both run those chunks inside
``torch.func`` transforms (the Lipschitz power iteration uses ``jvp``).

``bias_init`` is the standard deviation of the dendrite biases at
initialisation (0 by default: the unit starts as ``conv(relu(x))``).

Every bias must meet its own copy of the input, so there is no saving by
sharing ``ReLU(x + b)`` between output channels: the ``(in, tap)`` pairs carry
``C_out`` distinct biases each, and the element-wise work is
``C_out * J * L`` per sample whichever way it is arranged; only memory can be
saved, and the fused form does.

Cost per sample (exactly what ``FlopCounterMode`` counts, since the
contraction is a matrix product)::

    params = 2 * C_out * C_in * k_h * k_w  (+ C_out with bias)
    macs   = C_out * C_in * k_h * k_w * H_out * W_out

the MACs of the ordinary convolution. The paper-level count adds the
per-connection work the counter ignores: ``paper_macs`` is the same number of
multiply-adds, and :meth:`DendriticConv.elementwise` gives the
``2 * C_out * C_in * k_h * k_w * H_out * W_out`` bias additions and ReLUs
(against ``C_out * H_out * W_out`` ReLUs for a standard conv + ReLU).

Lipschitz: ReLU is 1-Lipschitz, so ``|dy_o(p)| <= sum |w_oit| |dx_i(p + t)|``
entry-wise, and the unit is bounded by the convolution with ``|W|``:
``||abs(W)||_2 * sqrt(overlap)`` (``||abs(W)||_2`` for the linear form).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
# a dispatch mode (FlopCounterMode) sees into the fused form, not into a compiled kernel: impl="compiled" runs
# the fused form under one
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .algebra.util import check_conv_args, pair, spectral_norm, windows_per_pixel
from .conv import conv_out_size
from .algebra.field import Channels, Field
from .algebra.term import ALL_TRANSFORMS, POINTWISE, Cost, Term, op, register_family

__all__ = ["DendriticLinear", "DendriticConv", "dendritic_linear", "dendritic_conv", "dendritic_product",
           "CHUNK_ELEMENTS"]

#: numbers per chunk of ``ReLU(u + b)`` in the fused implementation (64 MiB in float32)
CHUNK_ELEMENTS = 1 << 24


def _chunk(batch: int, out: int, j: int, l: int) -> int:
    per_channel = max(1, batch * j * l)
    return max(1, min(out, CHUNK_ELEMENTS // per_channel))


class _DendriticProduct(torch.autograd.Function):
    """``y[b, o, l] = sum_j w[o, j] * relu(u[b, j, l] + bias[o, j])`` in chunks of
    output channels, saving only the inputs; backward recomputes each chunk."""

    @staticmethod
    def forward(u, w, b):
        return _chunked(u, w, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, w, b = inputs
        ctx.save_for_backward(u, w, b)

    @staticmethod
    def backward(ctx, g):
        u_in, w_in, b_in = ctx.saved_tensors
        # under autocast the forward ran in bf16/fp16 and u may be bf16 while w and b are float32: the
        # backward runs in their common (widest) type and returns each gradient in its input's type
        ct = torch.promote_types(torch.promote_types(u_in.dtype, w_in.dtype), b_in.dtype)
        u, w, b, g = u_in.to(ct), w_in.to(ct), b_in.to(ct), g.to(ct)
        need_u, need_w, need_b = ctx.needs_input_grad
        step = _chunk(u.shape[0], w.shape[0], u.shape[1], u.shape[2])
        gu = torch.zeros_like(u) if need_u else None
        gws, gbs = [], []
        for s in range(0, w.shape[0], step):
            pre = u.unsqueeze(1) + b[s:s + step, :, None]
            gc = g[:, s:s + step]
            wc = w[s:s + step]
            if need_w:
                gws.append(torch.einsum("bcl,bcjl->cj", gc, torch.relu(pre)))
            gm = gc.unsqueeze(2) * (pre > 0).to(g.dtype)
            if need_b:
                gbs.append(gm.sum(dim=(0, 3)) * wc)
            if need_u:
                gu = gu + torch.einsum("bcjl,cj->bjl", gm, wc)
        gw = torch.cat(gws, 0).to(w_in.dtype) if need_w else None
        gb = torch.cat(gbs, 0).to(b_in.dtype) if need_b else None
        return (gu.to(u_in.dtype) if need_u else None), gw, gb


def dendritic_product(u: torch.Tensor, w: torch.Tensor, b: torch.Tensor, impl: str = "fused") -> torch.Tensor:
    """``y[b, o, l] = sum_j w[o, j] relu(u[b, j, l] + b[o, j])`` for ``u`` of shape
    ``(B, J, L)``, ``w`` and ``b`` of shape ``(O, J)``; ``impl`` is ``"fused"``
    (chunked, memory ``O(B J L)`` besides one chunk), ``"naive"`` or ``"compiled"``
    (one inductor kernel, the fastest where it compiles).

    >>> import torch
    >>> u, w = torch.randn(2, 3, 5), torch.randn(4, 3)
    >>> y = dendritic_product(u, w, torch.zeros(4, 3))
    >>> torch.allclose(y, torch.einsum("oj,bjl->bol", w, u.relu()), atol=1e-6)
    True
    """
    if impl == "naive":
        return _contract(u.permute(1, 0, 2), w, b)
    if torch.compiler.is_compiling():
        return _outside_graph(u, w, b) if impl == "compiled" else _chunked(u, w, b)
    if _functorch_active(u):
        return _chunked(u, w, b)
    fn = _compiled_reduction() if impl == "compiled" and _get_current_dispatch_mode() is None else None
    if fn is not None:
        try:
            return fn(u, w, b)
        except Exception as e:  # no C++ compiler / Triton: say so once, then run the fused form
            _disable_compiled(e)
    return _DendriticProduct.apply(u, w, b)


_COMPILED: dict = {}


@torch.compiler.disable
def _outside_graph(u, w, b):
    # inlined into a whole compiled model, the reduction trained a dendritic ResNet-20 at 5 images/s (one
    # thread, 3.2 GiB); as its own kernel behind a graph break, at 27 (1.0 GiB)
    return dendritic_product(u, w, b, "compiled")


def _compiled_reduction():
    """:func:`_reduction` under ``torch.compile`` (built on first use; None once it failed)."""
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_reduction, dynamic=None)
    return _COMPILED["fn"]


def _disable_compiled(e: Exception) -> None:
    import warnings

    _COMPILED["fn"] = None
    warnings.warn(f"dendritic impl='compiled' could not compile ({type(e).__name__}: {str(e)[:200]}); "
                  "running impl='fused' instead (same numbers, slower)", RuntimeWarning, stacklevel=3)


def _functorch_active(u: torch.Tensor) -> bool:
    # torch.func transforms (jvp in verify.lipschitz) need a custom jvp rule, which
    # Dynamo cannot trace; there the plain-autograd chunked form is used instead.
    return torch._C._functorch.is_functorch_wrapped_tensor(u)


def _reduction(u, w, b):
    """The product as one broadcast multiply-and-sum, for ``torch.compile``: inductor
    fuses it, and its gradients, into loops that never hold the ``(B, O, J, L)``
    tensor (in eager mode this form would materialize it)."""
    return (w[None, :, :, None] * torch.relu(u[:, None] + b[None, :, :, None])).sum(2)


def _chunked(u, w, b):
    """The fused forward under plain autograd (used when compiling and under torch.func):
    the same chunks and the same numbers; autograd keeps every chunk for backward."""
    step = _chunk(u.shape[0], w.shape[0], u.shape[1], u.shape[2])
    ut = u.permute(1, 0, 2)
    outs = [_contract(ut, w[s:s + step], b[s:s + step]) for s in range(0, w.shape[0], step)]
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


def _contract(ut, w, b):
    """``ut``: the input as (J, B, L); ``w``, ``b``: (c, J) -> (B, c, L). One batched matrix
    product (c, 1, J) @ (c, J, B L), so the counter sees exactly c J B L multiply-adds."""
    j, bsz, l = ut.shape
    z = torch.relu(ut.unsqueeze(0) + b[:, :, None, None])          # (c, J, B, L)
    y = torch.bmm(w.unsqueeze(1), z.reshape(w.shape[0], j, bsz * l))  # (c, 1, B L)
    return y.reshape(w.shape[0], bsz, l).transpose(0, 1)


IMPLS = ("fused", "naive", "compiled")


def _check_impl(impl: str):
    if impl not in IMPLS:
        raise ValueError(f"dendritic impl must be one of {', '.join(map(repr, IMPLS))}; got {impl!r}")


# ---------------------------------------------------------------------------
# Fully connected
# ---------------------------------------------------------------------------
class DendriticLinearModule(nn.Module):
    def __init__(self, cin: int, out: int, bias: bool, impl: str, bias_init: float = 0.0):
        super().__init__()
        self.impl = impl
        self.weight = nn.Parameter(torch.empty(out, cin))
        self.dendrite_bias = nn.Parameter(torch.zeros(out, cin))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias_init:
            nn.init.normal_(self.dendrite_bias, 0.0, bias_init)

    def forward(self, x):
        y = dendritic_product(x.unsqueeze(-1), self.weight, self.dendrite_bias, self.impl).squeeze(-1)
        return y if self.bias is None else y + self.bias


def _lexamples(draw):
    from hypothesis import strategies as st
    return (dendritic_linear(draw(st.integers(1, 8)), bias=draw(st.booleans()),
                             impl=draw(st.sampled_from(["fused", "naive"])), bias_init=0.5),
            Field(draw(st.integers(1, 8)), rank=0), None)


@register_family("dendritic_linear", examples=_lexamples)
@dataclass(frozen=True, repr=False)
class DendriticLinear(Term):
    """A fully connected dendritic layer on a rank-0 field: ``y_j = sum_i w_ji
    ReLU(x_i + b_ji)`` (+ an output bias with ``bias=True``)."""

    out: Channels = 10
    bias: bool = False
    impl: str = "fused"
    bias_init: float = 0.0
    _arg_rules = {"bias_init": "[0, inf)"}  # a standard deviation
    _positional = ("out",)

    def __post_init__(self):
        _check_impl(self.impl)

    def out_type(self, t):
        self.require_real(t, rank=0)
        return Field(self.out, rank=0)

    def cost(self, t, size):
        return Cost(2 * t.channels * self.out + (self.out if self.bias else 0), t.channels * self.out)

    def equivariance(self, t):
        return ALL_TRANSFORMS

    def lipschitz_bound(self, m, size=None):
        return spectral_norm(m.weight.detach().abs())

    def build(self, t):
        return DendriticLinearModule(t.channels, self.out, self.bias, self.impl, self.bias_init)


@op("dendritic_linear")
def dendritic_linear(out: Channels, bias: bool = False, impl: str = "fused",
                     bias_init: float = 0.0) -> DendriticLinear:
    """A fully connected dendritic layer: a ReLU with its own bias on every connection.

    >>> from operad import ops, Field
    >>> m = ops.dendritic_linear(10).bind(Field(16, rank=0))
    >>> m.weight.shape, m.dendrite_bias.shape
    (torch.Size([10, 16]), torch.Size([10, 16]))
    """
    return DendriticLinear(out, bias, impl, bias_init)


# ---------------------------------------------------------------------------
# Convolutional
# ---------------------------------------------------------------------------
class DendriticConvModule(nn.Module):
    def __init__(self, cin: int, out: int, k: Tuple[int, int], stride: int, dilation: int,
                 pads: Tuple[int, int, int, int], padding_mode: str, bias: bool, impl: str,
                 bias_init: float = 0.0):
        super().__init__()
        self.k, self.stride, self.dilation = k, stride, dilation
        self.pads, self.padding_mode, self.impl = pads, padding_mode, impl
        self.weight = nn.Parameter(torch.empty(out, cin, *k))
        self.dendrite_bias = nn.Parameter(torch.zeros(out, cin, *k))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if bias_init:
            nn.init.normal_(self.dendrite_bias, 0.0, bias_init)

    def forward(self, x):
        if any(self.pads):
            x = F.pad(x, self.pads, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
        ho = (x.shape[-2] - self.dilation * (self.k[0] - 1) - 1) // self.stride + 1
        wo = (x.shape[-1] - self.dilation * (self.k[1] - 1) - 1) // self.stride + 1
        u = F.unfold(x, self.k, dilation=self.dilation, stride=self.stride)
        out = self.weight.shape[0]
        y = dendritic_product(u, self.weight.reshape(out, -1), self.dendrite_bias.reshape(out, -1), self.impl)
        y = y.reshape(x.shape[0], out, ho, wo)
        return y if self.bias is None else y + self.bias[:, None, None]


def _cexamples(draw):
    from hypothesis import strategies as st
    cin = draw(st.integers(1, 4))
    out = draw(st.integers(1, 4))
    k = draw(st.sampled_from([1, 2, 3]))
    stride = draw(st.sampled_from([1, 1, 2]))
    dilation = draw(st.sampled_from([1, 2])) if k > 1 and stride == 1 else 1
    padding = draw(st.sampled_from(["same", "valid", 1]))
    mode = draw(st.sampled_from(["zeros", "circular"])) if padding == "same" else "zeros"
    size = (draw(st.integers(max(5, dilation * k + 1), 10)), draw(st.integers(max(5, dilation * k + 1), 10)))
    term = dendritic_conv(out, k=k, stride=stride, dilation=dilation, padding=padding, padding_mode=mode,
                          bias=draw(st.booleans()), impl=draw(st.sampled_from(["fused", "naive"])), bias_init=0.5)
    return term, Field(cin), size


@register_family("dendritic_conv", examples=_cexamples)
@dataclass(frozen=True, repr=False)
class DendriticConv(Term):
    """A dendritic convolution: ``y_o(p) = sum_{i,t} w_oit ReLU(x_i(s p + d t) + b_oit)``
    over the zero- (or circularly) padded input; ``out=None`` keeps the width."""

    out: Optional[Channels] = None
    k: Union[int, Tuple[int, int]] = 3
    stride: int = 1
    dilation: int = 1
    bias: bool = False
    padding: Union[str, int] = "same"
    padding_mode: str = "zeros"
    impl: str = "fused"
    bias_init: float = 0.0
    _arg_rules = {"bias_init": "[0, inf)"}  # a standard deviation
    _positional = ("out",)

    def __post_init__(self):
        _check_impl(self.impl)
        check_conv_args("dendritic_conv", self.k, self.stride, self.dilation, self.padding, self.padding_mode)

    def _out(self, t):
        return t.channels if self.out is None else self.out

    def _pads(self) -> Tuple[int, int, int, int]:
        """(left, right, top, bottom) padding, as ``F.pad`` takes it."""
        kh, kw = pair(self.k)
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if isinstance(self.padding, int):
            p = self.padding
            return (p, p, p, p)
        th, tw = self.dilation * (kh - 1), self.dilation * (kw - 1)
        # 'same': symmetric where the total is even, the extra pixel after (as torch's 'same')
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)

    def out_type(self, t):
        self.require_real(t)
        return Field(self._out(t))

    def out_size(self, t, size):
        kh, kw = pair(self.k)
        l, r, tp, bt = self._pads()
        return (conv_out_size(size[0], kh, self.stride, self.dilation, tp + bt),
                conv_out_size(size[1], kw, self.stride, self.dilation, l + r))

    def cost(self, t, size):
        kh, kw = pair(self.k)
        out = self._out(t)
        j = t.channels * kh * kw
        ho, wo = self.out_size(t, size)
        return Cost(2 * out * j + (out if self.bias else 0), out * j * ho * wo)

    def paper_macs(self, t: Field, size) -> Cost:
        """The multiply-adds as the paper counts them: the same as :meth:`cost`'s (the
        per-connection bias additions and ReLUs are element-wise, see :meth:`elementwise`)."""
        return self.cost(t, size).macs

    def elementwise(self, t: Field, size):
        """Per-connection bias additions and ReLUs per sample: ``2 C_out C_in k_h k_w H_out W_out``."""
        kh, kw = pair(self.k)
        ho, wo = self.out_size(t, size)
        return 2 * self._out(t) * t.channels * kh * kw * ho * wo

    def equivariance(self, t):
        kh, kw = pair(self.k)
        if (kh, kw) == (1, 1) and self.stride == 1 and self.padding in ("same", "valid", 0):
            return POINTWISE
        l, r, tp, bt = self._pads()
        if self.padding == "same" and self.padding_mode == "circular" and l == r and tp == bt:
            return frozenset({"shift"})
        return frozenset()

    def lipschitz_bound(self, m, size=None):
        overlap = windows_per_pixel(self.k, self.stride, self.dilation)
        return spectral_norm(m.weight.detach().abs()) * math.sqrt(overlap)

    def build(self, t):
        return DendriticConvModule(t.channels, self._out(t), pair(self.k), self.stride, self.dilation,
                                   self._pads(), self.padding_mode, self.bias, self.impl, self.bias_init)


@op("dendritic_conv")
def dendritic_conv(out: Optional[Channels] = None, k=3, stride: int = 1, dilation: int = 1, bias: bool = False,
                   padding: Union[str, int] = "same", padding_mode: str = "zeros",
                   impl: str = "fused", bias_init: float = 0.0) -> DendriticConv:
    """A dendritic convolution to ``out`` channels: a ReLU with its own bias on every
    (out, in, tap) connection. With zero dendrite biases it is ``conv(relu(x))``.

    >>> from operad import ops, Field
    >>> m = ops.dendritic_conv(8, k=3).bind(Field(4))
    >>> m.weight.shape == m.dendrite_bias.shape == (8, 4, 3, 3)
    True
    """
    return DendriticConv(out, k, stride, dilation, bias, padding, padding_mode, impl, bias_init)
