"""Small helpers shared by operator families."""
from __future__ import annotations

import math
from typing import Any, Tuple

import sympy
import torch

from .errors import OpArgError, OpArgTypeError


def pair(v) -> Tuple[Any, Any]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair; got {v!r}")
        return tuple(v)
    return (v, v)


def floordiv(a, b):
    """Floor division for ints or sympy expressions."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return sympy.floor(sympy.sympify(a) / b)


def spectral_norm(w: torch.Tensor) -> float:
    """The largest singular value of a matrix (float64, exact via SVD)."""
    w = w.detach().to(torch.float64).reshape(w.shape[0], -1)
    if w.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(w, ord=2))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def windows_per_pixel(k, stride: int = 1, dilation: int = 1) -> int:
    """How many k x k windows of a strided (dilated) convolution one input pixel
    can fall in: ``ceil(k/stride)`` per axis without dilation, ``k`` with it.
    ``sqrt`` of this times the weight matrix's spectral norm bounds a convolution."""
    kh, kw = pair(k)
    if dilation == 1:
        return ceil_div(kh, stride) * ceil_div(kw, stride)
    return kh * kw


def area(size) -> Any:
    return size[0] * size[1]


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    num = lambda v: "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"
    return f"{'(' if lo_open else '['}{num(lo)}, {num(hi)}{')' if hi_open else ']'}"


def check_int(op: str, name: str, v: Any, lo: int = 1, none_ok: bool = False) -> Any:
    """``v`` if it is an int (not a bool) ``>= lo`` (or None when ``none_ok``); else an
    :class:`OpArgError` naming ``op``, ``name``, the value and what is allowed.

    >>> check_int("max_pool", "stride", 0)
    Traceback (most recent call last):
    ...
    operad.operators.algebra.errors.OpArgError: max_pool stride must be a positive int; got 0
    """
    if v is None and none_ok:
        return v
    what = {1: "a positive int", 0: "a non-negative int"}.get(lo, f"an int >= {lo}") + (" or None" if none_ok else "")
    if isinstance(v, sympy.Expr) and not v.is_number:  # a symbolic width, for operad.cost
        if (v - lo).is_negative:
            raise OpArgError(f"{op} {name} must be {what}; got {v!r}")
        return v
    if not is_int(v):
        raise OpArgTypeError(f"{op} {name} must be {what}; got {v!r} ({type(v).__name__})")
    if v < lo:
        raise OpArgError(f"{op} {name} must be {what}; got {v!r}")
    return v


def check_size(op: str, name: str, v: Any, lo: int = 1) -> Any:
    """An int ``>= lo`` or a pair of them (kernel sizes, windows); see :func:`check_int`."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise OpArgError(f"{op} {name} must be an int or a pair of ints; got {v!r}")
        for x in v:
            check_int(op, name, x, lo)
        return tuple(v)
    return check_int(op, name, v, lo)


def check_channels(op: str, name: str, v: Any, none_ok: bool = False) -> Any:
    """A channel count: a positive int or a sympy expression (or None when ``none_ok``)."""
    if v is None and none_ok:
        return v
    if isinstance(v, sympy.Expr):
        if v.is_positive is False or (v.is_number and not v.is_Integer):
            raise OpArgError(f"{op} {name} must be a positive int or a symbol; got {v!r}")
        return v
    what = "a positive int or a symbol" + (" or None" if none_ok else "")
    if not is_int(v):
        raise OpArgTypeError(f"{op} {name} must be {what}; got {v!r} ({type(v).__name__})")
    if v < 1:
        raise OpArgError(f"{op} {name} must be {what}; got {v!r}")
    return v


def check_float(op: str, name: str, v: Any, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False,
                hi_open: bool = False) -> Any:
    """A finite real number (not a bool) in ``[lo, hi]`` (ends open as asked); else an
    :class:`OpArgError` that quotes the interval.

    >>> check_float("pde_step", "h", float("inf"), 0, lo_open=True)
    Traceback (most recent call last):
    ...
    operad.operators.algebra.errors.OpArgError: pde_step h must be a positive finite number; got inf
    """
    rng = _range_text(lo, hi, lo_open or lo == -math.inf, hi_open or hi == math.inf)
    what = {"(0, inf)": "a positive finite number", "[0, inf)": "a non-negative finite number"}.get(
        rng, f"a finite number in {rng}")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OpArgTypeError(f"{op} {name} must be {what}; got {v!r} ({type(v).__name__})")
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise OpArgError(f"{op} {name} must be {what}; got {v!r}")
    return v


def check_prob(op: str, name: str, v: Any, hi_open: bool = False) -> Any:
    """A probability in ``[0, 1]`` (``[0, 1)`` when ``hi_open``)."""
    return check_float(op, name, v, 0.0, 1.0, hi_open=hi_open)


def check_choice(op: str, name: str, v: Any, choices) -> Any:
    """``v`` if it is one of ``choices``; else an :class:`OpArgError` listing them."""
    if not any(v == c and type(v) is type(c) for c in choices):
        raise OpArgError(f"{op} {name} must be one of {', '.join(map(repr, choices))}; got {v!r}")
    return v


PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


def check_conv_args(op: str, k, stride: int, dilation: int, padding, padding_mode: str) -> None:
    """Validate the hyper-parameters every convolution-like term shares; errors name ``op``."""
    if padding not in ("same", "valid") and not (is_int(padding) and padding >= 0):
        raise OpArgError(f"{op} padding must be 'same', 'valid' or a non-negative int; got {padding!r}")
    check_choice(op, "padding_mode", padding_mode, PADDING_MODES)
    check_int(op, "stride", stride)
    check_int(op, "dilation", dilation)
    check_size(op, "k", k)


# ----------------------------------------------------------------------------- every family's arguments

#: Allowed ranges of hyper-parameters by name, checked on every registered family's
#: fields at construction (numbers only; a family overrides with ``_arg_rules``,
#: ``"-"`` switching a rule off). Intervals apply to each element of a pair.
ARG_RULES = {
    **{n: "[1, inf)" for n in ("out", "k", "stride", "dilation", "levels", "mix", "multiplier", "scale", "pool",
                               "n", "q", "mid", "group", "coarsest", "dw", "ratio", "r", "width")},
    **{n: "[0, inf)" for n in ("padding", "start", "groups")},
    **{n: "(0, inf)" for n in ("eps", "h", "t", "rd_ratio", "sigma")},
    "momentum": "[0, 1]", "p": "[0, 1)",
}

_HINTS: dict = {}


def _hints(cls) -> dict:
    if cls not in _HINTS:
        import typing
        try:
            _HINTS[cls] = typing.get_type_hints(cls)
        except Exception:  # an annotation that does not resolve: check ranges only
            _HINTS[cls] = {}
    return _HINTS[cls]


def _kinds(hint) -> Any:
    """The checkable scalar kinds an annotation allows (a set of 'int', 'float', 'sym', 'str', 'none',
    'pair'), or None when it allows something this check does not model (terms, tuples, callables)."""
    import typing
    if hint is int:
        return {"int"}
    if hint is float:
        return {"float", "int"}
    if hint is str:
        return {"str"}
    if hint is type(None):
        return {"none"}
    if isinstance(hint, type) and issubclass(hint, sympy.Basic):
        return {"sym"}
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        out = set()
        for a in typing.get_args(hint):
            k = _kinds(a)
            if k is None:
                return None
            out |= k
        return out
    if origin is tuple and typing.get_args(hint) == (int, int):
        return {"pair"}
    return None


def _type_ok(v, kinds) -> bool:
    if v is None:
        return "none" in kinds
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return bool(kinds & {"int", "float"})
    if isinstance(v, float):
        return "float" in kinds and math.isfinite(v)
    if isinstance(v, str):
        return "str" in kinds
    if isinstance(v, sympy.Basic):  # symbolic widths and sizes, for operad.cost
        return bool(kinds & {"sym", "int"})
    if isinstance(v, (tuple, list)):
        return "pair" in kinds and len(v) == 2 and all(is_int(x) for x in v)
    return False


def _describe(kinds) -> str:
    names = {"int": "an int", "float": "a finite number", "sym": "a sympy expression", "str": "a string",
             "none": "None", "pair": "a pair of ints"}
    if "float" in kinds:
        kinds = kinds - {"int"}
    return " or ".join(names[k] for k in ("int", "float", "pair", "sym", "str", "none") if k in kinds)


def check_term_args(op: str, cls: type, values: dict) -> None:
    """Check a family's field values: each against its annotation (``int``, ``float``,
    channels, ``Optional``/``Union`` of them: no bools for numbers, no NaN or
    inf) and against :data:`ARG_RULES` (``cls._arg_rules`` overrides). Raises
    :class:`OpArgTypeError` or :class:`OpArgError` naming ``op``, the argument,
    the value and what is allowed.

    >>> from operad.operators.conv import Conv
    >>> check_term_args("conv", Conv, {"k": (3, 0)})
    Traceback (most recent call last):
    ...
    operad.operators.algebra.errors.OpArgError: conv k must be a positive int or a pair of them; got (3, 0)
    """
    hints = _hints(cls)
    rules = {**ARG_RULES, **getattr(cls, "_arg_rules", {})}
    for name, v in values.items():
        kinds = _kinds(hints[name]) if name in hints else None
        if kinds is not None and not _type_ok(v, kinds):
            raise OpArgTypeError(f"{op} {name} must be {_describe(kinds)}; got {v!r} ({type(v).__name__})")
        rule = rules.get(name, "-")
        if rule == "-" or v is None or isinstance(v, (bool, str)):
            continue
        items = v if isinstance(v, (tuple, list)) else (v,)
        if not all(isinstance(x, (int, float, sympy.Basic)) and not isinstance(x, bool) for x in items):
            continue
        lo_open, hi_open = rule[0] == "(", rule[-1] == ")"
        lo, hi = (float(s) for s in rule[1:-1].split(","))
        for x in items:
            if isinstance(x, sympy.Basic):
                bad = (x.is_positive is False) if lo >= 1 or lo_open else (x.is_nonnegative is False)
            else:
                bad = not (math.isfinite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi))
            if bad:
                raise OpArgError(f"{op} {name} must be {_rule_text(rule, kinds)}; got {v!r}")


def _rule_text(rule: str, kinds) -> str:
    ints = kinds is not None and kinds <= {"int", "pair", "none", "sym"}
    word = {"[1, inf)": "a positive int", "[0, inf)": "a non-negative int"}.get(rule) if ints else None
    if word is None:
        return {"(0, inf)": "a positive number"}.get(rule, f"in {rule}")
    return word + (" or a pair of them" if "pair" in kinds else "")
