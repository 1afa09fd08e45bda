"""The property checks of operad's own suite, for operators users write.

A family registered with ``@register_family(name, examples=...)`` (the examples
function draws ``(term, field, size)`` from hypothesis) is checked by
:func:`check_family`; one term by :func:`check_term`. Each check raises an
``AssertionError`` that says which claim failed, on which term and field:

- ``type``: the output has the inferred type's shape;
- ``cost``: the symbolic cost equals the counted multiply-adds;
- ``lipschitz``: a power iteration stays under the declared bound;
- ``equivariance``: every declared symmetry holds numerically;
- ``state_dict``: weights round-trip through ``torch.save`` / ``weights_only`` load;
- ``compile``: ``torch.compile(fullgraph=True)`` gives the same output;
- ``linear``: a term that claims linearity is (affinely) linear.

>>> from operad import ops, Field
>>> from operad.testing import check_term
>>> check_term(ops.conv(4), Field(3), (8, 8), checks=("cost", "linear"))
['cost', 'linear']

``tests/test_properties.py`` draws with :func:`draw_example` and runs these checks (its type
test keeps its own body for now, the same assertions as :func:`check_type`).
"""
from __future__ import annotations

import io
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

__all__ = ["draw_example", "examples", "random_input", "settle", "CHECKS", "check_term", "check_family",
           "check_type", "check_cost", "check_lipschitz", "check_equivariance", "check_state_dict", "check_compile", "check_linear"]


def draw_example(data, name: str):
    """``(term, field, size)`` of family ``name`` from a hypothesis ``st.data()``; seeds torch."""
    from hypothesis import strategies as st

    from operad.operators import FAMILIES

    term, t, size = FAMILIES[name].examples(data.draw)
    torch.manual_seed(data.draw(st.integers(0, 2 ** 16)))
    return term, t, size


def examples(name: str):
    """A hypothesis strategy of ``(term, field, size)`` for a registered family."""
    from hypothesis import strategies as st

    from operad.operators import FAMILIES

    if name not in FAMILIES or FAMILIES[name].examples is None:
        raise KeyError(f"family {name!r} is not registered with examples= (register_family(name, examples=fn))")
    return st.composite(lambda draw: FAMILIES[name].examples(draw))()


def random_input(t, size, batch: int = 2, dtype=torch.float32) -> torch.Tensor:
    """A standard normal input of field ``t`` at spatial ``size``."""
    return torch.randn(*t.shape(batch, size), dtype=dtype)


def settle(m: torch.nn.Module) -> torch.nn.Module:
    """Give batch norms non-trivial statistics so bounds are exercised; returns ``m.eval()``."""
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_var.uniform_(0.5, 2.0)
            mod.running_mean.normal_()
            if mod.weight is not None:
                mod.weight.data.normal_()
                mod.bias.data.normal_()
    return m.eval()


def check_type(term, t, size) -> None:
    """The module's output has the inferred type's shape and the input's dtype."""
    m = settle(term.bind(t))
    x = random_input(t, size)
    y = m(x)
    expected = m.out_type.shape(2, term.out_size(t, size))
    assert tuple(y.shape) == expected, f"{term!r} on {t!r} at {size}: inferred {expected}, got {tuple(y.shape)}"
    assert y.dtype == x.dtype, f"{term!r}: output dtype {y.dtype}, input {x.dtype}"
    assert m.out_type == term.out_type(t), f"{term!r}: bound out_type {m.out_type!r} != {term.out_type(t)!r}"


def check_cost(term, t, size) -> None:
    """The claimed cost equals the counted one, and the symbolic formula agrees at ``size``."""
    import operad

    m = term.bind(t)
    claimed = operad.cost(m, size=size)
    counted = operad.count(m, random_input(t, size, batch=2))
    assert claimed == counted, f"{term!r} on {t!r} at {size}: claimed cost {claimed}, counted {counted}"
    if size is not None:
        sym = operad.cost(term, t).subs({operad.H: size[0], operad.W: size[1]})
        assert sym == claimed, f"{term!r} on {t!r}: the formula gives {sym} at {size}, the module {claimed}"


def check_lipschitz(term, t, size) -> None:
    """A power iteration (float64) stays under the declared Lipschitz bound, if one is declared."""
    from operad import verify

    m = settle(term.bind(t)).double()
    rep = verify.lipschitz(m, random_input(t, size, batch=1, dtype=torch.float64), iters=30)
    if rep.claimed is not None:
        assert rep.ok, f"{term!r} on {t!r}: {rep}"


def _stride(term, t) -> int:
    from operad.theory.verify import nominal_stride

    s = nominal_stride(term, t)
    return 1 if s is None or s[0] < 1 else round(s[0])


def check_equivariance(term, t, size, tol: Optional[float] = None) -> None:
    """Every symmetry ``term.equivariance(t)`` declares holds numerically (rank-2 fields)."""
    from operad import verify
    from operad.theory.verify import smooth_input

    m = settle(term.bind(t)).double()
    if t.rank != 2:
        return
    s = _stride(term, t)
    side = s * max(2, -(-max(size) // s))  # square, a multiple of the stride
    for tr in sorted(term.equivariance(t)):
        if tr == "rotation":
            x = smooth_input(t.shape(1, (24, 24)), dtype=torch.float64)
        else:
            x = random_input(t, (side, side), batch=1, dtype=torch.float64)
        rep = verify.equivariance(m, tr, x, tol=tol if tr != "rotation" else None)
        assert rep.ok is True, f"{term!r} on {t!r} declares {tr}: {rep}"


def check_state_dict(term, t, size) -> None:
    """Weights saved with ``torch.save`` load (``weights_only=True``) into a fresh binding."""
    m = settle(term.bind(t))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = term.bind(t)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    fresh.eval()
    x = random_input(t, size)
    torch.testing.assert_close(fresh(x), m(x), msg=lambda s: f"{term!r}: state dict round trip: {s}")


def check_compile(term, t, size) -> None:
    """``torch.compile(fullgraph=True)`` traces without graph breaks and agrees."""
    m = settle(term.bind(t))
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x = random_input(t, size)
    torch.testing.assert_close(compiled(x), m(x), msg=lambda s: f"{term!r}: torch.compile: {s}")


def check_linear(term, t, size) -> None:
    """A term declaring ``linear`` is affine-linear: ``f(2x - y/2) - f(0) = 2(f(x)-f(0)) - (f(y)-f(0))/2``."""
    if not term.linear:
        return
    m = settle(term.bind(t)).double()
    x, y = random_input(t, size, 1, torch.float64), random_input(t, size, 1, torch.float64)
    zero = m(torch.zeros_like(x))
    lhs = m(2.0 * x - 0.5 * y) - zero
    rhs = 2.0 * (m(x) - zero) - 0.5 * (m(y) - zero)
    torch.testing.assert_close(lhs, rhs, msg=lambda s: f"{term!r} declares linear but is not: {s}")


CHECKS = {"type": check_type, "cost": check_cost, "lipschitz": check_lipschitz, "equivariance": check_equivariance,
          "state_dict": check_state_dict, "compile": check_compile, "linear": check_linear}


def check_term(term_or_factory: Union[object, Callable[[], Tuple]], t=None, size=None,
               checks: Optional[Sequence[str]] = None, tol: Optional[float] = None) -> list:
    """Run ``checks`` (default all of :data:`CHECKS`) on a term bound to field ``t`` at
    ``size``, or on the ``(term, field, size)`` a factory returns; returns the names run."""
    if callable(term_or_factory) and t is None:
        term, t, size = term_or_factory()
    else:
        term = term_or_factory
    names = list(checks or CHECKS)
    unknown = [c for c in names if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {sorted(CHECKS)}")
    for c in names:
        if c == "equivariance":
            check_equivariance(term, t, size, tol)
        else:
            CHECKS[c](term, t, size)
    return names


def check_family(name: str, max_examples: int = 10, checks: Optional[Sequence[str]] = None) -> None:
    """Run the checks on ``max_examples`` hypothesis draws of registered family ``name``."""
    from hypothesis import given, settings, strategies as st

    from operad.operators import FAMILIES

    tol = FAMILIES[name].tol if name in FAMILIES else None

    @settings(max_examples=max_examples, deadline=None, database=None)
    @given(data=st.data())
    def run(data):
        term, t, size = draw_example(data, name)
        check_term(term, t, size, checks, tol)

    examples(name)  # the registration error, before hypothesis
    run()
