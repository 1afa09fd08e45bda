"""Field types: what a feature map is, independent of its size.

A :class:`Field` says how many channels a feature map has, whether they are
real or complex, which rotation order each channel group carries, and its
spatial rank (2 for images, 0 after global pooling)::

    >>> Field(16)
    Field(16)
    >>> Field(8, kind="complex", orders=(0, 1))
    Field(8, complex, orders=(0, 1))
    >>> Field(16, bits=1)   # binary activations (ops.sign)
    Field(16, bits=1)

Complex fields are stored as real tensors with the real and imaginary part of
each channel interleaved: channel ``2j`` holds ``Re z_j`` and ``2j + 1`` holds
``Im z_j`` (the layout of :func:`torch.view_as_real` folded into the channel
axis). Concatenation, channel groups and ordinary real kernels then work
unchanged, and autocast, ``channels_last`` and ``torch.compile`` see only real
tensors. :func:`as_complex` and :func:`from_complex` convert.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import sympy
import torch

Channels = Union[int, sympy.Expr]

from .errors import OpArgError, OpArgTypeError, OperadError

__all__ = ["Field", "TypeMismatch", "as_complex", "from_complex", "Channels"]


class TypeMismatch(OperadError, TypeError):
    """A term cannot accept the field it is given.

    Raised at composition or bind time, never in ``forward``. The message
    names the path of the offending node, the operator, what it expects and
    the field it got, e.g.
    ``stage2[1].branch[0]: harmonic_conv expects a complex field; got Field(32)``.
    """

    def __init__(self, detail: str, op: Optional[str] = None, path: Sequence[str] = ()):
        self.detail = detail
        self.op = op
        self.segments = tuple(path)
        super().__init__(self._format())

    @property
    def path(self) -> str:
        out = ""
        for s in self.segments:
            out += s if s.startswith("[") or not out else "." + s
        return out

    def _format(self) -> str:
        what = f"{self.op} {self.detail}" if self.op else self.detail
        return f"{self.path}: {what}" if self.segments else what

    def at(self, segment: str) -> "TypeMismatch":
        """The same error one level further out (``segment`` prefixed to the path)."""
        return TypeMismatch(self.detail, self.op, (segment,) + self.segments)

    def __reduce__(self):
        return (TypeMismatch, (self.detail, self.op, self.segments))


def _check_channels(c) -> Channels:
    if isinstance(c, bool):
        raise OpArgTypeError(f"Field channels must be an int or a sympy expression, got {c!r}")
    if isinstance(c, int):
        if c <= 0:
            raise OpArgError(f"Field channels must be positive, got {c}")
        return c
    if isinstance(c, sympy.Basic):
        if c.is_Integer:
            return _check_channels(int(c))
        return c
    if hasattr(c, "__index__"):
        return _check_channels(int(c))
    raise OpArgTypeError(f"Field channels must be an int or a sympy expression, got {type(c).__name__} {c!r}")


@dataclass(frozen=True)
class Field:
    """The type of a feature map: channels, real or complex, rotation orders, rank.

    ``channels`` counts complex channels for a complex field (the tensor holds
    twice as many real channels, see :attr:`tensor_channels`). ``orders``, for
    circular-harmonic fields, gives one rotation order per channel group; the
    channels split into ``len(orders)`` equal groups. ``bits`` is the width of
    one value: 32 (full precision, the default), 1 after ``ops.sign()``, k after
    ``ops.quantize(k)``; a field of ``bits=b`` takes at most ``2**b`` distinct
    values. Families that do not declare ``keeps_bits`` give full-precision output.

    >>> Field(4, kind="complex", orders=(0, 1)).group_size
    2
    >>> C = sympy.Symbol("C", positive=True, integer=True)
    >>> Field(C).channels
    C
    """

    channels: Channels
    kind: str = "real"
    orders: Optional[Tuple[int, ...]] = None
    rank: int = 2
    bits: int = 32

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise ValueError(f"Field bits must be an int in 1..32, got {self.bits!r}")
        object.__setattr__(self, "channels", _check_channels(self.channels))
        if self.kind not in ("real", "complex"):
            raise OpArgError(f"Field kind must be 'real' or 'complex', got {self.kind!r}")
        if self.rank not in (0, 1, 2, 3):
            raise OpArgError(f"Field rank must be 0, 1, 2 or 3, got {self.rank!r}")
        if self.orders is not None:
            orders = tuple(int(m) for m in self.orders)
            if not orders:
                raise OpArgError("Field orders must be None or a non-empty tuple of ints")
            object.__setattr__(self, "orders", orders)
            c = self.channels
            if isinstance(c, int) and c % len(orders):
                raise OpArgError(
                    f"Field({c}) cannot split into {len(orders)} order groups {orders}: "
                    f"channels must be a multiple of {len(orders)}")

    @property
    def is_complex(self) -> bool:
        return self.kind == "complex"

    @property
    def tensor_channels(self) -> Channels:
        """Channels of the real tensor that carries this field (2x for complex)."""
        return 2 * self.channels if self.is_complex else self.channels

    @property
    def group_size(self) -> Channels:
        """Channels per rotation-order group (all channels when ``orders`` is None)."""
        return self.channels if self.orders is None else self.channels // len(self.orders)

    @property
    def is_symbolic(self) -> bool:
        return not isinstance(self.channels, int)

    def with_(self, **changes) -> "Field":
        """A copy with some attributes changed: ``Field(8).with_(channels=16)``."""
        d = dict(channels=self.channels, kind=self.kind, orders=self.orders, rank=self.rank, bits=self.bits)
        d.update(changes)
        return Field(**d)

    def channel_orders(self) -> Optional[Tuple[int, ...]]:
        """The rotation order of every (complex) channel, or None."""
        if self.orders is None:
            return None
        g = self.group_size
        if not isinstance(g, int):
            raise TypeError("channel_orders needs a concrete channel count")
        return tuple(m for m in self.orders for _ in range(g))

    def shape(self, batch: int = 1, size: Optional[Tuple[int, ...]] = None) -> Tuple[int, ...]:
        """The tensor shape of this field for a batch and spatial size."""
        size = tuple(size or ())
        if len(size) != self.rank:
            raise ValueError(f"{self} has rank {self.rank}; got spatial size {size}")
        return (batch, int(self.tensor_channels)) + tuple(int(s) for s in size)

    def __repr__(self) -> str:
        parts = [str(self.channels)]
        if self.kind != "real":
            parts.append(self.kind)
        if self.orders is not None:
            parts.append(f"orders={self.orders}")
        if self.rank != 2:
            parts.append(f"rank={self.rank}")
        if self.bits != 32:
            parts.append(f"bits={self.bits}")
        return f"Field({', '.join(parts)})"


def as_complex(x: torch.Tensor) -> torch.Tensor:
    """View an interleaved real tensor (B, 2C, ...) as a complex tensor (B, C, ...).

    >>> z = as_complex(torch.tensor([[1.0, 2.0]]))
    >>> z
    tensor([[1.+2.j]])
    """
    b, c2 = x.shape[:2]
    rest = x.shape[2:]
    y = x.reshape(b, c2 // 2, 2, *rest).movedim(2, -1).contiguous()
    return torch.view_as_complex(y.float() if y.dtype not in (torch.float32, torch.float64) else y)


def from_complex(z: torch.Tensor) -> torch.Tensor:
    """The interleaved real tensor (B, 2C, ...) of a complex tensor (B, C, ...)."""
    y = torch.view_as_real(z)  # (B, C, ..., 2)
    y = y.movedim(-1, 2)
    b, c = z.shape[:2]
    return y.reshape(b, 2 * c, *z.shape[2:])
