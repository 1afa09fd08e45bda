"""The store of a packed model: all packed layers' weights in two contiguous buffers.

``pack`` puts every packed layer's integer data (sign bits, k-bit levels: one
``uint8`` stream each) end to end in one ``uint8`` buffer, ``packed_bits``, and
its per-filter floats (``alpha``, ``scale``, bias) in one float buffer,
``packed_floats``, both registered on the packed model's root. Each layer keeps
its segments as plain ints (buffer, offset, length, shape) and reads views of
the buffers when it computes. The saved state dict then holds two tensors for
all packed layers instead of two to four per layer: ``torch.save`` spends a few
hundred bytes on every tensor, which for ResNet-20's 16-channel layers (288
bytes of sign bits each) was as much as the bits themselves.

>>> import torch
>>> from torch import nn
>>> class Toy(StoredLayer):
...     def __init__(self, w):
...         super().__init__()
...         self.add_segment("bits", (w > 0).to(torch.uint8))
...         self.add_segment("alpha", w.abs().mean(1))
>>> root = nn.Sequential(Toy(torch.randn(3, 5)), Toy(torch.randn(2, 5)))
>>> attach(root, list(root))
>>> root.packed_bits.shape, root.packed_floats.shape, root[1].segment("alpha").shape
(torch.Size([25]), torch.Size([5]), torch.Size([2]))
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["BITS", "FLOATS", "StoredLayer", "attach", "store_keys"]

BITS, FLOATS = "packed_bits", "packed_floats"


class StoredLayer(nn.Module):
    """A module whose tensors are segments of its owner's :data:`BITS` / :data:`FLOATS`
    buffers (after :func:`attach`); :meth:`derive` rebuilds what is computed from them."""

    def __init__(self):
        super().__init__()
        self._pending: Dict[str, Optional[torch.Tensor]] = {}
        self._segments: Dict[str, Tuple[str, int, int, Tuple[int, ...]]] = {}

    def add_segment(self, name: str, t: Optional[torch.Tensor]) -> None:
        """Queue ``t`` (``uint8``: bits; floating: floats; ``None``: absent) for :func:`attach`."""
        if t is not None and t.dtype != torch.uint8 and not t.is_floating_point():
            raise TypeError(f"a stored segment is uint8 or floating; {name!r} is {t.dtype}")
        self._pending[name] = t

    def segment(self, name: str) -> Optional[torch.Tensor]:
        """The view of the owner's buffer that holds ``name`` (``None`` if absent)."""
        if name not in self._segments:
            if name in self._pending or self._pending:
                raise RuntimeError(f"{type(self).__name__}: segments are readable once attach() has stored them")
            return None
        buf, off, n, shape = self._segments[name]
        return getattr(self._owner, buf)[off:off + n].view(shape)

    def segment_bytes(self) -> int:
        """Bytes this layer's segments take in the store."""
        return sum(self.segment(k).numel() * self.segment(k).element_size() for k in self._segments)

    def derive(self) -> None:
        """Rebuild derived (non-persistent) tensors from the segments; called by
        :func:`attach` and after ``load_state_dict``."""

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        if self._segments:  # the owner (this module or an ancestor) has loaded its buffers already
            self.derive()


def attach(owner: nn.Module, layers: List[StoredLayer]) -> None:
    """Store the queued segments of ``layers`` (modules inside ``owner``) in two
    buffers registered on ``owner``, in order, and derive each layer."""
    for name in (BITS, FLOATS):
        if hasattr(owner, name):
            raise ValueError(f"{type(owner).__name__} already has an attribute {name!r}; pack() registers its "
                             "store under that name on the model's root: rename that attribute")
    floats = [t for layer in layers for t in layer._pending.values() if t is not None and t.is_floating_point()]
    dtypes = sorted({str(t.dtype) for t in floats})
    if len(dtypes) > 1:
        raise ValueError(f"the layers to pack hold different float types ({', '.join(dtypes)}); convert the model "
                         "to one (model.float() or model.double()) before pack()")
    parts: Dict[str, List[torch.Tensor]] = {BITS: [], FLOATS: []}
    for layer in layers:
        ends = {BITS: sum(t.numel() for t in parts[BITS]), FLOATS: sum(t.numel() for t in parts[FLOATS])}
        for name, t in layer._pending.items():
            if t is None:
                continue
            buf = FLOATS if t.is_floating_point() else BITS
            layer._segments[name] = (buf, ends[buf], t.numel(), tuple(t.shape))
            ends[buf] += t.numel()
            parts[buf].append(t.detach().reshape(-1))
        layer._pending = {}
        object.__setattr__(layer, "_owner", owner)  # a plain reference, not a submodule (no cycle in the tree)
    device = floats[0].device if floats else None
    owner.register_buffer(BITS, torch.cat(parts[BITS]) if parts[BITS] else torch.zeros(0, dtype=torch.uint8,
                                                                                        device=device))
    owner.register_buffer(FLOATS, torch.cat(parts[FLOATS]) if parts[FLOATS] else torch.zeros(0, device=device))
    for layer in layers:
        layer.derive()


def store_keys(model: nn.Module) -> List[str]:
    """The state-dict keys of every store inside ``model`` (``[]`` if none)."""
    keys = []
    for name, mod in model.named_modules():
        if BITS in mod._buffers:
            keys += [f"{name}.{b}" if name else b for b in (BITS, FLOATS)]
    return keys
