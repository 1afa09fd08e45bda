"""Exact costs: symbolic from the expression, counted from the module.

>>> from operad import ops, Field, cost
>>> import sympy
>>> C = sympy.Symbol("C", positive=True, integer=True)
>>> cost(ops.conv(C, k=3, bias=False) >> ops.conv(C, k=3, bias=False), Field(C)).params
18*C**2
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional, Sequence, Tuple, Union

import sympy
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..operators.algebra.errors import SizeError
from ..operators.algebra.field import Field
from ..operators.algebra.sizes import check_sizes
from ..operators.algebra.term import Cost, Term

__all__ = ["H", "W", "cost", "count", "Cost"]

H, W = sympy.symbols("H W", positive=True, integer=True)


def _resolve(obj, in_type) -> Tuple[Term, Field]:
    if isinstance(obj, nn.Module):
        if not hasattr(obj, "term"):
            raise TypeError(f"{type(obj).__name__} is not a bound operad module (no .term); "
                            f"bind a term first or use operad.theory.count for plain modules")
        return obj.term, in_type or obj.in_type
    if isinstance(obj, Term):
        if in_type is None:
            raise TypeError("cost(term, in_type) needs the input field, e.g. cost(term, Field(3))")
        return obj, Field(in_type) if isinstance(in_type, int) else in_type
    raise TypeError(f"cost takes a term or a bound module; got {type(obj).__name__}")


def cost(obj: Union[Term, nn.Module], in_type: Optional[Field] = None,
         size: Optional[Sequence[int]] = None) -> Cost:
    """Parameters and multiply-adds of a term or bound module, for one sample.

    Without ``size`` the result is exact in the symbols :data:`H` and :data:`W`
    (the input's height and width; strided layers give ``floor`` terms); with
    ``size=(H, W)`` it is a number, or a polynomial in symbolic channels; a size
    on which some node's output would be empty is a :class:`SizeError` naming it.
    MACs follow :class:`torch.utils.flop_counter.FlopCounterMode` (see :class:`Cost`).
    """
    term, t = _resolve(obj, in_type)
    if isinstance(obj, nn.Module) and in_type is not None and t != obj.in_type:
        raise SizeError(f"{obj.path}: the model takes {obj.in_type!r}; got in_type={t!r}")
    if t.rank == 2:
        sz = (H, W) if size is None else tuple(size)
        check_sizes(term, t, sz, "" if getattr(obj, "path", "<root>") == "<root>" else obj.path)
    else:
        sz = None
    c = term.cost(t, sz)
    return Cost(_clean(c.params), _clean(c.macs), _clean(c.bops), _clean(c.bytes))


def _clean(e):
    if isinstance(e, Fraction):
        return int(e) if e.denominator == 1 else sympy.Rational(e.numerator, e.denominator)
    if isinstance(e, float) and e.is_integer():
        return int(e)
    if isinstance(e, sympy.Basic):
        e = sympy.nsimplify(sympy.expand(e)) if e.has(sympy.Float) else sympy.expand(e)
        if e.is_Integer:
            return int(e)
    return e


def count(module: nn.Module, x_or_shape: Union[torch.Tensor, Sequence[int]]) -> Cost:
    """Measure a module: parameters by ``numel``, MACs as half the FLOPs that
    :class:`~torch.utils.flop_counter.FlopCounterMode` counts, per sample, and
    from those, bit operations and storage.

    BOPs: the MACs each module computes itself (its FLOPs minus its children's)
    times its ``bop_bits()`` (``w_bits * a_bits``; 1024 for modules that do not
    define it). Bytes: every module's own parameters at 32 bits, or what its
    ``storage_bits()`` returns (binary weights at 1 bit plus their ``alpha``).

    >>> from operad import ops, Field
    >>> m = ops.conv(8, bias=False).bind(Field(3))
    >>> count(m, (1, 3, 10, 10))
    Cost(params=216, macs=21600)
    """
    x = x_or_shape if isinstance(x_or_shape, torch.Tensor) else torch.randn(*x_or_shape)
    params = sum(p.numel() for p in module.parameters())
    storage = sum(_storage_bits(m) for m in module.modules())
    was_training = module.training
    module.eval()
    bit_flops = [0]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            hooks = _bop_hooks(module, fc, bit_flops)
            try:
                module(x)
            finally:
                for h in hooks:
                    h.remove()
    finally:
        module.train(was_training)
    flops = fc.get_total_flops()
    batch = x.shape[0]
    macs = flops / (2 * batch) if flops % (2 * batch) else flops // (2 * batch)
    return Cost(params, macs, _clean(Fraction(bit_flops[0], 2 * batch)), _clean(Fraction(storage, 8)))


def _storage_bits(m: nn.Module) -> int:
    own = getattr(m, "storage_bits", None)
    if own is not None:
        return int(own())
    return 32 * sum(p.numel() for p in m.parameters(recurse=False))


def _bop_hooks(module: nn.Module, fc: FlopCounterMode, acc: list) -> list:
    """Forward hooks that add each module's own FLOPs times its bits to ``acc[0]``."""
    stack = []

    def pre(m, args):
        stack.append([fc.get_total_flops(), 0])

    def post(m, args, out):
        start, children = stack.pop()
        delta = fc.get_total_flops() - start
        own = delta - children
        bits = m.bop_bits() if hasattr(m, "bop_bits") else 1024
        acc[0] += own * int(bits)
        if stack:
            stack[-1][1] += delta

    hooks = []
    for m in module.modules():
        hooks.append(m.register_forward_pre_hook(pre))
        hooks.append(m.register_forward_hook(post))
    return hooks
