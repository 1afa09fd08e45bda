"""Which channels of a bound network must be pruned together: the channel graph.

Structural pruning removes output channels of convolutions and linears, and with
each one everything coupled to it: the next layers' inputs, batch-norm entries,
the matching channel of every other member of a sum (residual partners), a slice
of a concatenation, a whole group of a grouped convolution, the attention logits
of a selective kernel. Tracing tools recover these couplings from an autograd
graph; operad reads them off the expression, which states every one.

:func:`trace_channels` walks a bound module with its term and gives every
channel of every tensor a *unit*: channels that share a unit are removed
together. Units are unified by sums, residuals, minima, gates and selects;
channel-wise operators (norms, activations, pools, depthwise convolutions) pass
their input's units on; convolutions and linears make new ones. Units that
reach the network's input or output, or an operator the graph does not know,
are *fixed*. Units made together (one layer's filters) form a *space*; spaces
merge when their units do, so a residual stream is one space.

A channel is *dead* where it is identically zero once every parameter that
writes it (filter rows, biases, norm scales and shifts) is zeroed. Removing a
dead channel from a layer's input changes nothing, so a unit is fixed wherever
a channel of it reaches a layer that reads it while alive (through a sigmoid,
say, which maps zero to one half). That makes pruning exact: a network whose
pruned channels were zeroed first computes the same function after ``prune``.

>>> from operad import ops, Field
>>> from operad.rewrite import trace_channels
>>> m = ops.residual(ops.conv(8) >> ops.bn() >> ops.relu() >> ops.conv(8)).bind(Field(8))
>>> g = trace_channels(m)
>>> len(g.spaces())      # the inner conv's 8 filters; the stream is fixed by the input
1
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..algebra.combinators import Concat, Dense, Minimum, Named, Repeat, Residual, Seq, Sum
from ..algebra.macro import Macro
from ..algebra.term import Term
from ..activation import Activation
from ..adaptive_pool import AdaptivePool
from ..conv import Conv
from ..gate import Gate
from ..image_pool import ImagePool
from ..instance_norm import InstanceNorm
from ..linear import Dropout, Identity, Linear
from ..narrow import Narrow
from ..norm import BatchNorm
from ..pooling import GlobalPool, Pool
from ..regularize import DropBlock, ShakeDrop, ShakeShake, SpatialDropout
from ..resample import Upsample
from ..resize_to_input import ResizeToInput
from ..scale import Scale
from ..select import Select
from ..shortcut import PadChannels, Subsample

__all__ = ["ChannelGraph", "Layout", "Producer", "Space", "trace_channels", "register_pruner", "PRUNERS"]

#: what rebuilding a node gives: its pruned term, and a loader that copies the kept
#: weights into the node that term binds to
Loader = Callable[[nn.Module], None]
Rebuild = Callable[[], Tuple[Term, Loader]]


@dataclass
class Layout:
    """The channels of one tensor: the unit of each channel, and whether it is dead
    (zero once the parameters writing it are zeroed) were its unit dropped."""

    units: np.ndarray
    dead: np.ndarray

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, s) -> "Layout":
        return Layout(self.units[s], self.dead[s])

    @staticmethod
    def cat(parts: List["Layout"]) -> "Layout":
        return Layout(np.concatenate([p.units for p in parts]), np.concatenate([p.dead for p in parts]))


@dataclass
class Producer:
    """Parameter entries that write channels: ``module.<name>`` indexed along ``dim``,
    entry i belonging to unit ``units[i]``. ``kind`` is ``"filter"`` (conv and linear
    rows) or ``"norm"`` (norm scales and shifts)."""

    module: nn.Module
    path: str
    name: str
    dim: int
    units: np.ndarray
    kind: str


@dataclass
class Space:
    """Units made together (one layer's filters, or every layer of a residual stream)."""

    id: int
    units: List[int]          # unit roots that may be removed
    fixed: int                # how many units of the space are fixed
    paths: List[str] = field(default_factory=list)  # the layers whose filters make it

    @property
    def size(self) -> int:
        return len(self.units) + self.fixed


def _root(parent: List[int], u: int) -> int:
    """The root of ``u`` in a union-find forest, halving the path on the way."""
    while parent[u] != u:
        parent[u] = parent[parent[u]]
        u = parent[u]
    return u


class ChannelGraph:
    """Units, spaces and producers of one traced network (see the module docstring).

    ``drop`` (a set of unit roots) is what :meth:`rebuild` removes.
    """

    def __init__(self):
        self._parent: List[int] = []
        self._fixed: List[bool] = []
        self._space: List[int] = []       # unit -> space id (union-find over spaces below)
        self._space_parent: List[int] = []
        self.producers: List[Producer] = []
        self.drop: frozenset = frozenset()
        self.rebuild_root: Optional[Rebuild] = None
        self.model: Optional[nn.Module] = None

    # -- units ------------------------------------------------------------------
    def new(self, n: int, fixed: bool = False) -> np.ndarray:
        """``n`` new units in one new space."""
        sid = len(self._space_parent)
        self._space_parent.append(sid)
        start = len(self._parent)
        for i in range(n):
            self._parent.append(start + i)
            self._fixed.append(fixed)
            self._space.append(sid)
        return np.arange(start, start + n, dtype=np.int64)

    def fresh(self, n: int, fixed: bool = False) -> Layout:
        return Layout(self.new(n, fixed), np.ones(n, dtype=bool))

    def find(self, u: int) -> int:
        return _root(self._parent, u)

    def _find_space(self, s: int) -> int:
        return _root(self._space_parent, s)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Couple ``a[i]`` with ``b[i]`` for every i (their spaces merge too)."""
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self._parent[ry] = rx
                self._fixed[rx] = self._fixed[rx] or self._fixed[ry]
            sx, sy = self._find_space(self._space[rx]), self._find_space(self._space[ry])
            if sx != sy:
                self._space_parent[sy] = sx

    def fix(self, units: np.ndarray) -> None:
        for u in units.tolist():
            self._fixed[self.find(u)] = True

    def consume(self, x: Layout) -> None:
        """A layer reads every channel of ``x`` with weights it keeps: live ones stay."""
        self.fix(x.units[~x.dead])

    def roots(self, units: np.ndarray) -> np.ndarray:
        return np.array([self.find(u) for u in units.tolist()], dtype=np.int64)

    def is_fixed(self, u: int) -> bool:
        return self._fixed[self.find(u)]

    def keep(self, units: np.ndarray) -> torch.Tensor:
        """Indices of the channels of a tensor with ``units`` that survive ``drop``."""
        return torch.tensor([i for i, u in enumerate(units.tolist()) if self.find(u) not in self.drop],
                            dtype=torch.long)

    # -- producers and spaces -----------------------------------------------------------
    def produce(self, m: nn.Module, name: str, dim: int, units: np.ndarray, kind: str) -> None:
        if getattr(m, name, None) is not None:
            self.producers.append(Producer(m, getattr(m, "path", "?"), name, dim, units, kind))

    def spaces(self) -> List[Space]:
        """Every space with at least one removable unit, in order of first appearance."""
        by_space: Dict[int, Space] = {}
        seen = set()
        for u in range(len(self._parent)):
            r = self.find(u)
            if r in seen:
                continue
            seen.add(r)
            sid = self._find_space(self._space[r])
            sp = by_space.setdefault(sid, Space(sid, [], 0))
            if self._fixed[r]:
                sp.fixed += 1
            else:
                sp.units.append(r)
        for p in self.producers:
            if p.kind == "filter" and len(p.units):
                sp = by_space.get(self._find_space(self._space[self.find(int(p.units[0]))]))
                if sp is not None and p.path not in sp.paths:
                    sp.paths.append(p.path)
        return [s for s in by_space.values() if s.units]

    def removable(self) -> List[int]:
        return [u for s in self.spaces() for u in s.units]

    def check_drop(self, drop) -> frozenset:
        """``drop`` as a frozenset of unit roots, checked: removable, and leaving every
        space at least one unit."""
        roots = frozenset(self.find(int(u)) for u in drop)
        bad = [u for u in roots if self._fixed[u]]
        if bad:
            raise ValueError(f"cannot remove fixed units {sorted(bad)[:8]} (they reach the network's input "
                             f"or output, or a layer that reads them while alive)")
        for sp in self.spaces():
            if sp.fixed == 0 and set(sp.units) <= roots:
                raise ValueError(f"removing every unit of the space made by {sp.paths or [sp.id]} leaves "
                                 f"a layer without channels; keep at least one")
        return roots


# ---------------------------------------------------------------------------
# Visiting a bound node: the handlers
# ---------------------------------------------------------------------------
Handler = Callable[[Term, nn.Module, Layout, ChannelGraph], Tuple[Layout, Rebuild]]
#: handlers by term class; a family without one is opaque (its channels are fixed)
PRUNERS: Dict[type, Handler] = {}


def register_pruner(*classes: type):
    """Decorator: how channels flow through terms of ``classes`` and how a pruned
    node is rebuilt. A handler takes ``(term, module, layout, graph)`` and returns
    the output layout and a ``rebuild()`` giving ``(new_term, loader)``."""

    def deco(fn: Handler) -> Handler:
        for c in classes:
            PRUNERS[c] = fn
        return fn

    return deco


def visit(term: Term, m: nn.Module, x: Layout, g: ChannelGraph) -> Tuple[Layout, Rebuild]:
    """Trace one bound node built by ``term`` from input layout ``x``."""
    if isinstance(term, Named):
        out, rebuild = visit(term.inner, m, x, g)

        def named():
            t, load = rebuild()
            return Named(t, term.name), load
        return out, named
    handler = PRUNERS.get(type(term))
    in_type = getattr(m, "in_type", None)
    plain = in_type is None or (not in_type.is_complex and in_type.orders is None)
    if handler is not None and plain:
        return handler(term, m, x, g)
    if isinstance(term, Macro) and plain:
        return visit(term.expand(in_type), m, x, g)
    return _opaque(term, m, x, g)


def _copy_state(m: nn.Module) -> Loader:
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    return lambda new: new.load_state_dict(sd)


def _opaque(term, m, x, g):
    g.fix(x.units)
    n = int(m.out_type.channels) if hasattr(m, "out_type") else len(x)
    out = g.fresh(n, fixed=True)
    return out, lambda: (term, _copy_state(m))


def _channelwise_state(m: nn.Module, keep: torch.Tensor, c: int) -> Loader:
    """Slice every tensor of ``m``'s state whose first dimension has ``c`` entries."""
    sd = {k: (v[keep].clone() if v.dim() >= 1 and v.shape[0] == c else v.clone()) for k, v in m.state_dict().items()}
    return lambda new: new.load_state_dict(sd)


_ZERO_AT_ZERO = {"relu", "relu6", "gelu", "silu", "tanh", "hardswish", "leaky_relu"}


@register_pruner(Identity, Dropout, SpatialDropout, DropBlock, ShakeDrop, Pool, GlobalPool, AdaptivePool,
                 Upsample, Subsample, Scale, Activation, BatchNorm, InstanceNorm)
def _channelwise(term, m, x, g):
    """Each output channel is a function of the same input channel."""
    dead = x.dead.copy()
    if isinstance(term, Activation) and term.fn not in _ZERO_AT_ZERO:
        dead[:] = False
    if isinstance(term, (BatchNorm, InstanceNorm)):
        for name in ("weight", "bias"):
            g.produce(m, name, 0, x.units, "norm")
        if isinstance(term, InstanceNorm) and not getattr(m, "affine", False):
            dead = x.dead.copy()
        else:
            dead[:] = True
    out = Layout(x.units, dead)

    def rebuild():
        keep = g.keep(x.units)
        return term, _channelwise_state(m, keep, len(x))
    return out, rebuild


@register_pruner(Conv)
def _conv(term: Conv, m: nn.Conv2d, x, g):
    cin, cout, groups = m.in_channels, m.out_channels, m.groups
    if groups == 1:
        g.consume(x)
        out = g.fresh(cout)
    elif groups == cin:  # depthwise: output channel i*mult+j is made from input channel i
        out = Layout(np.repeat(x.units, cout // cin), np.ones(cout, dtype=bool))
    else:  # grouped: a whole group (its inputs and its outputs) goes or stays
        out = g.fresh(cout)
        a, b = cin // groups, cout // groups
        for j in range(groups):
            members = np.concatenate([x.units[j * a:(j + 1) * a], out.units[j * b:(j + 1) * b]])
            g.union(np.repeat(members[:1], len(members)), members)
    g.produce(m, "weight", 0, out.units, "filter")
    g.produce(m, "bias", 0, out.units, "filter")

    def rebuild():
        kin, kout = g.keep(x.units), g.keep(out.units)
        if groups == 1:
            new = dataclasses.replace(term, out=len(kout))
            w = m.weight[kout][:, kin]
        elif groups == cin:
            new = dataclasses.replace(term, out=None if term.out is None else len(kout),
                                      groups=0 if term.groups == 0 else len(kin))
            w = m.weight[kout]
        else:
            new = dataclasses.replace(term, out=len(kout), groups=len(kout) // (cout // groups))
            w = m.weight[kout]
        return new, _param_loader(w, None if m.bias is None else m.bias[kout])
    return out, rebuild


def _param_loader(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Loader:
    weight = weight.detach().clone()
    bias = None if bias is None else bias.detach().clone()

    def load(new):
        with torch.no_grad():
            new.weight.copy_(weight)
            if bias is not None:
                new.bias.copy_(bias)
    return load


@register_pruner(Linear)
def _linear(term: Linear, m: nn.Linear, x, g):
    g.consume(x)
    out = g.fresh(m.out_features)
    g.produce(m, "weight", 0, out.units, "filter")
    g.produce(m, "bias", 0, out.units, "filter")

    def rebuild():
        kin, kout = g.keep(x.units), g.keep(out.units)
        return (dataclasses.replace(term, out=len(kout)),
                _param_loader(m.weight[kout][:, kin], None if m.bias is None else m.bias[kout]))
    return out, rebuild


@register_pruner(Narrow)
def _narrow(term: Narrow, m, x, g):
    s, n = term.start, int(m.out_type.channels)
    out = x[s:s + n]

    def rebuild():
        before, inside = len(g.keep(x.units[:s])), len(g.keep(out.units))
        return Narrow(inside, before), (lambda new: None)
    return out, rebuild


@register_pruner(PadChannels)
def _pad(term: PadChannels, m, x, g):
    before, after = term.split(len(x))
    zb, za = g.fresh(before), g.fresh(after)
    out = Layout.cat([zb, x, za])

    def rebuild():
        kb, kx, ka = (len(g.keep(p.units)) for p in (zb, x, za))
        return PadChannels(kb + kx + ka, kb), (lambda new: None)
    return out, rebuild


# ---------------------------------------------------------------------------
# Combinators
# ---------------------------------------------------------------------------
def _children_loader(loads: List[Loader], children: Callable[[nn.Module], List[nn.Module]]) -> Loader:
    def load(new):
        for ld, child in zip(loads, children(new)):
            ld(child)
    return load


@register_pruner(Seq, Repeat)
def _seq(term, m, x, g):
    items = term.items if isinstance(term, Seq) else (term.block,) * term.n
    rebuilds = []
    for item, child in zip(items, m.children()):
        x, rb = visit(item, child, x, g)
        rebuilds.append(rb)

    def rebuild():
        parts = [rb() for rb in rebuilds]
        terms = tuple(t for t, _ in parts)
        load = _children_loader([ld for _, ld in parts], lambda new: list(new.children()))
        if isinstance(term, Repeat) and all(t == terms[0] for t in terms):
            return Repeat(terms[0], term.n), load
        return (terms[0] if len(terms) == 1 and isinstance(term, Repeat) else Seq(terms)), load
    return x, rebuild


def _merge(outs: List[Layout], g: ChannelGraph, dead_all: bool = True) -> Layout:
    """Branches added (or min-ed) channel by channel: their units are coupled."""
    for o in outs[1:]:
        g.union(outs[0].units, o.units)
    dead = np.logical_and.reduce([o.dead for o in outs]) if dead_all else np.logical_or.reduce([o.dead for o in outs])
    return Layout(outs[0].units, dead)


def _branches(term, m, x, g, items=None):
    items = term.items if items is None else items
    traced = [visit(b, mb, x, g) for b, mb in zip(items, m.branch)]
    outs = [o for o, _ in traced]

    def rebuild_branches():
        parts = [rb() for _, rb in traced]
        return tuple(t for t, _ in parts), _children_loader([ld for _, ld in parts], lambda new: list(new.branch))
    return outs, rebuild_branches


@register_pruner(Sum, Minimum, ShakeShake)
def _sum(term, m, x, g):
    outs, rb = _branches(term, m, x, g)
    out = _merge(outs, g)

    def rebuild():
        terms, load = rb()
        return type(term)(terms), load
    return out, rebuild


@register_pruner(Concat)
def _concat(term, m, x, g):
    outs, rb = _branches(term, m, x, g)

    def rebuild():
        terms, load = rb()
        return Concat(terms), load
    return Layout.cat(outs), rebuild


@register_pruner(Residual)
def _residual(term: Residual, m, x, g):
    body, rb_body = visit(term.body, m.body, x, g)
    short, rb_short = visit(term._short(), m.shortcut, x, g)
    out = _merge([body, short], g)

    def rebuild():
        (tb, lb), (ts, ls) = rb_body(), rb_short()
        new = Residual(tb, None if term.shortcut is None else ts, term.drop_path)
        return new, _children_loader([lb, ls], lambda new: [new.body, new.shortcut])
    return out, rebuild


@register_pruner(Dense)
def _dense(term: Dense, m, x, g):
    feats, rebuilds = x, []
    for i, layer in enumerate(m.layers):
        o, rb = visit(term._layer(i), layer, feats, g)
        feats = Layout.cat([feats, o])
        rebuilds.append(rb)

    def rebuild():
        parts = [rb() for rb in rebuilds]
        terms = tuple(t for t, _ in parts)
        load = _children_loader([ld for _, ld in parts], lambda new: list(new.layers))
        if all(t == terms[0] for t in terms):
            return Dense(terms[0], term.n), load
        return Dense(terms[0], term.n, terms), load
    return feats, rebuild


@register_pruner(Gate)
def _gate(term: Gate, m, x, g):
    body, rb_body = visit(term.body, m.body, x, g)
    gate, rb_gate = visit(term.g, m.gate, x, g)
    if len(gate) == len(body):
        out = _merge([body, gate], g, dead_all=False)  # a product is zero where either factor is
    else:  # one factor for every channel
        g.fix(gate.units)
        out = body

    def rebuild():
        (tb, lb), (tg, lg) = rb_body(), rb_gate()
        return Gate(tg, tb), _children_loader([lb, lg], lambda new: [new.body, new.gate])
    return out, rebuild


@register_pruner(ResizeToInput, ImagePool)
def _wrapper(term, m, x, g):
    """A body whose output is resized (or whose input is pooled) channel by channel."""
    out, rb = visit(term.body, m.body, x, g)

    def rebuild():
        tb, lb = rb()
        return dataclasses.replace(term, body=tb), _children_loader([lb], lambda new: [new.body])
    return out, rebuild


@register_pruner(Select)
def _select(term: Select, m, x, g):
    outs, rb = _branches(term, m, x, g)
    out = _merge(outs, g)
    c, n = len(out), len(outs)
    pooled = Layout(out.units, out.dead.copy())
    att_term = term._attention(c)
    logits, rb_att = visit(att_term, m.attention, pooled, g)
    g.union(np.tile(out.units, n), logits.units)  # logit i*C + j weighs channel j of branch i

    def rebuild():
        terms, load_b = rb()
        ta, la = rb_att()

        def load(new):
            load_b(new)
            la(new.attention)
        return Select(terms, ta, term.r, term.L), load
    return out, rebuild


# ---------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------
def trace_channels(model: nn.Module) -> ChannelGraph:
    """The channel graph of a bound operad module (see the module docstring).

    >>> from operad import ops, Field
    >>> from operad.rewrite import trace_channels
    >>> g = trace_channels((ops.conv(8) >> ops.relu() >> ops.conv(4)).bind(Field(3)))
    >>> [(len(s.units), s.paths) for s in g.spaces()]
    [(8, ['[0]'])]
    """
    term = getattr(model, "term", None)
    if term is None or not hasattr(model, "in_type"):
        raise TypeError(f"trace_channels takes a bound operad module (term.bind(...)); got {type(model).__name__}")
    g = ChannelGraph()
    g.model = model
    x = g.fresh(int(model.in_type.channels), fixed=True)
    out, g.rebuild_root = visit(term, model, x, g)
    g.fix(out.units)
    return g
