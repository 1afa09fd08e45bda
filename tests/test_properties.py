"""The property suite: every registered operator family, with hypothesis
choosing hyper-parameters, channels and sizes, must keep every claim the
algebra makes about it."""
import copy
import math

import pytest
import torch
from hypothesis import given, strategies as st

import operad
from operad import testing, verify
from operad.operators import FAMILIES
from operad.testing import draw_example, random_input, settle

FAMILY_NAMES = sorted(n for n, f in FAMILIES.items() if f.examples is not None)


def test_registry_covers_the_foundation():
    expected = {"conv", "bn", "activation", "pool", "global_pool", "linear", "identity", "dropout",
                "upsample", "rearrange", "sum", "concat", "minimum", "residual", "dense", "seq"}
    missing = expected - set(FAMILY_NAMES)
    assert not missing, f"families without examples: {missing}"


# the strategies and checks are operad.testing's, the kit users run on their own operators
_draw, _input, _settle = draw_example, random_input, settle


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_inferred_type_matches_output(name, data):
    term, t, size = _draw(data, name)
    m = _settle(term.bind(t))
    x = _input(t, size)
    y = m(x)
    expected = m.out_type.shape(2, term.out_size(t, size))
    assert tuple(y.shape) == expected, f"{term!r} on {t!r} at {size}: inferred {expected}, got {tuple(y.shape)}"
    assert y.dtype == x.dtype
    assert m.out_type == term.out_type(t)
    if m.out_type.bits < 32:  # a b-bit field takes at most 2**b values
        assert y.unique().numel() <= 2 ** m.out_type.bits, f"{term!r}: {m.out_type!r} but {y.unique()}"


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_symbolic_cost_equals_counted(name, data):
    testing.check_cost(*_draw(data, name))


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_lipschitz_bound_holds(name, data):
    testing.check_lipschitz(*_draw(data, name))


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_declared_equivariance_holds(name, data):
    testing.check_equivariance(*_draw(data, name), tol=FAMILIES[name].tol)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_state_dict_round_trips(name, data):
    testing.check_state_dict(*_draw(data, name))


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_compiles_without_graph_breaks(name, data):
    testing.check_compile(*_draw(data, name))


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_linear_claim_holds(name, data):
    testing.check_linear(*_draw(data, name))


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_declared_nonnegativity_holds(name, data):
    """Where a term declares its output non-negative (always, or on non-negative
    inputs), no input of that kind gives a negative output."""
    term, t, size = _draw(data, name)
    m = _settle(term.bind(t)).double()
    x = _input(t, size, dtype=torch.float64)
    for given_nonneg, inp in ((False, x), (True, x.abs())):
        if term.nonnegative(t, given_nonneg) and not (given_nonneg and t.is_complex):
            y = m(inp)
            assert not y.is_complex() and y.min() >= 0, f"{term!r} on {t!r} declares a non-negative output"


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_lipschitz_bound_declared_or_reported(name):
    """The Lipschitz check above is one-sided and passes where nothing is claimed: say so.
    A family none of whose examples declares a bound is reported as skipped (``pytest -rs``);
    how tight the declared bounds are is what ``python -m operad.experiments.studies.tightness``
    prints."""
    from operad.experiments.studies.tightness import family_examples
    bounds = [verify.declared_lipschitz(_settle(term.bind(t)), size) for term, t, size in family_examples(name, 3)]
    if all(b is None for b in bounds):
        pytest.skip(f"{name} declares no Lipschitz bound")
    assert all(b is None or (b >= 0 and math.isfinite(b)) for b in bounds)


@pytest.mark.parametrize("name", ["inverted_residual", "mgic", "g_ghost_stage", "ghost", "ghost_bottleneck", "rmax"])
def test_composite_families_declare_what_their_parts_keep(name):
    """Blocks built only from shift-equivariant parts (circular padding) declare it, so the
    equivariance test above checks something for them."""
    from operad.experiments.studies.tightness import family_examples
    assert any("shift" in term.equivariance(t) for term, t, _ in family_examples(name, 10))
