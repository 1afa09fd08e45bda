"""Combinators: terms made of terms.

=====================  ==========================================================
``a >> b``             sequence (:class:`Seq`)
``a * n``              the same block n times, each with its own weights
``a + b``              sum of branches
``concat(a, b, ...)``  channel concatenation of branches
``minimum(a, b, ...)`` element-wise minimum of branches (Min-Nets)
``residual(f)``        ``identity + f``; ``residual(f, shortcut=s)`` is ``s + f``
``dense(f, n)``        dense connectivity: n layers, each fed all earlier maps
``t.named("stage1")``  a name for the node (attribute name and error path)
=====================  ==========================================================

Each combinator derives the properties of the composite from its parts: types
propagate, costs add, Lipschitz bounds multiply along a sequence (add over a
sum, combine in quadrature over a concatenation), and the equivariances of a
composite are those all of its parts share.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .errors import OpArgError, OpArgTypeError
from .field import Field, TypeMismatch
from .term import ALL_TRANSFORMS, Cost, Size, Term, _join, attach, combinator, op, register_family
from .util import check_prob

__all__ = ["Seq", "Repeat", "Sum", "Concat", "Minimum", "Residual", "Dense", "Named",
           "concat", "minimum", "residual", "dense", "concat_types", "lipschitz_of"]

_PROBES = ((64, 48), (37, 29))


def lipschitz_of(m: nn.Module, size: Size = None) -> Optional[float]:
    """The Lipschitz bound of a bound node (None if any part has none)."""
    return m.term.lipschitz_bound(m, size)


def _mul(a, b):
    return None if a is None or b is None else a * b


def _probe(term: Term, t: Field):
    if t.rank != 2:
        return None
    return tuple(term.out_size(t, p) for p in _PROBES)


def concat_types(types: Sequence[Field], op_name: str = "concat") -> Field:
    """The field of a channel concatenation of ``types`` (checked)."""
    first = types[0]
    for i, t in enumerate(types[1:], 1):
        if t.kind != first.kind or t.rank != first.rank:
            raise TypeMismatch(f"expects branches of one kind and rank; branch[0] gives {first!r}, "
                               f"branch[{i}] gives {t!r}", op=op_name)
        if (t.orders is None) != (first.orders is None):
            raise TypeMismatch(f"cannot concatenate a field with rotation orders and one without: "
                               f"{first!r} and {t!r}", op=op_name)
    channels = sum(t.channels for t in types)
    if first.orders is None:
        return first.with_(channels=channels)
    gs = {t.group_size for t in types}
    if len(gs) != 1:
        raise TypeMismatch(f"can only concatenate harmonic fields with equal group sizes; got "
                           f"{', '.join(map(repr, types))}", op=op_name)
    orders = tuple(m for t in types for m in t.orders)
    return first.with_(channels=channels, orders=orders)


# ---------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------
class SeqModule(nn.Sequential):
    """A bound sequence; children are keyed by index or by their name."""


@combinator("seq")
@dataclass(frozen=True, repr=False)
class Seq(Term):
    keeps_bits = True  # the type its parts infer
    items: Tuple[Term, ...]

    def __post_init__(self):
        if not self.items:
            raise ValueError("a sequence needs at least one term")

    def children(self):
        return self.items

    def with_children(self, children):
        return Seq(tuple(children))

    def _entries(self):
        for i, t in enumerate(self.items):
            if isinstance(t, Named):
                yield t.name, t.name, t
            else:
                yield f"[{i}]", str(i), t

    def _types(self, t: Field) -> List[Field]:
        types = [t]
        for seg, _, item in self._entries():
            try:
                types.append(item._infer(types[-1]))
            except TypeMismatch as e:
                raise e.at(seg) from None
        return types

    def out_type(self, t):
        return self._types(t)[-1]

    def out_size(self, t, size):
        for item, ti in zip(self.items, self._types(t)):
            size = item.out_size(ti, size)
        return size

    def cost(self, t, size):
        total = Cost()
        for item, ti in zip(self.items, self._types(t)):
            total = total + item.cost(ti, size)
            size = item.out_size(ti, size)
        return total

    def equivariance(self, t):
        eq = ALL_TRANSFORMS
        for item, ti in zip(self.items, self._types(t)):
            eq = eq & item.equivariance(ti)
        return eq

    @property
    def linear(self):
        return all(i.linear for i in self.items)

    def nonnegative(self, t, input_nonnegative=False):
        for item, ti in zip(self.items, self._types(t)):
            input_nonnegative = item.nonnegative(ti, input_nonnegative)
        return input_nonnegative

    def lipschitz_bound(self, m, size=None):
        bound = 1.0
        for child in m.children():
            bound = _mul(bound, lipschitz_of(child, size))
            size = child.term.out_size(child.in_type, size) if size is not None else None
        return bound

    def _bind(self, t, path):
        types = self._types(t)
        mods = OrderedDict()
        for (seg, key, item), ti in zip(self._entries(), types):
            mods[key] = item._bind(ti, _join(path, seg))
        return attach(SeqModule(mods), self, t, types[-1], path)

    def __repr__(self):
        return " >> ".join(_paren(i, Seq) for i in self.items)


@combinator("repeat")
@dataclass(frozen=True, repr=False)
class Repeat(Term):
    """``block * n``: n copies of a block in sequence, each with its own weights."""
    keeps_bits = True  # the type its parts infer

    family = "repeat"
    block: Term
    n: int

    def children(self):
        return (self.block,)

    def with_children(self, children):
        return Repeat(children[0], self.n)

    def _seq(self) -> Seq:
        return Seq((self.block,) * self.n)

    def out_type(self, t):
        return self._seq().out_type(t)

    def out_size(self, t, size):
        return self._seq().out_size(t, size)

    def cost(self, t, size):
        return self._seq().cost(t, size)

    def equivariance(self, t):
        return self._seq().equivariance(t)

    def nonnegative(self, t, input_nonnegative=False):
        return self._seq().nonnegative(t, input_nonnegative)

    @property
    def linear(self):
        return self.block.linear

    def lipschitz_bound(self, m, size=None):
        return Seq.lipschitz_bound(self._seq(), m, size)

    def _bind(self, t, path):
        m = self._seq()._bind(t, path)
        m.term = self
        return m

    def __repr__(self):
        return f"{_paren(self.block, Term)} * {self.n}"


@combinator("named")
@dataclass(frozen=True, repr=False)
class Named(Term):
    """A term with a name: the module key and the path segment of its node."""
    keeps_bits = True  # the type its parts infer

    inner: Term
    name: str

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a term name must be a Python identifier; got {self.name!r}")

    @property
    def family(self):
        return self.inner.family

    def children(self):
        return (self.inner,)

    def with_children(self, children):
        return Named(children[0], self.name)

    def out_type(self, t):
        return self.inner._infer(t)

    def _infer(self, t):
        return self.inner._infer(t)

    def out_size(self, t, size):
        return self.inner.out_size(t, size)

    def cost(self, t, size):
        return self.inner.cost(t, size)

    def equivariance(self, t):
        return self.inner.equivariance(t)

    def nonnegative(self, t, input_nonnegative=False):
        return self.inner.nonnegative(t, input_nonnegative)

    @property
    def linear(self):
        return self.inner.linear

    def lipschitz_bound(self, m, size=None):
        return self.inner.lipschitz_bound(m, size)

    def bind(self, in_type):
        if isinstance(in_type, int):
            in_type = Field(in_type)
        try:
            return self._bind(in_type, self.name)
        except TypeMismatch as e:
            raise e.at(self.name) from None

    def _bind(self, t, path):
        return self.inner._bind(t, path)

    def __repr__(self):
        return f"{_paren(self.inner, Term)}.named({self.name!r})"


# ---------------------------------------------------------------------------
# Branches
# ---------------------------------------------------------------------------
class _BranchTerm(Term):
    """Shared logic of terms whose branches all see the same input."""

    items: Tuple[Term, ...]
    _symbol = ","

    def children(self):
        return self.items

    def with_children(self, children):
        return type(self)(tuple(children))

    def _branch_types(self, t: Field) -> List[Field]:
        out = []
        for i, b in enumerate(self.items):
            try:
                out.append(b._infer(t))
            except TypeMismatch as e:
                raise e.at(f"branch[{i}]") from None
        probes = [_probe(b, t) for b in self.items]
        for i, p in enumerate(probes[1:], 1):
            if p != probes[0]:
                raise TypeMismatch(
                    f"expects branches that keep one spatial size; branch[0] maps {_PROBES[0]} to "
                    f"{probes[0][0]}, branch[{i}] to {p[0]} (give both the same stride)", op=self.family)
        return out

    def out_size(self, t, size):
        return self.items[0].out_size(t, size)

    def cost(self, t, size):
        total = Cost()
        for b in self.items:
            total = total + b.cost(t, size)
        return total

    def equivariance(self, t):
        eq = ALL_TRANSFORMS
        for b in self.items:
            eq = eq & b.equivariance(t)
        return eq

    def nonnegative(self, t, input_nonnegative=False):
        """Sums, concatenations and minima of non-negative branches are non-negative."""
        return all(b.nonnegative(t, input_nonnegative) for b in self.items)

    def _bind(self, t, path):
        out = self._infer(t)
        branches = [b._bind(t, _join(path, f"branch[{i}]")) for i, b in enumerate(self.items)]
        return attach(self.module_cls(branches), self, t, out, path)

    def _branch_bounds(self, m, size):
        return [lipschitz_of(b, size) for b in m.branch]

    def __repr__(self):
        if self._symbol != ",":
            return f" {self._symbol} ".join(_paren(i, type(self)) for i in self.items)
        return f"{self.family}({', '.join(map(repr, self.items))})"


class SumModule(nn.Module):
    def __init__(self, branches):
        super().__init__()
        self.branch = nn.ModuleList(branches)

    def forward(self, x):
        out = self.branch[0](x)
        for b in self.branch[1:]:
            out = out + b(x)
        return out


class ConcatModule(SumModule):
    def forward(self, x):
        return torch.cat([b(x) for b in self.branch], dim=1)


class MinimumModule(SumModule):
    def forward(self, x):
        out = self.branch[0](x)
        for b in self.branch[1:]:
            out = torch.minimum(out, b(x))
        return out


@combinator("sum")
@register_family("sum")
@dataclass(frozen=True, repr=False)
class Sum(_BranchTerm):
    """``a + b``: the sum of branches that produce the same field."""

    items: Tuple[Term, ...]
    _symbol = "+"
    module_cls = SumModule

    def out_type(self, t):
        types = self._branch_types(t)
        for i, o in enumerate(types[1:], 1):
            if o.with_(bits=32) != types[0].with_(bits=32):
                raise TypeMismatch(f"expects branches that produce one field; branch[0] gives {types[0]!r}, "
                                   f"branch[{i}] gives {o!r}", op="sum")
        return types[0]

    @property
    def linear(self):
        return all(b.linear for b in self.items)

    def lipschitz_bound(self, m, size=None):
        bounds = self._branch_bounds(m, size)
        return None if None in bounds else float(sum(bounds))


@register_family("concat")
@dataclass(frozen=True, repr=False)
class Concat(_BranchTerm):
    items: Tuple[Term, ...]
    module_cls = ConcatModule

    def out_type(self, t):
        return concat_types(self._branch_types(t))

    @property
    def linear(self):
        return all(b.linear for b in self.items)

    def lipschitz_bound(self, m, size=None):
        bounds = self._branch_bounds(m, size)
        return None if None in bounds else math.sqrt(sum(b * b for b in bounds))


@register_family("minimum")
@dataclass(frozen=True, repr=False)
class Minimum(_BranchTerm):
    """Element-wise minimum of branches: |min(a,b) - min(a',b')| <= max(|a-a'|, |b-b'|),
    so the bound is that of their concatenation."""

    items: Tuple[Term, ...]
    module_cls = MinimumModule

    def out_type(self, t):
        types = self._branch_types(t)
        for i, o in enumerate(types):
            if o.is_complex:
                raise TypeMismatch(f"expects real branches (complex numbers have no order); "
                                   f"branch[{i}] gives {o!r}", op="minimum")
            if o.with_(bits=32) != types[0].with_(bits=32):
                raise TypeMismatch(f"expects branches that produce one field; branch[0] gives {types[0]!r}, "
                                   f"branch[{i}] gives {o!r}", op="minimum")
        return types[0]

    def lipschitz_bound(self, m, size=None):
        bounds = self._branch_bounds(m, size)
        return None if None in bounds else math.sqrt(sum(b * b for b in bounds))


def _branches(terms, name, minimum=1):
    for i, t in enumerate(terms):
        if not isinstance(t, Term):
            raise OpArgTypeError(f"ops.{name} takes terms; argument {i} is {type(t).__name__}")
    if len(terms) < minimum:
        raise OpArgError(f"ops.{name} needs at least {minimum} branches; got {len(terms)}")
    return tuple(terms)


@op("concat")
def concat(*branches: Term) -> Term:
    """Channel concatenation of branches that see the same input.

    >>> from operad import ops, Field
    >>> ops.concat(ops.conv(4), ops.conv(6)).bind(Field(3)).out_type
    Field(10)
    """
    return Concat(_branches(branches, "concat"))


@op("minimum")
def minimum(*branches: Term) -> Term:
    """Element-wise minimum of two or more branches (the unit of Min-Nets).

    >>> from operad import ops, Field
    >>> ops.minimum(ops.conv(4), ops.conv(4)).bind(Field(3)).out_type
    Field(4)
    """
    return Minimum(_branches(branches, "minimum", 2))


# ---------------------------------------------------------------------------
# Residual and dense connectivity
# ---------------------------------------------------------------------------
class ResidualModule(nn.Module):
    """``shortcut(x) + body(x)``; with ``drop_path = p > 0`` and in training, the
    body of each sample is dropped with probability p and kept ones are scaled
    by ``1 / (1 - p)`` (stochastic depth, Huang et al. 2016, in the rescaled
    form), so the eval-mode function is the plain residual."""

    def __init__(self, body, shortcut, drop_path: float = 0.0):
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.drop_path = float(drop_path)

    def forward(self, x):
        out = self.body(x)
        if self.training and self.drop_path > 0.0:
            keep = 1.0 - self.drop_path
            shape = (out.shape[0],) + (1,) * (out.dim() - 1)
            out = out * (torch.rand(shape, device=out.device, dtype=out.dtype) < keep).to(out.dtype) / keep
        return self.shortcut(x) + out

    def extra_repr(self):
        return f"drop_path={self.drop_path}" if self.drop_path else ""


@register_family("residual")
@dataclass(frozen=True, repr=False)
class Residual(Term):
    """``shortcut(x) + body(x)``; the shortcut is the identity unless given.
    ``drop_path`` is the per-sample probability of dropping the body in
    training (stochastic depth); eval-mode properties do not depend on it."""

    body: Term
    shortcut: Optional[Term] = None
    drop_path: float = 0.0
    _arg_rules = {"drop_path": "[0, 1)"}  # a probability; 1 would drop every body (checked at construction)

    def _short(self) -> Term:
        if self.shortcut is not None:
            return self.shortcut
        from ..linear import Identity
        return Identity()

    def children(self):
        return (self.body,) if self.shortcut is None else (self.body, self.shortcut)

    def with_children(self, children):
        return Residual(children[0], children[1] if len(children) > 1 else None, self.drop_path)

    def out_type(self, t):
        try:
            out = self.body._infer(t)
        except TypeMismatch as e:
            raise e.at("body") from None
        try:
            short = self._short()._infer(t)
        except TypeMismatch as e:
            raise e.at("shortcut") from None
        if out.with_(bits=32) != short.with_(bits=32):
            raise TypeMismatch(
                f"expects a body that keeps the shortcut's field; the shortcut gives {short!r}, the body "
                f"{out!r} (pass residual(f, shortcut=...) to change the width)", op="residual")
        if _probe(self.body, t) != _probe(self._short(), t):
            raise TypeMismatch(
                f"expects a body that keeps the shortcut's spatial size; the body maps {_PROBES[0]} to "
                f"{self.body.out_size(t, _PROBES[0])}, the shortcut to {self._short().out_size(t, _PROBES[0])} "
                f"(pass residual(f, shortcut=...) with the same stride)", op="residual")
        return out

    def out_size(self, t, size):
        return self.body.out_size(t, size)

    def cost(self, t, size):
        return self.body.cost(t, size) + self._short().cost(t, size)

    def equivariance(self, t):
        return self.body.equivariance(t) & self._short().equivariance(t)

    def nonnegative(self, t, input_nonnegative=False):
        return (self.body.nonnegative(t, input_nonnegative)
                and self._short().nonnegative(t, input_nonnegative))

    @property
    def linear(self):
        return self.body.linear and self._short().linear

    def lipschitz_bound(self, m, size=None):
        a, b = lipschitz_of(m.body, size), lipschitz_of(m.shortcut, size)
        return None if a is None or b is None else a + b

    def _bind(self, t, path):
        out = self._infer(t)
        body = self.body._bind(t, _join(path, "body"))
        short = self._short()._bind(t, _join(path, "shortcut"))
        return attach(ResidualModule(body, short, self.drop_path), self, t, out, path)

    def __repr__(self):
        extra = f", drop_path={self.drop_path!r}" if self.drop_path else ""
        if self.shortcut is None:
            return f"residual({self.body!r}{extra})"
        return f"residual({self.body!r}, shortcut={self.shortcut!r}{extra})"


@op("residual")
def residual(body: Term, shortcut: Optional[Term] = None, drop_path: float = 0.0) -> Term:
    """``identity + body`` (or ``shortcut + body``). ``drop_path=p`` drops the
    body per sample with probability p in training, rescaling kept bodies by
    ``1 / (1 - p)`` (stochastic depth).

    >>> from operad import ops, Field
    >>> ops.residual(ops.conv(8) >> ops.relu()).bind(Field(8)).out_type
    Field(8)
    >>> ops.residual(ops.conv(8), drop_path=0.1)
    residual(conv(8), drop_path=0.1)
    """
    if not isinstance(body, Term) or (shortcut is not None and not isinstance(shortcut, Term)):
        raise OpArgTypeError("ops.residual takes terms: residual(body, shortcut=None, drop_path=0.0)")
    return Residual(body, shortcut, float(check_prob("residual", "drop_path", drop_path, hi_open=True)))


class DenseModule(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1) if len(feats) > 1 else x))
        return torch.cat(feats, 1)


@register_family("dense")
@dataclass(frozen=True, repr=False)
class Dense(Term):
    """Dense connectivity: layer i sees the concatenation of the block input
    and all earlier outputs; the block returns the concatenation of all.

    ``Dense(layer, n)`` repeats one layer term; ``Dense(layers[0], n, layers)``
    gives each layer its own term (what pruning leaves of a dense block whose
    layers lost different channels)."""

    layer: Term
    n: int
    layers: Tuple[Term, ...] = ()

    def __post_init__(self):
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"dense(f, n) needs a positive int n; got {self.n!r}")
        if self.layers and len(self.layers) != self.n:
            raise ValueError(f"dense needs one term per layer: n={self.n}, got {len(self.layers)} layers")

    def _layer(self, i: int) -> Term:
        return self.layers[i] if self.layers else self.layer

    def children(self):
        return self.layers or (self.layer,)

    def with_children(self, children):
        if self.layers:
            return Dense(children[0], self.n, tuple(children))
        return Dense(children[0], self.n)

    def _types(self, t):
        ins = [t]
        for i in range(self.n):
            layer = self._layer(i)
            try:
                o = layer._infer(ins[-1])
            except TypeMismatch as e:
                raise e.at(f"layers[{i}]") from None
            if ins[-1].rank == 2 and _probe(layer, ins[-1]) != _PROBES:
                raise TypeMismatch(f"expects layers that keep the spatial size; layers[{i}] maps "
                                   f"{_PROBES[0]} to {layer.out_size(ins[-1], _PROBES[0])}", op="dense")
            try:
                ins.append(concat_types([ins[-1], o], "dense"))
            except TypeMismatch as e:
                raise e.at(f"layers[{i}]") from None
        return ins

    def out_type(self, t):
        return self._types(t)[-1]

    def cost(self, t, size):
        total = Cost()
        for i, ti in enumerate(self._types(t)[:-1]):
            total = total + self._layer(i).cost(ti, size)
        return total

    def equivariance(self, t):
        eq = ALL_TRANSFORMS
        for i, ti in enumerate(self._types(t)[:-1]):
            eq = eq & self._layer(i).equivariance(ti)
        return eq

    def nonnegative(self, t, input_nonnegative=False):
        """The input is part of the output: non-negative only if it and every layer's output are."""
        return input_nonnegative and all(self._layer(i).nonnegative(ti, True)
                                         for i, ti in enumerate(self._types(t)[:-1]))

    @property
    def linear(self):
        return all(layer.linear for layer in self.children())

    def lipschitz_bound(self, m, size=None):
        bound = 1.0
        for layer in m.layers:
            lf = lipschitz_of(layer, size)
            if lf is None:
                return None
            bound *= math.sqrt(1.0 + lf * lf)
        return bound

    def _bind(self, t, path):
        types = self._types(t)
        layers = [self._layer(i)._bind(ti, _join(path, f"layers[{i}]")) for i, ti in enumerate(types[:-1])]
        return attach(DenseModule(layers), self, t, types[-1], path)

    def __repr__(self):
        if self.layers:
            return f"dense([{', '.join(map(repr, self.layers))}])"
        return f"dense({self.layer!r}, {self.n})"


@op("dense")
def dense(layer, n: Optional[int] = None) -> Term:
    """Dense connectivity (DenseNet): n layers, each fed all earlier maps;
    ``dense([f1, f2, ...])`` gives each layer its own term.

    >>> from operad import ops, Field
    >>> ops.dense(ops.conv(4) >> ops.relu(), 3).bind(Field(6)).out_type
    Field(18)
    >>> ops.dense([ops.conv(4), ops.conv(2)]).bind(Field(6)).out_type
    Field(12)
    """
    if isinstance(layer, (list, tuple)):
        layers = _branches(tuple(layer), "dense")
        if n is not None and n != len(layers):
            raise OpArgError(f"ops.dense got {len(layers)} layers and n={n}; give one or the other")
        return Dense(layers[0], len(layers), layers)
    if not isinstance(layer, Term):
        raise OpArgTypeError(f"ops.dense takes a term (and n) or a list of terms; got {type(layer).__name__}")
    if n is None:
        raise OpArgTypeError("ops.dense(layer, n) needs n, the number of layers")
    return Dense(layer, n)


def _paren(t: Term, within) -> str:
    s = repr(t)
    if isinstance(t, (Seq, Sum)) and type(t) is not within:
        return f"({s})"
    if isinstance(t, (Seq, Sum)) and within is Term:
        return f"({s})"
    return s


# ---------------------------------------------------------------------------
# Examples for the property suite: random small composites of leaf families
# ---------------------------------------------------------------------------
def _leaf(draw, out):
    """A random stride-1, size-keeping real leaf producing ``out`` channels."""
    from hypothesis import strategies as st
    from ..activation import Activation
    from ..conv import conv
    from ..norm import bn
    k = draw(st.sampled_from([1, 3]))
    mode = draw(st.sampled_from(["zeros", "circular"]))
    head = conv(out, k=k, padding_mode=mode, bias=draw(st.booleans()))
    tail = draw(st.sampled_from([None, "bn", "relu", "gelu"]))
    if tail is None:
        return head
    return head >> (bn() if tail == "bn" else Activation(tail))


def _size(draw):
    from hypothesis import strategies as st
    return (draw(st.integers(4, 10)), draw(st.integers(4, 10)))


def _branch_examples(cls):
    def examples(draw):
        from hypothesis import strategies as st
        cin, out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        n = draw(st.integers(2, 3))
        if cls is Concat:
            branches = tuple(_leaf(draw, draw(st.integers(1, 4))) for _ in range(n))
        else:
            branches = tuple(_leaf(draw, out) for _ in range(n))
        return cls(branches), Field(cin), _size(draw)
    return examples


def _residual_examples(draw):
    from hypothesis import strategies as st
    from ..conv import conv
    c = draw(st.integers(1, 5))
    body = _leaf(draw, c) >> _leaf(draw, c)
    drop = draw(st.sampled_from([0.0, 0.0, 0.2]))
    if draw(st.booleans()):
        out = draw(st.integers(1, 6))
        return Residual(_leaf(draw, out), conv(out, k=1, bias=False), drop), Field(c), _size(draw)
    return Residual(body, None, drop), Field(c), _size(draw)


def _dense_examples(draw):
    from hypothesis import strategies as st
    n = draw(st.integers(1, 3))
    if draw(st.booleans()):
        layers = tuple(_leaf(draw, draw(st.integers(1, 3))) for _ in range(n))
        return Dense(layers[0], n, layers), Field(draw(st.integers(1, 4))), _size(draw)
    return Dense(_leaf(draw, draw(st.integers(1, 3))), n), Field(draw(st.integers(1, 4))), _size(draw)


def _seq_examples(draw):
    from hypothesis import strategies as st
    c = draw(st.integers(1, 4))
    items = [_leaf(draw, draw(st.integers(1, 4))) for _ in range(draw(st.integers(1, 3)))]
    term = items[0]
    for it in items[1:]:
        term = term >> it
    if draw(st.booleans()):
        term = Repeat(_leaf(draw, c), draw(st.integers(1, 3))) >> term
    return term, Field(c), _size(draw)


register_family("sum", _branch_examples(Sum))(Sum)
register_family("concat", _branch_examples(Concat))(Concat)
register_family("minimum", _branch_examples(Minimum))(Minimum)
register_family("residual", _residual_examples)(Residual)
register_family("dense", _dense_examples)(Dense)
register_family("seq", _seq_examples)(Seq)
