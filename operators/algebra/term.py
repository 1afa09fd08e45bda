"""Operator terms: immutable descriptions of operators, and how they bind.

A term says *what* an operator is (``conv(64, k=3, stride=2)``), never what its
weights are. Terms compose with ``>>`` (sequence), ``*`` (repeat) and ``+``
(sum of branches) and with the combinators of :mod:`operad.operators.algebra.combinators`.
``term.bind(Field(3))`` walks the expression, infers every intermediate type,
and returns an ordinary :class:`torch.nn.Module` whose every node carries
``term``, ``in_type``, ``out_type`` and ``path``.

Writing an operator family is writing one frozen dataclass::

    @register_family("scale", examples=...)
    @dataclass(frozen=True, repr=False)
    class Scale(Term):
        factor: float = 2.0
        def out_type(self, t): return self.require_real(t)
        def build(self, t): return ScaleModule(self.factor)
        def lipschitz_bound(self, m, size=None): return abs(self.factor)
        def equivariance(self, t): return ALL_TRANSFORMS
        linear = True

and a constructor ``@op("scale") def scale(factor=2.0): return Scale(factor)``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, ClassVar, Dict, FrozenSet, Iterator, Optional, Sequence, Tuple

import sympy
import torch
from torch import nn

from .errors import OpArgError, OpArgTypeError, OperadError
from .field import Field, TypeMismatch
from .util import check_term_args

__all__ = [
    "Term", "Family", "FAMILIES", "OPS", "register_family", "op", "ALL_TRANSFORMS",
    "POINTWISE", "Size", "attach", "Cost", "Size",
]

Size = Optional[Tuple[Any, Any]]
ALL_TRANSFORMS: FrozenSet[str] = frozenset({"shift", "rot90", "flip", "rotation"})
POINTWISE: FrozenSet[str] = frozenset({"shift", "rot90", "flip"})


@dataclass(frozen=True)
class Cost:
    """Parameters, multiply-adds, bit operations and storage of an operator for one sample.

    ``macs`` follows :class:`torch.utils.flop_counter.FlopCounterMode`: half the
    FLOPs of convolutions, matrix products (mm, addmm, bmm, einsum) and
    scaled-dot-product attention. Element-wise work (activations, norms,
    additions, pooling, biases) is not counted, as the counter does not.

    ``bops`` counts bit operations: every MAC costs ``w_bits * a_bits`` (the
    widths of its weight and of its input), so a float32 MAC counts 1024 and a
    binary (XNOR) one 1. ``bytes`` is parameter storage at the parameters' bit
    widths (``numel * bits / 8``, so it may be a fraction of a byte): binary
    weights 1/8 byte each plus their float32 ``alpha`` per filter, batch norm
    its affine scale and shift. Left out, they default to full precision
    (``1024 * macs`` and ``4 * params``), and the repr prints them only when
    they differ from that. Fields may be ints, rationals or sympy expressions.

    >>> Cost(10, 20) + Cost(1, 2)
    Cost(params=11, macs=22)
    >>> Cost(10, 20).bops, Cost(10, 20).bytes
    (20480, 40)
    >>> Cost(8, 20, bops=20, bytes=1)
    Cost(params=8, macs=20, bops=20, bytes=1)
    """

    params: Any = 0
    macs: Any = 0
    bops: Any = None
    bytes: Any = None

    def __post_init__(self):
        if self.bops is None:
            object.__setattr__(self, "bops", _simp(1024 * self.macs))
        if self.bytes is None:
            object.__setattr__(self, "bytes", _simp(4 * self.params))

    def _fields(self):
        return (self.params, self.macs, self.bops, self.bytes)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(_simp(a + b) for a, b in zip(self._fields(), other._fields())))

    def __mul__(self, n) -> "Cost":
        return Cost(*(_simp(a * n) for a in self._fields()))

    __rmul__ = __mul__

    def subs(self, *args, **kwargs) -> "Cost":
        """Substitute symbols: ``cost.subs({H: 32, W: 32})``."""
        f = lambda e: _simp(sympy.sympify(e).subs(*args, **kwargs))
        return Cost(*(f(a) for a in self._fields()))

    def __repr__(self) -> str:
        s = f"Cost(params={self.params}, macs={self.macs}"
        if _simp(self.bops - 1024 * self.macs) != 0 or _simp(self.bytes - 4 * self.params) != 0:
            s += f", bops={self.bops}, bytes={self.bytes}"
        return s + ")"


def _simp(e):
    if isinstance(e, Fraction):
        return int(e) if e.denominator == 1 else e
    if isinstance(e, sympy.Basic):
        e = sympy.expand(e)
        if e.is_Integer:
            return int(e)
    return e


@dataclass(frozen=True)
class Family:
    """A registered operator family: its term class and how to draw examples.

    ``examples(draw)`` takes a hypothesis ``draw`` function and returns
    ``(term, in_type, (H, W))`` small enough for a CPU property test.
    """

    name: str
    cls: type
    examples: Optional[Callable] = None
    tol: float = 1e-4  # relative tolerance for equivariance checks of this family


FAMILIES: Dict[str, Family] = {}
OPS: Dict[str, Callable] = {}
# The term classes behind ``>>``, ``*``, ``+`` and ``.named``: ``combinators``
# registers them with :func:`combinator`, so this module never imports it.
_COMBINATORS: Dict[str, type] = {}


def combinator(symbol: str):
    """Class decorator: make a term class the one a term operator builds
    (``"seq"`` for ``>>``, ``"repeat"`` for ``*``, ``"sum"`` for ``+``,
    ``"named"`` for ``.named``)."""

    def deco(cls):
        _COMBINATORS[symbol] = cls
        return cls

    return deco


def register_family(name: str, examples: Optional[Callable] = None, tol: float = 1e-4):
    """Class decorator: register a term class as an operator family.

    Every registered family is covered by the property suite in
    ``tests/test_properties.py`` through its ``examples`` strategy.
    """

    def deco(cls):
        if name in FAMILIES and FAMILIES[name].cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"operator family {name!r} is registered twice "
                             f"({FAMILIES[name].cls.__module__} and {cls.__module__})")
        if not isinstance(cls.__dict__.get("family"), property):
            cls.family = name  # families with per-instance names (activations) keep their property
        FAMILIES[name] = Family(name, cls, examples, tol)
        if "__init__" in cls.__dict__ and not getattr(cls.__init__, "_checks_args", False):
            cls.__init__ = _checked_init(cls, name, cls.__init__)
        return cls

    return deco


def _checked_init(cls, name: str, init):
    """``init`` with every argument checked (:func:`~operad.operators.algebra.util.check_term_args`)
    and the family's own ValueError/TypeError raised as :class:`OpArgError`/:class:`OpArgTypeError`,
    so a bad hyper-parameter is an error at construction naming the op, the argument and the value."""
    import functools
    import inspect

    sig = inspect.signature(init)
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError as e:
            raise OpArgTypeError(f"{name}: {e}") from None
        bound.apply_defaults()
        values = {k: v for k, v in list(bound.arguments.items())[1:] if k in names}
        try:  # the family's own checks first: their messages know the op best
            init(self, *args, **kwargs)
        except OperadError:
            raise
        except TypeError as e:  # often Python's own words ('<' not supported ...): say which argument
            check_term_args(name, cls, values)
            raise OpArgTypeError(str(e)) from None
        except ValueError as e:  # the family's own check: its message knows the op best
            raise OpArgError(str(e)) from None
        check_term_args(name, cls, values)

    __init__._checks_args = True
    return __init__


def op(family: Optional[str] = None):
    """Decorator: publish a term constructor as ``operad.ops.<name>``.

    ``family`` names the term family it builds, so rewrites can match on
    the constructor itself: ``substitute(term, ops.relu, ops.gelu())``.
    """

    def deco(fn):
        fn.family = family or fn.__name__
        if fn.__name__ in OPS and OPS[fn.__name__] is not fn:
            prev = OPS[fn.__name__]
            if (prev.__module__, prev.__qualname__) != (fn.__module__, fn.__qualname__):
                raise ValueError(f"ops.{fn.__name__} is defined twice "
                                 f"({prev.__module__} and {fn.__module__})")
        OPS[fn.__name__] = fn
        return fn

    return deco


def attach(m: nn.Module, term: "Term", in_type: Field, out_type: Field, path: str) -> nn.Module:
    """Record the operad metadata on a bound module node."""
    m.term = term
    m.in_type = in_type
    m.out_type = out_type
    m.path = path or "<root>"
    return m


def _join(path: str, seg: str) -> str:
    if not path:
        return seg.lstrip(".")
    return path + (seg if seg.startswith("[") else "." + seg)


class Term:
    """Base of all operator terms. Subclasses are frozen dataclasses.

    A leaf family overrides :meth:`out_type`, :meth:`build` and, where they
    apply, :meth:`out_size`, :meth:`cost`, :meth:`lipschitz_bound`,
    :meth:`equivariance` and ``linear``. Combinators also override
    :meth:`children`, :meth:`with_children` and :meth:`_bind`.
    """

    family: ClassVar[str] = "term"
    linear: ClassVar[bool] = False
    #: whether ``out_type`` may claim fewer than 32 bits; where False (the
    #: default) a low-bit field that passes through comes out as full precision
    keeps_bits: ClassVar[bool] = False
    #: maps non-negative inputs to non-negative outputs (pools, identity, padding)
    keeps_nonnegative: ClassVar[bool] = False
    #: fields printed positionally in the repr
    _positional: ClassVar[Tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        f = cls.__dict__.get("out_type")
        if f is not None and not getattr(f, "_bits_checked", False):
            cls.out_type = _full_precision_unless_kept(f)

    # ----- what a family states -------------------------------------------
    def out_type(self, t: Field) -> Field:
        """The field this term produces from ``t``; raises :class:`TypeMismatch`."""
        return t

    def out_size(self, t: Field, size: Size) -> Size:
        """The spatial size this term produces from ``size`` (ints or sympy)."""
        return size

    def cost(self, t: Field, size: Size) -> Cost:
        """Parameters and multiply-adds for one sample of spatial size ``size``."""
        return Cost()

    def lipschitz_bound(self, m: nn.Module, size: Size = None) -> Optional[float]:
        """An upper bound of the l2 Lipschitz constant of the bound module ``m``
        (per sample, eval mode), or None where none is known."""
        return None

    def equivariance(self, t: Field) -> FrozenSet[str]:
        """The transforms this term commutes with on input ``t``: a subset of
        ``{"shift", "rot90", "flip", "rotation"}``. ``shift`` means circular
        shifts by multiples of the term's total stride."""
        return frozenset()

    def nonnegative(self, t: Field, input_nonnegative: bool = False) -> bool:
        """Whether every output is >= 0 on input ``t``, given whether the input is
        (a ReLU's always is; a pool's or a leaky ReLU's when its input is; a GELU's never
        is). Rewrites that need a sign (``remove_residuals``) decide by this; the
        property suite checks it. Combinators derive it from their parts.

        >>> from operad import ops, Field
        >>> (ops.conv(4) >> ops.relu() >> ops.max_pool()).nonnegative(Field(3))
        True
        >>> ops.leaky_relu().nonnegative(Field(3))
        False
        """
        return bool(input_nonnegative and self.keeps_nonnegative)

    def build(self, t: Field) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} does not build a module")

    # ----- structure --------------------------------------------------------
    def children(self) -> Tuple["Term", ...]:
        return ()

    def with_children(self, children: Sequence["Term"]) -> "Term":
        return self

    def map(self, fn: Callable[["Term"], "Term"]) -> "Term":
        """Bottom-up rewrite: apply ``fn`` to every sub-term, children first."""
        kids = self.children()
        node = self.with_children([k.map(fn) for k in kids]) if kids else self
        return fn(node)

    def walk(self) -> Iterator["Term"]:
        """Every sub-term, depth first, this one first."""
        yield self
        for k in self.children():
            yield from k.walk()

    # ----- helpers for families --------------------------------------------
    def reject(self, expects: str, got: Field):
        raise TypeMismatch(f"expects {expects}; got {got!r}", op=self.family)

    def require_real(self, t: Field, rank: Optional[int] = 2) -> Field:
        if t.is_complex:
            self.reject("a real field (apply ops.modulus() to leave the complex world)", t)
        if rank is not None and t.rank != rank:
            hint = " (add ops.global_pool() first)" if rank == 0 else ""
            self.reject(f"a rank-{rank} field{hint}", t)
        return t

    def _infer(self, t: Field) -> Field:
        """``out_type`` with the operator name attached to errors."""
        try:
            return self.out_type(t)
        except TypeMismatch as e:
            if e.op is None:
                raise TypeMismatch(e.detail, self.family, e.segments) from None
            raise

    # ----- binding -----------------------------------------------------------
    def bind(self, in_type: Field) -> nn.Module:
        """Infer every type and return the bound :class:`torch.nn.Module`.

        >>> from operad import ops, Field
        >>> m = (ops.conv(8) >> ops.relu()).bind(Field(3))
        >>> m.out_type
        Field(8)
        """
        if isinstance(in_type, int):
            in_type = Field(in_type)
        if in_type.is_symbolic:
            raise OpArgTypeError(f"bind needs concrete channels; got {in_type!r}. Symbolic fields are for operad.cost")
        return self._bind(in_type, "")

    def _bind(self, t: Field, path: str) -> nn.Module:
        out = self._infer(t)
        m = self.build(t)
        return attach(m, self, t, out, path)

    # ----- algebra -------------------------------------------------------------
    def __rshift__(self, other: "Term") -> "Term":
        _check_term(other, ">>")
        Seq = _COMBINATORS["seq"]
        return Seq(_flat(self, Seq) + _flat(other, Seq))

    def __rrshift__(self, other):
        return NotImplemented

    def __mul__(self, n: int) -> "Term":
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise OpArgError(f"term * n needs a positive int n; got {n!r}")
        return _COMBINATORS["repeat"](self, n)

    __rmul__ = __mul__

    def __add__(self, other: "Term") -> "Term":
        _check_term(other, "+")
        Sum = _COMBINATORS["sum"]
        return Sum(_flat(self, Sum) + _flat(other, Sum))

    def named(self, name: str) -> "Term":
        """Give this term a name: it becomes the attribute and path segment of its node."""
        return _COMBINATORS["named"](self, name)

    # ----- printing ------------------------------------------------------------
    def __repr__(self) -> str:
        args = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            v = getattr(self, f.name)
            if f.name in self._positional:
                args.append(_fmt(v))
            elif f.default is not dataclasses.MISSING and _same(v, f.default):
                continue
            else:
                args.append(f"{f.name}={_fmt(v)}")
        return f"{self.family}({', '.join(args)})"


def _full_precision_unless_kept(f):
    """Wrap a family's ``out_type``: a field with ``bits < 32`` survives only
    through families that declare ``keeps_bits`` (sign, quantizers, sequences)."""

    @functools.wraps(f)
    def out_type(self, t):
        out = f(self, t)
        if isinstance(out, Field) and out.bits != 32 and not self.keeps_bits:
            out = out.with_(bits=32)
        return out

    out_type._bits_checked = True
    return out_type


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and a == b
    except Exception:
        return False


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v) if not math.isfinite(v) or v != int(v) else f"{v:.1f}"
    if isinstance(v, str):
        return repr(v)
    return repr(v)


def _check_term(x, symbol: str):
    if not isinstance(x, Term):
        hint = " (did you forget to call it, e.g. ops.relu() instead of ops.relu?)" if callable(x) else ""
        raise OpArgTypeError(f"cannot combine a term with {type(x).__name__} using {symbol}{hint}")


def _flat(t: Term, cls) -> Tuple[Term, ...]:
    return t.items if type(t) is cls else (t,)
