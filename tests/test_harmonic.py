"""Circular harmonics: the equivariance identity (sympy and numeric), order
bookkeeping, the synthesised filters' analytic form, initialisation scale,
eval-mode caching, and the H-Net models."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import operad
from operad import Field, TypeMismatch, ops, verify
from operad.models import create_model
from operad.operators.harmonic import harmonic_basis
from operad.theory import harmonic as th
from operad.theory.transforms import _phase, act
from operad.theory.verify import smooth_input


# ----------------------------------------------------------------------------- sympy
def test_sympy_equivariance_identity():
    for m in (-1, 0, 1, 2):
        assert th.equivariance_identity(m, modes=range(-3, 4))
    assert th.equivariance_identity(1, k=1, modes=range(-3, 4))  # order 1 input, order 1 filter -> 2
    # the control: rotating the other way does not give e^{i (k + m) theta}
    assert not th.equivariance_identity(1, modes=range(-3, 4), sign=-1)
    assert not th.equivariance_identity(2, k=1, modes=range(-4, 5), sign=-1)


@pytest.mark.parametrize("out_orders", [(1,), (1, 2), (-1, 2, -3), (3, -2, 0, 1)])
def test_chain_of_harmonic_convs_has_the_sympy_chain_order(out_orders):
    """A chain of bound harmonic convolutions (real image in, each layer to the next order)
    declares the order sympy's chain_phase gives for its filters' orders, and its output
    really has it: rotating the image by 90 degrees multiplies the rotated output by
    ``i**m`` (measured from the output, not from the declaration)."""
    filters = [o - i for i, o in zip((0,) + out_orders[:-1], out_orders)]
    m_sym = th.chain_order(0, filters)
    term = ops.harmonic_conv(2, orders=(out_orders[0],), k=5, phase=False)
    for o in out_orders[1:]:
        term = term >> ops.harmonic_conv(2, orders=(o,), k=5, phase=False)
    torch.manual_seed(0)
    m = term.bind(Field(1)).double().eval()
    assert m.out_type.orders == (m_sym,)
    x = torch.randn(1, 1, 15, 15, dtype=torch.float64)
    with torch.no_grad():
        y_rot = operad.as_complex(m(torch.rot90(x, 1, (-2, -1))))
        rot_y = torch.rot90(operad.as_complex(m(x)), 1, (-2, -1))
    ratio = (y_rot * rot_y.conj()).sum() / (rot_y.abs() ** 2).sum()
    assert abs(complex(ratio) - 1j ** m_sym) < 1e-9, (ratio, m_sym)
    assert th.reachable_orders((0, 1), (-1, 0, 1)) == (-1, 0, 1, 2)


# ----------------------------------------------------------------------------- rot90, exact
@settings(max_examples=15)
@given(in_orders=st.sampled_from([None, (0,), (0, 1), (1, -1), (2,)]),
       orders=st.sampled_from([(0,), (1,), (0, 1), (-2, 3), (0, 1, 2)]),
       k=st.sampled_from([1, 3, 5, 7]), n=st.integers(5, 14), sigma=st.floats(0.3, 1.0),
       phase=st.booleans(), turns=st.integers(1, 3), seed=st.integers(0, 1000))
def test_rot90_identity_to_float_precision(in_orders, orders, k, n, sigma, phase, turns, seed):
    torch.manual_seed(seed)
    t = Field(1) if in_orders is None else Field(len(in_orders), kind="complex", orders=in_orders)
    m = ops.harmonic_conv(2 * len(orders), orders=orders, k=k, sigma=sigma, phase=phase).bind(t).double().eval()
    x = torch.randn(*t.shape(2, (n, n)), dtype=torch.float64)
    err = verify.equivariance(m, "rot90", x, amount=turns).measured
    assert err < 1e-12
    # the opposite phase convention (e^{-i m theta} on the output) must fail where it differs
    ya = m(act(x, t, "rot90", turns))
    right = act(m(x), m.out_type, "rot90", turns)
    wrong = _phase(torch.rot90(m(x), turns, dims=(-2, -1)), m.out_type, -turns * math.pi / 2)
    if (right - wrong).norm() > 1e-6 * right.norm():
        assert (ya - wrong).norm() > 1e-3 * right.norm()


def test_transform_sign_convention_matches_filters():
    """A single order-1 filter on an image: rotating the image by 90 degrees
    counter-clockwise multiplies the (rotated) response by +i, as transforms.act says."""
    m = ops.harmonic_conv(1, orders=(1,), k=5, phase=False).bind(Field(1)).double().eval()
    x = torch.randn(1, 1, 9, 9, dtype=torch.float64)
    y = torch.view_as_complex(m(x).reshape(1, 1, 2, 9, 9).movedim(2, -1).contiguous())
    y_rot = torch.view_as_complex(m(torch.rot90(x, 1, (-2, -1))).reshape(1, 1, 2, 9, 9).movedim(2, -1).contiguous())
    torch.testing.assert_close(y_rot, 1j * torch.rot90(y, 1, (-2, -1)))
    assert not torch.allclose(y_rot, -1j * torch.rot90(y, 1, (-2, -1)))


# ----------------------------------------------------------------------------- arbitrary angles
# stated bound: error <= 0.01 + A_d (5 / k)^4 for a filter of fixed shape (one ring at
# radius (k-1)/4, Gaussian width half of that) sampled on a k x k grid, on smooth 64x64
# input compared inside the disk; 0.01 is the floor of bilinear interpolation itself
BOUND_A = {0: 0.01, 1: 0.02, 2: 0.15, 3: 3.0}


def _rotation_error(d, k, seed, angle):
    s = (k - 1) / 4
    m = ops.harmonic_conv(1, orders=(d,), k=k, rings=(s,), sigma=0.5 * s, phase=False).bind(Field(1))
    m = m.double().eval()
    with torch.no_grad():
        m.radial.fill_(1.0)
    x = smooth_input((1, 1, 64, 64), seed=seed, dtype=torch.float64, scale=8)
    return verify.equivariance(m, "rotation", x, amount=angle).measured


@settings(max_examples=6)
@given(d=st.sampled_from([0, 1, 2, 3]), seed=st.integers(0, 100), angle=st.floats(0.2, 1.4))
def test_rotation_error_under_a_bound_that_shrinks_with_k(d, seed, angle):
    errs = [_rotation_error(d, k, seed, angle) for k in (5, 9, 13)]
    for k, e in zip((5, 9, 13), errs):
        assert e <= 0.01 + BOUND_A[d] * (5 / k) ** 4, (d, k, errs)
    if d >= 2:  # aliasing dominates on small grids and falls away as k grows
        assert errs[2] < errs[0] / 3, errs


def test_property_suite_rotation_claim_only_for_resolved_orders():
    t = Field(2, kind="complex", orders=(0, 1))
    assert "rotation" in ops.harmonic_conv(4, orders=(0, 1)).equivariance(t)
    assert "rotation" not in ops.harmonic_conv(4, orders=(0, 3)).equivariance(t)
    assert "rot90" in ops.harmonic_conv(4, orders=(0, 3)).equivariance(t)


# ----------------------------------------------------------------------------- invariance
def test_modulus_output_is_invariant():
    torch.manual_seed(0)
    net = (ops.harmonic_conv(4, orders=(0, 1), k=5) >> ops.harmonic_relu()
           >> ops.harmonic_conv(2, orders=(0,), k=5) >> ops.modulus())
    m = net.bind(Field(1)).double().eval()
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    assert verify.equivariance(m, "rot90", x).measured < 1e-12
    y, yr = m(x), m(torch.rot90(x, 1, (-2, -1)))
    torch.testing.assert_close(yr, torch.rot90(y, 1, (-2, -1)))  # invariant values, moved pixels
    xs = smooth_input((1, 1, 48, 48), dtype=torch.float64, scale=8)
    assert verify.equivariance(m, "rotation", xs, amount=0.6, tol=0.05).measured < 0.05


def test_hnet_logits_invariant_to_rot90():
    torch.manual_seed(0)
    m = create_model("hnet_digits").double().eval()
    x = torch.randn(3, 1, 20, 20, dtype=torch.float64)
    torch.testing.assert_close(m(torch.rot90(x, 1, (-2, -1))), m(x), atol=1e-10, rtol=1e-10)
    assert "rot90" in m.term.equivariance(m.in_type)


# ----------------------------------------------------------------------------- types
def test_order_bookkeeping_is_checked_at_bind_time():
    t = Field(2, kind="complex", orders=(0, 1))
    assert ops.harmonic_conv(6, orders=(0, 1, 2)).bind(t).out_type == Field(6, kind="complex", orders=(0, 1, 2))
    assert ops.harmonic_conv(2, orders=(0,)).bind(Field(3)).out_type == Field(2, kind="complex", orders=(0,))
    # different orders may not be summed
    bad = (ops.harmonic_conv(2, orders=(0, 1)) + ops.harmonic_conv(2, orders=(1, 2))).named("block")
    with pytest.raises(TypeMismatch, match="block") as e:
        (ops.harmonic_conv(2, orders=(0, 1)) >> bad).bind(Field(1))
    assert "orders=(1, 2)" in str(e.value)
    # unreachable output order with restricted filter orders, path named
    net = ops.harmonic_conv(2, orders=(0, 1)) >> ops.harmonic_conv(2, orders=(3,), filter_orders=(0, 1)).named("up")
    with pytest.raises(TypeMismatch, match=r"\[1\]|up") as e:
        net.bind(Field(1))
    assert "output order 3" in str(e.value) and "harmonic_conv" in str(e.value)
    # real-only operators on harmonic fields, harmonic ops on real or order-less fields
    with pytest.raises(TypeMismatch, match="conv expects a real field"):
        (ops.harmonic_conv(2) >> ops.conv(4)).bind(Field(1))
    with pytest.raises(TypeMismatch, match="rotation orders"):
        ops.harmonic_conv(2).bind(Field(2, kind="complex"))
    with pytest.raises(TypeMismatch, match="complex field"):
        ops.harmonic_relu().bind(Field(2))
    with pytest.raises(TypeMismatch, match="complex field"):
        ops.harmonic_pool(2).bind(Field(2))


@settings(max_examples=10)
@given(layers=st.lists(st.tuples(st.sampled_from([(0,), (1,), (0, 1), (-1, 2)]), st.booleans()),
                       min_size=1, max_size=3))
def test_chain_orders_follow_the_arithmetic(layers):
    net, t = None, Field(1)
    for orders, pool in layers:
        step = ops.harmonic_conv(2 * len(orders), orders=orders, k=3) >> ops.harmonic_relu()
        if pool:
            step = step >> ops.harmonic_pool(1)
        net = step if net is None else net >> step
    assert net.out_type(t).orders == layers[-1][0]
    m = net.bind(t)
    assert m(torch.randn(1, 1, 6, 6)).shape[1] == 2 * 2 * len(layers[-1][0])


# ----------------------------------------------------------------------------- filters
@settings(max_examples=10)
@given(d=st.integers(-3, 3), k=st.sampled_from([3, 5, 7]), sigma=st.floats(0.3, 1.2),
       rings=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=3), seed=st.integers(0, 100))
def test_synthesised_filter_has_the_analytic_form(d, k, sigma, rings, seed):
    torch.manual_seed(seed)
    m = ops.harmonic_conv(1, orders=(d,), k=k, rings=tuple(rings), sigma=sigma).bind(Field(1)).double()
    a, b = m.complex_filters()
    W = torch.complex(a, b)[0, 0].detach()
    R, beta = m.radial.detach()[0, 0], m.phase.detach()[0, 0]
    c = (k - 1) / 2
    for row in range(k):
        for col in range(k):
            x, y = col - c, c - row
            rho, phi = math.hypot(x, y), math.atan2(y, x)
            if d != 0 and rho == 0 or rho > c + 0.5:
                expect = 0j
            else:
                g = sum(float(R[j]) * math.exp(-(rho - rj) ** 2 / (2 * sigma ** 2)) for j, rj in enumerate(rings))
                expect = g * complex(math.cos(d * phi + beta), math.sin(d * phi + beta))
            assert abs(complex(W[row, col]) - expect) < 1e-6, (row, col, complex(W[row, col]), expect)
    # the conv weight stacks [[A, -B], [B, A]] for complex input
    mc = ops.harmonic_conv(1, orders=(d,), k=k).bind(Field(1, kind="complex", orders=(0,)))
    w = mc.synthesize()
    a, b = mc.complex_filters()
    torch.testing.assert_close(w[0, 0], a[0, 0]); torch.testing.assert_close(w[0, 1], -b[0, 0])
    torch.testing.assert_close(w[1, 0], b[0, 0]); torch.testing.assert_close(w[1, 1], a[0, 0])


def test_basis_doc_values():
    re, im = harmonic_basis(1, 3, (0.0, 1.0))
    assert float(re[1, 1, 2]) == 1.0 and float(im[1, 0, 1]) == 1.0 and float(re[0, 1, 1]) == 0.0


@pytest.mark.parametrize("cfg", [
    dict(t=Field(16), orders=(0, 1), k=5, out=32),
    dict(t=Field(32, kind="complex", orders=(0, 1)), orders=(0, 1), k=5, out=32),
    dict(t=Field(16, kind="complex", orders=(-1, 0, 1, 2)), orders=(0, 1), k=3, out=16),
    dict(t=Field(8, kind="complex", orders=(0,)), orders=(1,), k=7, out=16),
])
def test_initialisation_keeps_unit_scale(cfg):
    """Rule: R ~ N(0, 1 / sum_i ||B_d(o,i)||^2) gives E|y|^2 = E|z|^2 for white input."""
    torch.manual_seed(0)
    t = cfg["t"]
    m = ops.harmonic_conv(cfg["out"], orders=cfg["orders"], k=cfg["k"]).bind(t)
    x = torch.randn(*t.shape(8, (32, 32)))
    if t.is_complex:
        x = x / math.sqrt(2)  # E|z|^2 = 1
    with torch.no_grad():
        y = m(x)
    ez2 = float(y.square().mean()) * 2  # mean over re and im channels -> E|y|^2
    assert 0.8 < ez2 < 1.25, ez2
    g = ops.harmonic_conv(cfg["out"], orders=cfg["orders"], k=cfg["k"], gain=2.0).bind(t)
    with torch.no_grad():
        assert 3.2 < float(g(x).square().mean()) * 2 < 5.0


def test_eval_cache_and_invalidation():
    torch.manual_seed(0)
    m = ops.harmonic_conv(4, orders=(0, 1), k=5).bind(Field(2, kind="complex", orders=(0, 1)))
    x = torch.randn(1, 4, 8, 8)
    m.eval()
    with torch.no_grad():
        w1, w2 = m.weight(), m.weight()
        assert w1 is w2  # cached
        y1 = m(x)
        m.radial.mul_(2.0)  # an in-place update (optimizer step) invalidates it
        w3 = m.weight()
        assert w3 is not w1
        torch.testing.assert_close(m(x), 2 * y1)
        torch.testing.assert_close(w3, m.synthesize())
    m.train()
    assert m._cache is None
    y = m(x)
    y.sum().backward()  # training path builds the filters with gradients
    assert m.radial.grad is not None and m.phase.grad is not None
    m.eval()
    out = m(x)  # eval with grad enabled: no cache, gradients flow
    assert out.requires_grad
    m.double()
    with torch.no_grad():
        assert m.weight().dtype == torch.float64


def test_cost_formula_equals_counted():
    t = Field(8, kind="complex", orders=(0, 1))
    term = ops.harmonic_conv(6, orders=(0, 1, 2), k=5, rings=(0, 1, 1.5, 2))
    m = term.bind(t)
    c = operad.cost(m, size=(10, 12))
    assert c == operad.count(m, torch.randn(2, 16, 10, 12))
    assert c.macs == 2 * 6 * 16 * 25 * 120 and c.params == 6 * 8 * (4 + 1)
    assert c.params == sum(p.numel() for p in m.parameters())


def test_harmonic_block_nests_in_other_networks():
    from operad.models.hnet import harmonic_block
    net = ops.harmonic_conv(8, orders=(0, 1), k=3) >> harmonic_block(4) >> harmonic_block(4) >> ops.modulus() \
        >> ops.conv(6, k=1) >> ops.global_pool() >> ops.linear(3)
    m = net.bind(Field(3))
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    with pytest.raises(TypeMismatch):
        (ops.harmonic_conv(8, orders=(0, 1)) >> harmonic_block(4, orders=(0, 2))).bind(Field(1))
    mr = create_model("harmonic_resnet_digits").double().eval()
    x = torch.randn(2, 1, 20, 20, dtype=torch.float64)
    torch.testing.assert_close(mr(torch.rot90(x, 3, (-2, -1))), mr(x), atol=1e-10, rtol=1e-10)
