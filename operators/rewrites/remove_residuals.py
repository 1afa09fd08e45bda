"""``remove_residuals(module)``: the RM operation of RMNet (Meng et al. 2021,
"RMNet: Equivalently removing residual connection from networks").

After :func:`~operad.operators.fuse.fuse` folds the batch norms, a residual
block ``shortcut(x) + A_n(relu(... relu(A_1 x)))`` whose body is affine
convolutions separated by ReLUs becomes a plain chain: every ``A_i`` gains
``C_in`` *reserve* channels that carry the block input through Dirac kernels
(with the body's strides, so they see exactly what the shortcut subsamples),
the activations leave them unchanged because the input is non-negative and
each is the identity on non-negative inputs (ReLU, leaky ReLU), and the last
convolution adds the shortcut's 1x1 channel map (identity, option-A padding or
a projection) applied to them::

    A_1' = [A_1; Dirac],  A_i' = [[A_i, 0], [0, Dirac]],  A_n' = [A_n | S]

This is exact only where the block input is non-negative. The rewrite decides
that by the algebra: every term declares whether its output is non-negative
(:meth:`~operad.Term.nonnegative`: a ReLU, ReLU6 or sigmoid's always is; a
pool's or leaky ReLU's only when its input is; a GELU's or convolution's not).
Blocks that do not qualify raise a ``ValueError`` naming the block
(``strict=False`` leaves them as they are, which is always exact).

>>> import torch
>>> from operad import ops, Field
>>> from operad.rewrite import remove_residuals
>>> net = ops.conv(8) >> ops.relu() >> ops.residual(ops.conv(8) >> ops.bn() >> ops.relu() >> ops.conv(8)) >> ops.relu()
>>> m = net.bind(Field(3)).eval()
>>> plain = remove_residuals(m)
>>> [t.family for t in plain.term.items]
['conv', 'relu', 'conv', 'relu', 'conv', 'relu']
>>> x = torch.randn(2, 3, 8, 8)
>>> bool((plain(x) - m(x)).abs().max() < 1e-5)
True
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ..algebra.combinators import Named, Repeat, Residual, Seq
from .fuse import Affine, _affine_loader, _chain, _keep, _name, affine_of, affine_term, fuse
from ..algebra.term import Term

__all__ = ["remove_residuals"]



def _dirac(c: int, k: int, like: torch.Tensor) -> torch.Tensor:
    w = like.new_zeros(c, c, k, k)
    w[torch.arange(c), torch.arange(c), k // 2, k // 2] = 1
    return w


def _carries(term: Term) -> bool:
    """An activation that passes the reserve channels (x >= 0) unchanged."""
    return bool(getattr(term, "identity_on_nonnegative", False))


def _body_parts(body: nn.Module) -> Optional[List[nn.Module]]:
    """The body as [affine, act, affine, act, ..., affine] nodes, with every act the
    identity on non-negative inputs, or None."""
    kids = list(body.children()) if isinstance(body.term, (Seq, Repeat)) else [body]
    parts, expect_affine = [], True
    for k in kids:
        if expect_affine:
            if affine_of(k) is None:
                return None
        elif not _carries(k.term):
            return None
        parts.append(k)
        expect_affine = not expect_affine
    return parts if parts and not expect_affine else None


def _rm_block(m: nn.Module) -> List[Tuple[Term, object]]:
    """Plain chain for a bound residual block (already fused), or raise."""
    parts = _body_parts(m.body)
    short = affine_of(m.shortcut)
    why = None
    if parts is None:
        why = ("its body is not affine convolutions separated by activations that are the identity on "
               "non-negative inputs (ReLU or leaky ReLU; others, e.g. ReLU6 or GELU, cannot carry the input)")
    elif short is None or short.k != 1:
        why = "its shortcut is not a 1x1 linear map (identity, option A, or a 1x1 conv + BN)"
    affs = [affine_of(p) for p in parts[::2]] if parts else []
    if why is None:
        stride = 1
        for a in affs:
            stride *= a.stride
        if stride != short.stride:
            why = f"the shortcut's stride {short.stride} differs from the body's {stride}"
        elif any(a.mode not in (None, "zeros", "circular") for a in affs):
            why = "a body convolution pads with reflect/replicate, which a Dirac kernel does not carry"
    if why is not None:
        raise ValueError(f"remove_residuals: block {m.path} cannot be made plain: {why}")
    cin = m.in_type.channels
    new: List[Affine] = []
    n = len(affs)
    for i, a in enumerate(affs):
        w = a.dense()
        d = _dirac(cin, a.k, w)
        if n == 1:  # a single conv: shortcut merges directly (a RepVGG merge)
            s = nn.functional.pad(short.dense(), ((a.k - 1) // 2,) * 4).to(w.dtype)
            new.append(Affine(w + s, a.bias + short.bias.to(w.dtype), a.stride, 1, a.mode, True, 2, 1))
            break
        if i == 0:
            w2 = torch.cat([w, d], 0)
            b2 = torch.cat([a.bias, a.bias.new_zeros(cin)])
        elif i < n - 1:
            top = torch.cat([w, w.new_zeros(w.shape[0], cin, a.k, a.k)], 1)
            bot = torch.cat([w.new_zeros(cin, w.shape[1], a.k, a.k), d], 1)
            w2, b2 = torch.cat([top, bot], 0), torch.cat([a.bias, a.bias.new_zeros(cin)])
        else:
            s = nn.functional.pad(short.dense(), ((a.k - 1) // 2,) * 4).to(w.dtype)
            w2, b2 = torch.cat([w, s], 1), a.bias + short.bias.to(w.dtype)
        new.append(Affine(w2, b2, a.stride, 1, a.mode, True, 2, 1))
    items = []
    for i, a in enumerate(new):
        if i:
            items.append(_keep(parts[2 * i - 1]))
        items.append((affine_term(a), _affine_loader(a)))
    return items


def _rm(m: nn.Module, nonneg: bool, strict: bool) -> Tuple[Tuple[Term, object], bool]:
    term = m.term
    if isinstance(term, (Seq, Repeat)):
        items = term.items if isinstance(term, Seq) else (term.block,) * term.n
        out = []
        for item, child in zip(items, m.children()):
            part, nonneg = _rm(child, nonneg, strict)
            if isinstance(part, list) and not isinstance(item, Named):
                out.extend(part)  # a plain block splices into the sequence
            else:
                out.append(_name(item, _chain(part) if isinstance(part, list) else part))
        return _chain(out), nonneg
    if isinstance(term, Residual):
        if not nonneg:
            if strict:
                raise ValueError(
                    f"remove_residuals: block {m.path}: its input is not known to be non-negative, and the RM "
                    f"operation carries the input through a ReLU, which is exact only for x >= 0 (put the block "
                    f"after a ReLU, as in post-activation ResNets; pre-activation blocks do not qualify), or pass "
                    f"strict=False to keep such blocks")
            return _keep(m), False
        try:
            return _rm_block(m), False  # a list of (term, loader) items
        except ValueError:
            if strict:
                raise
            return _keep(m), False
    return _keep(m), term.nonnegative(m.in_type, nonneg)


def remove_residuals(module: nn.Module, strict: bool = True, input_nonnegative: bool = False) -> nn.Module:
    """A plain (residual-free) bound module with the same function as ``module`` in
    eval mode: :func:`fuse`, then the RM operation on every residual block.

    ``input_nonnegative=True`` declares the network's own input non-negative
    (e.g. images in [0, 1]), so a residual block at the very start qualifies.
    """
    fused = fuse(module)
    part, _ = _rm(fused, input_nonnegative, strict)
    term, load = _chain(part) if isinstance(part, list) else part
    new = term.bind(fused.in_type)
    p = next(fused.parameters(), None)
    if p is not None:
        new = new.to(dtype=p.dtype, device=p.device)
    load(new)
    return new.eval()
