"""The property suite: every registered operator family, with hypothesis
choosing hyper-parameters, channels and sizes, must keep every claim the
algebra makes about it."""
import copy
import io
import math

import pytest
import torch
from hypothesis import given, strategies as st

import operad
from operad import verify
from operad.operators import FAMILIES
from operad.theory.verify import nominal_stride, smooth_input

FAMILY_NAMES = sorted(n for n, f in FAMILIES.items() if f.examples is not None)


def test_registry_covers_the_foundation():
    expected = {"conv", "bn", "activation", "pool", "global_pool", "linear", "identity", "dropout",
                "upsample", "rearrange", "sum", "concat", "minimum", "residual", "dense", "seq"}
    missing = expected - set(FAMILY_NAMES)
    assert not missing, f"families without examples: {missing}"


def _draw(data, name):
    term, t, size = FAMILIES[name].examples(data.draw)
    torch.manual_seed(data.draw(st.integers(0, 2**16)))
    return term, t, size


def _input(t, size, batch=2, dtype=torch.float32):
    return torch.randn(*t.shape(batch, size), dtype=dtype)


def _settle(m):
    """Give batch norms non-trivial statistics so bounds are exercised."""
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_var.uniform_(0.5, 2.0)
            mod.running_mean.normal_()
            if mod.weight is not None:
                mod.weight.data.normal_()
                mod.bias.data.normal_()
    return m.eval()


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


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_symbolic_cost_equals_counted(name, data):
    term, t, size = _draw(data, name)
    m = term.bind(t)
    claimed = operad.cost(m, size=size)
    counted = operad.count(m, _input(t, size, batch=2))
    assert claimed == counted, f"{term!r} on {t!r} at {size}: claimed {claimed}, counted {counted}"
    if size is not None:  # the symbolic formula agrees with the number at this size
        sym = operad.cost(term, t).subs({operad.H: size[0], operad.W: size[1]})
        assert sym == claimed


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_lipschitz_bound_holds(name, data):
    term, t, size = _draw(data, name)
    m = _settle(term.bind(t)).double()
    x = _input(t, size, batch=1, dtype=torch.float64)
    rep = verify.lipschitz(m, x, iters=30)
    if rep.claimed is not None:
        assert rep.ok, f"{term!r} on {t!r}: {rep}"


def _stride(term, t, size):
    s = nominal_stride(term, t)
    return 1 if s is None or s[0] < 1 else round(s[0])


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_declared_equivariance_holds(name, data):
    term, t, size = _draw(data, name)
    m = _settle(term.bind(t)).double()
    declared = term.equivariance(t)
    if t.rank != 2:
        return
    s = _stride(term, t, size)
    side = s * max(2, -(-max(size) // s))  # square, a multiple of the stride
    for tr in sorted(declared):
        if tr == "rotation":
            x = smooth_input(t.shape(1, (24, 24)), dtype=torch.float64)
        else:
            x = _input(t, (side, side), batch=1, dtype=torch.float64)
        rep = verify.equivariance(m, tr, x, tol=FAMILIES[name].tol if tr != "rotation" else None)
        assert rep.ok is True, f"{term!r} on {t!r} declares {tr}: {rep}"


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_state_dict_round_trips(name, data):
    term, t, size = _draw(data, name)
    m = _settle(term.bind(t))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = term.bind(t)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    fresh.eval()
    x = _input(t, size)
    torch.testing.assert_close(fresh(x), m(x))


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_compiles_without_graph_breaks(name, data):
    term, t, size = _draw(data, name)
    m = _settle(term.bind(t))
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x = _input(t, size)
    torch.testing.assert_close(compiled(x), m(x))


@pytest.mark.parametrize("name", FAMILY_NAMES)
@given(data=st.data())
def test_linear_claim_holds(name, data):
    term, t, size = _draw(data, name)
    if not term.linear:
        return
    m = _settle(term.bind(t)).double()
    x, y = _input(t, size, 1, torch.float64), _input(t, size, 1, torch.float64)
    zero = m(torch.zeros_like(x))
    lhs = m(2.0 * x - 0.5 * y) - zero
    rhs = 2.0 * (m(x) - zero) - 0.5 * (m(y) - zero)
    torch.testing.assert_close(lhs, rhs)


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
