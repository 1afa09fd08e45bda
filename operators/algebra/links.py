"""``links``: a block whose layers read the concatenation of chosen earlier maps,
and ``harmonic_block``, the sparse pattern of HarDNet (Chao et al. 2019).

Maps are numbered 0 (the block input), 1..n (the layer outputs). Layer i reads
the concatenation of maps ``links[i]``; the block returns the concatenation of
maps ``outputs``. DenseNet is ``links[i] = (0, ..., i)``; HarDNet links layer k
to ``k - 2**j`` for every ``2**j`` dividing k, and widens layer k by ``grmul``
for each link beyond the first::

    >>> from operad import ops, Field
    >>> b = ops.harmonic_block(growth=4, n_layers=4, grmul=1.7)
    >>> b.links
    ((0,), (1, 0), (2,), (3, 2, 0))
    >>> b.bind(Field(8)).out_type      # maps 1, 3, 4: 4 + 4 + 12 channels
    Field(20)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn

from .combinators import _PROBES, _probe, concat_types
from .field import Field, TypeMismatch
from .term import ALL_TRANSFORMS, Cost, Term, _join, attach, op, register_family
from .util import check_float, check_int

__all__ = ["Links", "links", "harmonic_block", "harmonic_links"]


class LinksModule(nn.Module):
    def __init__(self, layers, links, outputs):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.links = links
        self.outputs = outputs

    def forward(self, x):
        maps = [x]
        for layer, link in zip(self.layers, self.links):
            inp = maps[link[0]] if len(link) == 1 else torch.cat([maps[j] for j in link], 1)
            maps.append(layer(inp))
        if len(self.outputs) == 1:
            return maps[self.outputs[0]]
        return torch.cat([maps[j] for j in self.outputs], 1)


def _examples(draw):
    from hypothesis import strategies as st
    from .combinators import _leaf, _size
    n = draw(st.integers(1, 4))
    lk = tuple(tuple(sorted(draw(st.sets(st.integers(0, i), min_size=1, max_size=i + 1)), reverse=True))
               for i in range(n))
    outs = tuple(sorted(draw(st.sets(st.integers(0, n), min_size=1, max_size=n + 1))))
    layers = tuple(_leaf(draw, draw(st.integers(1, 3))) for _ in range(n))
    return Links(layers, lk, outs), Field(draw(st.integers(1, 4))), _size(draw)


@register_family("links", examples=_examples)
@dataclass(frozen=True, repr=False)
class Links(Term):
    """Layers fed by chosen earlier maps (see the module docstring). Each layer must
    keep the spatial size. Costs add; linear when every layer is."""

    layers: Tuple[Term, ...]
    links: Tuple[Tuple[int, ...], ...]
    outputs: Tuple[int, ...]

    def __post_init__(self):
        if len(self.layers) != len(self.links) or not self.layers:
            raise ValueError(f"links needs one link tuple per layer; got {len(self.layers)} layers and "
                             f"{len(self.links)} link tuples")
        for i, lk in enumerate(self.links):
            if not lk or any(not 0 <= j <= i for j in lk):
                raise ValueError(f"layer {i} may read maps 0..{i} (0 is the block input); got {lk}")
        if not self.outputs or any(not 0 <= j <= len(self.layers) for j in self.outputs):
            raise ValueError(f"outputs must name maps 0..{len(self.layers)}; got {self.outputs}")

    def children(self):
        return self.layers

    def with_children(self, children):
        return Links(tuple(children), self.links, self.outputs)

    def _types(self, t: Field):
        maps = [t]
        for i, (layer, lk) in enumerate(zip(self.layers, self.links)):
            try:
                tin = concat_types([maps[j] for j in lk], "links") if len(lk) > 1 else maps[lk[0]]
                o = layer._infer(tin)
            except TypeMismatch as e:
                raise e.at(f"layers[{i}]") from None
            if tin.rank == 2 and _probe(layer, tin) != _PROBES:
                raise TypeMismatch(f"expects layers that keep the spatial size; layers[{i}] maps "
                                   f"{_PROBES[0]} to {layer.out_size(tin, _PROBES[0])}", op="links")
            maps.append(o)
        ins = [concat_types([maps[j] for j in lk], "links") if len(lk) > 1 else maps[lk[0]] for lk in self.links]
        return maps, ins

    def out_type(self, t):
        maps, _ = self._types(t)
        outs = [maps[j] for j in self.outputs]
        return concat_types(outs, "links") if len(outs) > 1 else outs[0]

    def cost(self, t, size):
        _, ins = self._types(t)
        total = Cost()
        for layer, ti in zip(self.layers, ins):
            total = total + layer.cost(ti, size)
        return total

    def equivariance(self, t):
        _, ins = self._types(t)
        eq = ALL_TRANSFORMS
        for layer, ti in zip(self.layers, ins):
            eq = eq & layer.equivariance(ti)
        return eq

    @property
    def linear(self):
        return all(layer.linear for layer in self.layers)

    def lipschitz_bound(self, m, size=None):
        # map j changes by at most B_j |dx|: B_0 = 1, B_i = L_i * sqrt(sum_{j in links} B_j^2)
        b = [1.0]
        for layer, lk in zip(m.layers, self.links):
            lf = layer.term.lipschitz_bound(layer, size)
            if lf is None:
                return None
            b.append(lf * sum(b[j] ** 2 for j in lk) ** 0.5)
        return sum(b[j] ** 2 for j in self.outputs) ** 0.5

    def _bind(self, t, path):
        _, ins = self._types(t)
        out = self.out_type(t)
        mods = [layer._bind(ti, _join(path, f"layers[{i}]")) for i, (layer, ti) in enumerate(zip(self.layers, ins))]
        return attach(LinksModule(mods, self.links, self.outputs), self, t, out, path)

    def __repr__(self):
        return f"links({len(self.layers)} layers, links={self.links}, outputs={self.outputs})"


@op("links")
def links(layers: Sequence[Term], link: Sequence[Sequence[int]], outputs: Sequence[int]) -> Links:
    """A block whose layer i reads the concatenation of maps ``link[i]`` (0 is the
    input, j > 0 the output of layer j - 1's successor numbering: layer i makes map
    i + 1) and which returns the concatenation of maps ``outputs``.

    >>> from operad import ops, Field
    >>> ops.links([ops.conv(2), ops.conv(3)], [(0,), (0, 1)], outputs=(1, 2)).bind(Field(4)).out_type
    Field(5)
    """
    return Links(tuple(layers), tuple(tuple(lk) for lk in link), tuple(outputs))


def harmonic_links(n_layers: int, growth: int, grmul: float = 1.7):
    """HarDNet's pattern: ``(links, widths, outputs)`` for ``n_layers`` layers.

    Layer k (map k, 1-based) links to ``k - 2**j`` for every ``2**j`` dividing k;
    its width is ``growth * grmul**(#links - 1)`` rounded to an even number;
    the block returns the odd maps and the last one."""
    lks, widths = [], []
    for k in range(1, n_layers + 1):
        lk, w = [], float(growth)
        for j in range(10):
            d = 2 ** j
            if k % d == 0:
                lk.append(k - d)
                if j > 0:
                    w *= grmul
        lks.append(tuple(lk))
        widths.append(int(int(w + 1) / 2) * 2)
    outputs = tuple(i for i in range(1, n_layers + 1) if i % 2 == 1 or i == n_layers)
    return tuple(lks), tuple(widths), outputs


def harmonic_block(growth: int, n_layers: int, grmul: float = 1.7,
                   layer: Optional[Callable[[int], Term]] = None, keep_base: bool = False) -> Links:
    """A harmonic dense block (HarDNet): ``n_layers`` layers ``layer(width)``
    (default 3x3 conv + BN + ReLU6) with HarDNet's links and widths.

    >>> from operad import ops, Field
    >>> ops.harmonic_block(14, 8).bind(Field(64)).out_type
    Field(124)
    """
    check_int("harmonic_block", "growth", growth)
    check_int("harmonic_block", "n_layers", n_layers)
    check_float("harmonic_block", "grmul", grmul, 0, lo_open=True)
    lks, widths, outs = harmonic_links(n_layers, growth, grmul)
    if layer is None:
        from ..activation import Activation
        from ..conv import conv
        from ..norm import bn

        def layer(w):
            return conv(w, k=3, bias=False) >> bn() >> Activation("relu6")
    if keep_base:
        outs = (0,) + outs
    return Links(tuple(layer(w) for w in widths), lks, outs)


op("harmonic_block")(harmonic_block)
