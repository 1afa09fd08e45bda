"""Bad hyper-parameters fail when the term is built (naming the op, the argument
and the value) or at bind (with the node path), never in forward."""
import inspect
import math

import pytest

from operad import Field, ops
from operad.operators.algebra.errors import OpArgError, OpArgTypeError, OperadError
from operad.operators.algebra.field import TypeMismatch
from operad.operators.algebra.term import OPS


@pytest.mark.parametrize("make,match", [
    (lambda: ops.max_pool(2, stride=0), r"max_pool stride must be a positive int or None; got 0"),
    (lambda: ops.avg_pool(3, stride=0), r"avg_pool stride must be a positive int or None; got 0"),
    (lambda: ops.max_pool(2, stride=-1), r"max_pool stride .*got -1"),
    (lambda: ops.avg_pool(2, padding=-1), r"avg_pool padding must be a non-negative int; got -1"),
    (lambda: ops.max_pool(2.0), r"max_pool k must be a positive int; got 2.0"),
    (lambda: ops.conv(8, k=2.5), r"conv k must be a positive int; got 2.5 \(float\)"),
    (lambda: ops.conv(8, k="3"), r"conv k must be a positive int; got '3' \(str\)"),
    (lambda: ops.conv(8, k=(3, 0)), r"conv k must be a positive int; got 0"),
    (lambda: ops.conv(8, stride=True), r"conv stride must be a positive int; got True"),
    (lambda: ops.conv(8, padding=-2), r"conv padding must be 'same', 'valid' or a non-negative int; got -2"),
    (lambda: ops.conv(0), r"conv out must be a positive int or a symbol or None; got 0"),
    (lambda: ops.conv(8.0), r"conv out must be .*got 8.0 \(float\)"),
    (lambda: ops.conv(8, groups=3), r"conv out=8 must be divisible by groups=3"),
    (lambda: ops.conv(8, groups=-1), r"conv groups must be a non-negative int; got -1"),
    (lambda: ops.depthwise(multiplier=0), r"depthwise multiplier must be a positive int; got 0"),
    (lambda: ops.pde_step(ops.fractional_laplacian(1.0), h=math.inf), r"pde_step h must be a positive finite number; got inf"),
    (lambda: ops.pde_step(ops.fractional_laplacian(1.0), h=math.nan), r"pde_step h must be .*got nan"),
    (lambda: ops.pde_step(ops.fractional_laplacian(1.0), h=0), r"pde_step h must be .*got 0"),
    (lambda: ops.parabolic(h=math.inf), r"parabolic h must be a positive finite number"),
    (lambda: ops.parabolic(alpha=-1.0), r"parabolic alpha must be a non-negative finite number"),
    (lambda: ops.bn(eps=0), r"eps must be a positive number; got 0"),
    (lambda: ops.bn(momentum=1.5), r"momentum must be in \[0, 1\]; got 1.5"),
    (lambda: ops.dropout(math.nan), r"dropout p"),
    (lambda: ops.upsample(2.5), r"upsample scale"),
    (lambda: ops.narrow(2.5), r"narrow n must be a positive int or a symbol; got 2.5"),
    (lambda: ops.option_a(16, stride="2"), r"option_a stride must be a positive int; got '2'"),
    (lambda: ops.harmonic_block(8, n_layers=2.5), r"harmonic_block n_layers must be a positive int; got 2.5"),
    (lambda: ops.ghost(16, k=0), r"ghost k must be a positive int; got 0"),
    (lambda: ops.inverted_residual(16, dilation=0), r"inverted_residual dilation must be a positive int; got 0"),
    (lambda: ops.dendritic_conv(8, bias_init=-1.0), r"dendritic_conv bias_init must be in \[0, inf\); got -1.0"),
])
def test_bad_argument_fails_at_construction(make, match):
    with pytest.raises(OpArgError, match=match):
        make()


def test_error_classes_stay_value_and_type_errors():
    with pytest.raises(ValueError):
        ops.max_pool(2, stride=0)
    with pytest.raises(TypeError):
        ops.conv(8, k="3")
    assert issubclass(OpArgTypeError, OpArgError) and issubclass(OpArgError, OperadError)
    assert issubclass(TypeMismatch, OperadError)


def test_groups_errors_at_bind_name_the_path():
    net = ops.conv(4).named("stem") >> ops.conv(6, groups=0).named("dw")  # depthwise: groups = input width
    with pytest.raises(TypeMismatch, match=r"^dw: conv expects out channels divisible by groups=4 \(out=6\)"):
        net.bind(Field(3))
    with pytest.raises(TypeMismatch, match=r"^\[1\]\.branch\[1\]: conv expects input channels divisible by groups=4"):
        (ops.conv(6) >> (ops.identity() + ops.conv(8, groups=4))).bind(Field(3))


def test_symbolic_and_legal_arguments_still_construct():
    import sympy

    C = sympy.Symbol("C", positive=True, integer=True)
    assert ops.conv(C, groups=C).out == C
    assert ops.max_pool(3, stride=2, padding=1).bind(Field(2)).stride == 2
    assert ops.max_pool(2).bind(Field(2)).stride == 2  # stride None still means k
    assert ops.harmonic_pool(2).stride == 0 and ops.dtcwpt(2).mix == 0  # 0 means "default" there
    assert ops.conv(8, k=(1, 3), padding=0).k == (1, 3)


BAD_NUMBERS = ["3", math.nan, math.inf, True]
REQUIRED = {"out": 8, "L": ops.fractional_laplacian(1.0), "body": ops.relu(), "g": ops.relu(), "mid": 8, "n": 2,
            "size": 2, "pattern": "b c h w -> b c h w", "restrict": ops.avg_pool(2), "inner": ops.relu(),
            "prolong": ops.upsample(2), "growth": 8, "n_layers": 4}


def _sweep_cases():
    """(op, argument) for every published constructor's int or float argument."""
    for name, fn in sorted(OPS.items()):
        params = [p for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        need = {p.name: REQUIRED.get(p.name) for p in params if p.default is p.empty}
        if any(v is None for v in need.values()):
            continue
        try:
            fn(**need)
        except (OperadError, ValueError, TypeError):
            continue  # needs arguments this sweep does not guess (e.g. sk's groups)
        for p in params:
            d = p.default if p.default is not p.empty else need[p.name]
            if isinstance(d, (int, float)) and not isinstance(d, bool):
                yield name, fn, need, p.name


CASES = list(_sweep_cases())


def test_sweep_every_numeric_argument_of_every_op():
    """A string, NaN, inf or a bool for any numeric argument of any op is an OperadError at construction."""
    assert len(CASES) > 60
    holes = []
    for name, fn, need, arg in CASES:
        for bad in BAD_NUMBERS:
            try:
                fn(**{**need, arg: bad})
            except OperadError:
                continue
            except Exception as e:  # noqa: BLE001 - a raw Python error is what this test forbids
                holes.append(f"ops.{name}({arg}={bad!r}) raised {type(e).__name__}: {e}")
                continue
            holes.append(f"ops.{name}({arg}={bad!r}) was accepted")
    assert not holes, "\n".join(holes)


@pytest.mark.parametrize("mod", ["operad.operators.algebra.errors", "operad.operators.algebra.util",
                                 "operad.operators.algebra.sizes", "operad.operators.pooling", "operad.operators.conv",
                                 "operad.operators.pde", "operad.operators.narrow", "operad.operators.shortcut",
                                 "operad.theory.cost"])
def test_docstring_examples(mod):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(mod), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0
