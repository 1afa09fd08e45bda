"""``fuse(module)``: fold batch norms into convolutions and merge parallel linear
branches and identity shortcuts into one convolution (RepVGG-style).

Works on bound modules and returns a new bound module (a rewritten term with
computed weights) with the same function in eval mode: BN uses its running
statistics, so fuse is an inference-time rewrite.

Which pieces merge (all exact, zero padding included):

- every *centred* linear node is an affine convolution ``W * x + b``: ``conv``
  with an odd square kernel, dilation 1 and padding ``(k - 1) / 2`` (``"same"``),
  ``bn`` (per channel), ``identity``, ``subsample``, ``pad_channels``,
  ``channel_pad`` and ``avg_pool(1, stride=s)``;
- ``A >> B`` merges when B is 1x1 (any stride), or when A is 1x1, stride 1 and
  has no bias (a BN in front of a padded conv does not fold: its shift would
  meet the zero padding);
- ``a + b``, ``residual(f)`` and ``residual(f, shortcut=s)`` merge when every
  branch is an affine convolution with one stride and compatible padding: the
  kernels are zero-padded to the largest and added, so ``conv3x3 + conv1x1 +
  identity`` becomes one 3x3 convolution.

Everything else is kept and fused inside (a ReLU between two convs stops a merge).

>>> import torch
>>> from operad import ops, Field
>>> from operad.rewrite import fuse
>>> block = ops.residual(ops.conv(8, bias=False) >> ops.bn()) + (ops.conv(8, k=1) >> ops.bn())
>>> m = block.bind(Field(8)).eval()
>>> f = fuse(m)
>>> f.term
conv(8, padding=1)
>>> x = torch.randn(2, 8, 9, 9)
>>> bool((f(x) - m(x)).abs().max() < 1e-5)
True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from ..algebra.combinators import Dense, Named, Repeat, Residual, Seq, Sum
from ..conv import Conv
from ..linear import Identity
from ..norm import BatchNorm
from ..algebra.term import Term

__all__ = ["Affine", "affine_of", "compose", "add", "affine_term", "fuse"]

Loader = Callable[[nn.Module], None]


@dataclass
class Affine:
    """An affine convolution ``y = conv(x, weight, stride, padding=(k-1)//2) + bias``.

    ``mode`` is the padding mode, None for 1x1 kernels (no padding); ``has_bias``
    says structurally (not from values) whether the bias may be non-zero;
    ``sources`` counts the original nodes merged into it."""

    weight: torch.Tensor  # (out, in / groups, k, k)
    bias: torch.Tensor  # (out,)
    stride: int = 1
    groups: int = 1
    mode: Optional[str] = None
    has_bias: bool = False
    sources: int = 1
    convs: int = 0

    @property
    def worth(self) -> bool:
        """Whether emitting one conv for it saves work: it merges several nodes, one a conv
        (a run of parameter-free nodes such as an option-A shortcut is kept as it is)."""
        return self.sources > 1 and self.convs > 0

    @property
    def k(self) -> int:
        return self.weight.shape[-1]

    @property
    def out(self) -> int:
        return self.weight.shape[0]

    @property
    def cin(self) -> int:
        return self.weight.shape[1] * self.groups

    def dense(self) -> torch.Tensor:
        """The weight with groups expanded to a dense (out, in, k, k) kernel."""
        if self.groups == 1:
            return self.weight
        g, og, ig = self.groups, self.out // self.groups, self.weight.shape[1]
        w = self.weight.new_zeros(self.out, self.cin, self.k, self.k)
        for i in range(g):
            w[i * og:(i + 1) * og, i * ig:(i + 1) * ig] = self.weight[i * og:(i + 1) * og]
        return w

    def padded(self, k: int) -> torch.Tensor:
        p = (k - self.k) // 2
        return nn.functional.pad(self.weight, (p, p, p, p)) if p else self.weight


def _diag(scale: torch.Tensor, shift: Optional[torch.Tensor], stride: int = 1) -> Affine:
    c = scale.shape[0]
    bias = shift if shift is not None else scale.new_zeros(c)
    return Affine(scale.view(c, 1, 1, 1).clone(), bias.clone(), stride, c, None, shift is not None)


def affine_of(m: nn.Module) -> Optional[Affine]:
    """The affine convolution a bound node computes (in eval mode), or None."""
    term = getattr(m, "term", None)
    t = getattr(m, "in_type", None)
    if term is None or t is None or t.rank != 2 or t.is_complex:
        return None
    fam = term.family
    if isinstance(term, Conv) and term.linear:  # binary and quantized convs are not affine in W
        kh, kw = m.kernel_size
        if kh != kw or kh % 2 == 0 or m.dilation != (1, 1) or m.padding != ((kh - 1) // 2,) * 2:
            return None
        if m.stride[0] != m.stride[1]:
            return None
        w = m.weight.detach()
        b = m.bias.detach() if m.bias is not None else w.new_zeros(w.shape[0])
        return Affine(w.clone(), b.clone(), m.stride[0], m.groups, m.padding_mode if kh > 1 else None,
                      m.bias is not None, 1, 1)
    if isinstance(term, BatchNorm):
        if m.running_var is None:
            return None
        scale = (m.running_var.detach() + m.eps).rsqrt()
        if m.weight is not None:
            scale = scale * m.weight.detach()
        shift = -m.running_mean.detach() * scale
        if m.bias is not None:
            shift = shift + m.bias.detach()
        return _diag(scale, shift)
    if isinstance(term, Identity):
        return _diag(torch.ones(t.channels, dtype=torch.get_default_dtype()), None)
    if fam == "subsample":
        return _diag(torch.ones(t.channels, dtype=torch.get_default_dtype()), None, term.stride)
    if fam in ("pad_channels", "channel_pad"):
        before, after = term.split(t.channels) if fam == "pad_channels" else (term.before, term.after)
        w = torch.zeros(t.channels + before + after, t.channels, 1, 1)
        w[before:before + t.channels, :, 0, 0] = torch.eye(t.channels)
        return Affine(w, torch.zeros(w.shape[0]), 1, 1, None, False)
    if fam == "avg_pool" and term.k == 1 and term.padding == 0:
        return _diag(torch.ones(t.channels, dtype=torch.get_default_dtype()), None, term._s)
    if isinstance(term, (Seq, Repeat)):
        acc = None
        for child in m.children():
            a = affine_of(child)
            if a is None:
                return None
            acc = a if acc is None else compose(acc, a)
            if acc is None:
                return None
        return acc
    if isinstance(term, Sum):
        return add([affine_of(b) for b in m.branch])
    if isinstance(term, Residual):
        return add([affine_of(m.body), affine_of(m.shortcut)])
    return None


def _like(a: Affine, b: Affine) -> Tuple[Affine, Affine]:
    dt = torch.promote_types(a.weight.dtype, b.weight.dtype)
    for x in (a, b):
        x.weight, x.bias = x.weight.to(dt), x.bias.to(dt)
    return a, b


def compose(a: Affine, b: Affine) -> Optional[Affine]:
    """``b`` after ``a`` as one affine convolution, or None where that is not exact."""
    if a.out != b.cin:
        return None
    a, b = _like(a, b)
    if b.k == 1:
        if b.groups == b.out == b.cin and b.weight.shape[1] == 1:  # per-channel scale
            s = b.weight.view(-1)
            w = a.weight * s.view(-1, 1, 1, 1)
            groups = a.groups
        else:
            w = torch.einsum("om,mikl->oikl", b.dense()[:, :, 0, 0], a.dense())
            groups = 1
        bias = b.dense()[:, :, 0, 0] @ a.bias + b.bias
        return Affine(w, bias, a.stride * b.stride, groups, a.mode, a.has_bias or b.has_bias, a.sources + b.sources,
                      a.convs + b.convs)
    if a.k == 1 and a.stride == 1 and not a.has_bias:
        if a.groups == a.out == a.cin and a.weight.shape[1] == 1:
            og, ig = b.out // b.groups, b.weight.shape[1]
            idx = (torch.arange(b.out) // og * ig).view(-1, 1) + torch.arange(ig).view(1, -1)
            w = b.weight * a.weight.view(-1)[idx].view(b.out, ig, 1, 1)
            groups = b.groups
        else:
            w = torch.einsum("omkl,mi->oikl", b.dense(), a.dense()[:, :, 0, 0])
            groups = 1
        return Affine(w, b.bias.clone(), b.stride, groups, b.mode, b.has_bias, a.sources + b.sources, a.convs + b.convs)
    return None


def add(items: List[Optional[Affine]]) -> Optional[Affine]:
    """The sum of parallel affine convolutions as one, or None where that is not exact."""
    if not items or any(a is None for a in items):
        return None
    first = items[0]
    if any(a.stride != first.stride or a.out != first.out or a.cin != first.cin for a in items):
        return None
    modes = {a.mode for a in items if a.mode is not None}
    if len(modes) > 1:
        return None
    k = max(a.k for a in items)
    dt = items[0].weight.dtype
    for a in items[1:]:
        dt = torch.promote_types(dt, a.weight.dtype)
    groups = {a.groups for a in items}
    if len(groups) == 1:
        w = sum(a.padded(k).to(dt) for a in items)
        g = first.groups
    else:
        w = sum(Affine(a.dense(), a.bias).padded(k).to(dt) for a in items)
        g = 1
    bias = sum(a.bias.to(dt) for a in items)
    return Affine(w, bias, first.stride, g, modes.pop() if modes else None,
                  any(a.has_bias for a in items), sum(a.sources for a in items),
                  sum(a.convs for a in items))


def affine_term(a: Affine) -> Term:
    """The conv term that computes ``a`` (with a bias)."""
    return Conv(a.out, k=a.k, stride=a.stride, groups=a.groups, bias=True, padding=(a.k - 1) // 2,
                padding_mode=a.mode or "zeros")


def _affine_loader(a: Affine) -> Loader:
    def load(new: nn.Module):
        with torch.no_grad():
            new.weight.copy_(a.weight.to(new.weight.dtype))
            new.bias.copy_(a.bias.to(new.bias.dtype))
    return load


def _keep(m: nn.Module) -> Tuple[Term, Loader]:
    sd = m.state_dict()
    return m.term, (lambda new: new.load_state_dict(sd))


def _seq_items(m: nn.Module):
    term = m.term
    items = term.items if isinstance(term, Seq) else (term.block,) * term.n
    return list(zip(items, m.children()))


def _chain(items: List[Tuple[Term, Loader]]) -> Tuple[Term, Loader]:
    if len(items) == 1:
        return items[0]
    term = Seq(tuple(t for t, _ in items))

    def load(new):
        for (_, ld), child in zip(items, new.children()):
            ld(child)
    return term, load


def _fuse(m: nn.Module) -> Tuple[Term, Loader]:
    a = affine_of(m)
    if a is not None:
        return (affine_term(a), _affine_loader(a)) if a.worth else _keep(m)
    term = m.term
    if isinstance(term, (Seq, Repeat)):
        out: List[Tuple[Term, Loader]] = []
        run: List[Tuple[Term, nn.Module]] = []
        acc: Optional[Affine] = None

        def flush():
            nonlocal acc, run
            if run:
                if acc.worth and len(run) > 1:
                    out.append(_name(run[0][0], (affine_term(acc), _affine_loader(acc))))
                else:
                    for it, child in run:
                        out.append(_name(it, _fuse(child)))
            run, acc = [], None

        for item, child in _seq_items(m):
            c = affine_of(child)
            if c is None:
                flush()
                out.append(_name(item, _fuse(child)))
                continue
            merged = compose(acc, c) if acc is not None else c
            if merged is None:
                flush()
                merged = c
            acc = merged
            run.append((item, child))
        flush()
        return _chain(out)
    if isinstance(term, Residual):
        body = _fuse(m.body)
        short = _fuse(m.shortcut) if term.shortcut is not None else None

        def load(new):
            body[1](new.body)
            if short is not None:
                short[1](new.shortcut)
        return Residual(body[0], short[0] if short else None), load
    if isinstance(term, Dense):
        parts = [_fuse(layer) for layer in m.layers]

        def load(new):
            for (_, ld), layer in zip(parts, new.layers):
                ld(layer)
        if all(p[0] == parts[0][0] for p in parts):
            return Dense(parts[0][0], term.n), load
        return Dense(parts[0][0], term.n, tuple(p[0] for p in parts)), load
    if hasattr(m, "branch") and isinstance(getattr(term, "items", None), tuple) and \
            len(term.items) == len(m.branch) and type(term).__name__ in ("Sum", "Concat", "Minimum"):
        parts = [_fuse(b) for b in m.branch]

        def load(new):
            for (_, ld), b in zip(parts, new.branch):
                ld(b)
        return type(term)(tuple(p[0] for p in parts)), load
    return _keep(m)


def _name(item: Term, part: Tuple[Term, Loader]) -> Tuple[Term, Loader]:
    if isinstance(item, Named):
        return Named(part[0], item.name), part[1]
    return part


def fuse(module: nn.Module) -> nn.Module:
    """A new bound module computing the same function as ``module`` in eval mode,
    with batch norms folded into convolutions and parallel linear branches
    (identity shortcuts included) merged into one convolution.

    The result is an ordinary bound operad module (``.term`` is the rewritten
    expression, so ``operad.cost`` and ``summary`` work on it), in eval mode,
    in the dtype and on the device of ``module``.
    """
    if not hasattr(module, "term"):
        raise TypeError(f"fuse takes a bound operad module (term.bind(...)); got {type(module).__name__}")
    p = next(module.parameters(), None)
    term, load = _fuse(module)
    new = term.bind(module.in_type)
    if p is not None:
        new = new.to(dtype=p.dtype, device=p.device)
    load(new)
    return new.eval()
