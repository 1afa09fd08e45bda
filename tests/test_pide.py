"""PIDE operators: the mathematics of the grid fractional Laplacian, its inverse, PDE steps
and their stability, the feature-space kernels, and the PIDE networks."""
import math

import pytest
import sympy
import torch
from hypothesis import given, settings, strategies as st

import operad
from operad import Field, ops, verify
from operad.operators.nonlocal_ops import (FeatureNonlocal, GridLaplacian, _spectral_multiply_autograd,
                                           frac_const, grid_symbol, inv_frac_const, spectral_multiply)
from operad.theory import pide

D = torch.float64
sizes = st.integers(3, 11)
orders = st.sampled_from([0.2, 0.25, 0.5, 0.6, 0.75, 1.0])


def _bind(term, c=1):
    return term.bind(Field(c)).double().eval()


def _rand(c, h, w, seed=0):
    return torch.randn(1, c, h, w, dtype=D, generator=torch.Generator().manual_seed(seed))


def _dense(m, c, h, w):
    """The matrix of a linear bound module on (c, h, w) inputs."""
    eye = torch.eye(c * h * w, dtype=D).reshape(-1, c, h, w)
    with torch.no_grad():
        return m(eye).reshape(c * h * w, -1).T


# ---------------------------------------------------------------------------
# sympy facts against the numbers the code produces
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,s", [(2, 0.25), (2, 0.5), (2, 0.8), (3, 0.3), (1, 0.3)])
def test_constants_match_sympy(n, s):
    sr = sympy.nsimplify(s)
    assert float(frac_const(n, torch.tensor(s, dtype=D))) == pytest.approx(float(pide.frac_const(n, sr)), rel=1e-10)
    assert float(inv_frac_const(n, torch.tensor(s, dtype=D))) == pytest.approx(float(pide.inv_frac_const(n, sr)),
                                                                                rel=1e-10)


def test_known_constant_values():
    assert pide.frac_const(2, sympy.Rational(1, 2)) == 1 / (2 * sympy.pi)
    assert pide.frac_const(1, sympy.Rational(1, 2)) == 1 / sympy.pi   # the Hilbert-transform constant


def test_stencil_symbol_is_the_sin_squared_symbol():
    t1, t2 = pide.theta1, pide.theta2
    assert sympy.simplify(pide.stencil_symbol() - (4 * sympy.sin(t1 / 2) ** 2 + 4 * sympy.sin(t2 / 2) ** 2)) == 0
    N, k = 7, 3
    assert float(grid_symbol(N, N, D)[k, 0]) == pytest.approx(float(pide.symbol_1d(k, N)))


def test_euler_condition_and_symbol_max():
    assert pide.euler_condition() == sympy.Le(pide.h * pide.lam, 2)
    assert pide.symbol_max() == 8 ** pide.s
    assert pide.max_stable_step(8) == sympy.Rational(1, 4)


@given(order=orders, h=sizes, w=sizes, inverse=st.booleans())
def test_lipschitz_bound_is_the_symbol_extreme(order, h, w, inverse):
    m = _bind(GridLaplacian(order, inverse))
    bound = m.term.lipschitz_bound(m, (h, w))
    sr = sympy.nsimplify(order)
    if inverse:
        expected = 1 / float(pide.min_nonzero_symbol(h, w, sr))
    else:
        expected = float(pide.symbol_max(sr, h, w))
        if h % 2 == 0 and w % 2 == 0:
            assert bound == pytest.approx(8 ** order)
    assert bound == pytest.approx(expected, rel=1e-9)
    # and it is the exact norm of the operator (largest singular value of its matrix)
    assert torch.linalg.matrix_norm(_dense(m, 1, h, w), ord=2).item() == pytest.approx(bound, rel=1e-9)


def test_size_free_bound_is_8_to_the_s_times_weight():
    m = _bind(GridLaplacian(0.5), 3)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.5, 2.0, 1.0]))
    assert m.term.lipschitz_bound(m) == pytest.approx(2.0 * 8 ** 0.5)


def test_order_one_is_the_five_point_stencil():
    x = _rand(2, 7, 10)
    lap = 4 * x - x.roll(1, -1) - x.roll(-1, -1) - x.roll(1, -2) - x.roll(-1, -2)
    torch.testing.assert_close(_bind(ops.fractional_laplacian(1.0), 2)(x), lap)


# ---------------------------------------------------------------------------
# grid operators: self-adjoint, PSD, semigroup, inverse, symmetries
# ---------------------------------------------------------------------------
@given(order=orders, h=sizes, w=sizes, c=st.integers(1, 3), periodic=st.booleans(), inverse=st.booleans(),
       seed=st.integers(0, 999))
def test_self_adjoint_and_positive_semidefinite(order, h, w, c, periodic, inverse, seed):
    m = _bind(GridLaplacian(order, inverse, periodic=periodic), c)
    x, y = _rand(c, h, w, seed), _rand(c, h, w, seed + 1)
    lhs, rhs = (m(x) * y).sum(), (x * m(y)).sum()
    assert abs(lhs - rhs) <= 1e-10 * (1 + abs(lhs))
    assert (m(x) * x).sum() >= -1e-10
    a = _dense(m, c, h, w)
    torch.testing.assert_close(a, a.T, atol=1e-10, rtol=0)
    assert torch.linalg.eigvalsh(a).min() >= -1e-9


@given(s=st.floats(0.05, 0.6), t=st.floats(0.05, 0.4), h=sizes, w=sizes, seed=st.integers(0, 999))
def test_semigroup(s, t, h, w, seed):
    x = _rand(2, h, w, seed)
    ls, lt, lst = (_bind(GridLaplacian(o), 2) for o in (s, t, s + t))
    torch.testing.assert_close(ls(lt(x)), lst(x))
    torch.testing.assert_close(lt(ls(x)), lst(x))
    # with the inverse: (-Delta)^s (-Delta)^-t = (-Delta)^(s-t) on mean-free inputs
    if s > t:
        x0 = x - x.mean((-2, -1), keepdim=True)
        torch.testing.assert_close(ls(_bind(GridLaplacian(t, True), 2)(x0)), _bind(GridLaplacian(s - t), 2)(x0))


@given(order=orders, h=sizes, w=sizes, c=st.integers(1, 3), seed=st.integers(0, 999))
def test_inverse_inverts_on_mean_free_inputs(order, h, w, c, seed):
    L, G = _bind(ops.fractional_laplacian(order), c), _bind(ops.inverse_fractional_laplacian(order), c)
    x = _rand(c, h, w, seed)
    x0 = x - x.mean((-2, -1), keepdim=True)
    torch.testing.assert_close(G(L(x0)), x0)
    torch.testing.assert_close(L(G(x0)), x0)
    # the mean is mapped to zero (pseudo-inverse): a constant input gives 0
    torch.testing.assert_close(G(torch.ones_like(x)), torch.zeros_like(x))
    torch.testing.assert_close(G(x), G(x0))


@given(order=orders, n=st.integers(3, 10), c=st.integers(1, 3), inverse=st.booleans(), learn=st.booleans(),
       dx=st.integers(-9, 9), dy=st.integers(-9, 9), k=st.integers(1, 3), seed=st.integers(0, 999))
def test_commutes_with_shifts_rot90_and_flips(order, n, c, inverse, learn, dx, dy, k, seed):
    order = min(order, 0.9) if learn else order
    m = _bind(GridLaplacian(order, inverse, learn), c)
    x = _rand(c, n, n, seed)
    torch.testing.assert_close(m(x.roll((dx, dy), (-2, -1))), m(x).roll((dx, dy), (-2, -1)))
    torch.testing.assert_close(m(torch.rot90(x, k, (-2, -1))), torch.rot90(m(x), k, (-2, -1)))
    torch.testing.assert_close(m(x.flip(-1)), m(x).flip(-1))
    zp = _bind(GridLaplacian(order, inverse, learn, periodic=False), c)
    torch.testing.assert_close(zp(torch.rot90(x, k, (-2, -1))), torch.rot90(zp(x), k, (-2, -1)))


def test_fft_operator_agrees_with_quadrature_of_the_singular_integral():
    """(-Delta)^s u = c(2,s) int (u(x) - u(y)) / |x - y|^(2+2s) dy on the unit torus for a smooth
    u, by a direct lattice quadrature (all periodic images within radius R, the far field
    u(x) c pi R^-2s / s added analytically); the FFT operator, scaled by N^2s, agrees with it
    and the discrepancy falls as the grid is refined."""
    s, R = 0.25, 3.0
    c = float(frac_const(2, torch.tensor(s, dtype=D)))
    u = lambda x, y: torch.cos(2 * math.pi * x) + 0.5 * torch.sin(2 * math.pi * (x + 2 * y))
    errs = []
    for N in (8, 16, 32):
        hh = 1.0 / N
        g = torch.arange(N, dtype=D) * hh
        X, Y = torch.meshgrid(g, g, indexing="ij")
        fft = N ** (2 * s) * _bind(ops.fractional_laplacian(s))(u(X, Y)[None, None])[0, 0]
        K = int(R * N) + 1
        d = torch.arange(-K, K + 1, dtype=D) * hh
        DX, DY = torch.meshgrid(d, d, indexing="ij")
        r = (DX ** 2 + DY ** 2).sqrt()
        keep = (r < R) & (r > 0)
        err = 0.0
        for i, j in [(0, 0), (N // 4, N // 8), (N // 2, 3 * N // 4)]:
            xi, yi = X[i, j], Y[i, j]
            ui = u(xi, yi)
            quad = c * hh * hh * ((ui - u(xi + DX[keep], yi + DY[keep])) / r[keep] ** (2 + 2 * s)).sum()
            quad = quad + c * ui * math.pi * R ** (-2 * s) / s
            err = max(err, abs(float(quad - fft[i, j].detach())))
        errs.append(err)
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < errs[0] / 4, errs
    assert errs[2] < 0.01 * (2 * math.pi) ** (2 * s), errs


@pytest.mark.parametrize("shape", [(6, 8), (7, 5), (12, 16)], ids=["periodic_even", "periodic_odd", "padded"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fast_spectral_multiply_has_exact_first_and_second_derivatives(shape, per_channel):
    """The hand-written backward (self-adjoint operator, Parseval weights of the half spectrum
    for the multiplier) against finite differences, to second order."""
    h, w = (6, 8) if shape == (12, 16) else shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, h, w, dtype=D, generator=g, requires_grad=True)
    mshape = ((3,) if per_channel else ()) + (shape[0], shape[1] // 2 + 1)
    m = torch.rand(mshape, dtype=D, generator=g, requires_grad=True)
    f = lambda x_, m_: spectral_multiply(x_, m_, shape)
    assert torch.autograd.gradcheck(f, (x, m))
    assert torch.autograd.gradgradcheck(f, (x, m))
    torch.testing.assert_close(f(x, m), _spectral_multiply_autograd(x, m, shape))


def test_fast_path_matches_plain_autograd_through_the_module_and_under_torch_func():
    m = ops.fractional_laplacian(0.5, learn_order=True).bind(Field(3)).double()
    x = _rand(3, 9, 10).requires_grad_(True)
    loss = lambda y: (y * torch.linspace(-1, 1, y.numel(), dtype=D).view_as(y)).sum()
    loss(m(x)).backward()
    fast = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    x.grad = None
    m.zero_grad()
    mult = m.multiplier(9, 10, D, x.device)
    loss(_spectral_multiply_autograd(x, mult, (9, 10))).backward()
    ref = [x.grad] + [p.grad for p in m.parameters()]
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b)
    jac = torch.func.jacrev(lambda v: m(v).sum())(x.detach())  # functorch tensors take the plain path
    torch.testing.assert_close(jac, torch.autograd.grad(m(x).sum(), x)[0])


def test_autocast_bf16_runs_the_fft_in_float32_at_odd_sizes():
    m = ops.fractional_laplacian(0.5, learn_order=True).bind(Field(3))
    x = torch.randn(2, 3, 15, 21)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.bfloat16())
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    torch.testing.assert_close(y.float(), m(x.bfloat16().float()), atol=0.05, rtol=0.02)
    yh = m(x.half())
    assert yh.dtype == torch.float16


def test_learnable_order_stays_in_the_unit_interval_and_trains():
    m = ops.fractional_laplacian(0.3, learn_order=True).bind(Field(4))
    assert torch.allclose(m.order(), torch.full((4,), 0.3))
    m(torch.randn(2, 4, 8, 8)).square().sum().backward()
    assert m.order_logit.grad is not None and torch.isfinite(m.order_logit.grad).all()
    assert m.order_logit.grad.abs().sum() > 0
    with torch.no_grad():
        m.order_logit.fill_(50.0)
    assert (m.order() <= 1).all() and (m.order() > 0).all()


def test_fft_flops_grow_as_n_log_n_and_macs_stay_zero():
    t = GridLaplacian(0.5)
    f = [t.fft_flops(Field(1), (n, n)) for n in (32, 64, 128)]
    assert f[1] / f[0] == pytest.approx(4 * math.log2(64 * 64) / math.log2(32 * 32), rel=0.05)
    m = t.bind(Field(3))
    assert operad.count(m, (2, 3, 9, 7)).macs == 0 == operad.cost(m, size=(9, 7)).macs


# ---------------------------------------------------------------------------
# full field of view
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("term", [
    ops.fractional_laplacian(0.5), ops.inverse_fractional_laplacian(1.0), ops.fractional_laplacian(0.5, periodic=False),
    ops.fractional_laplacian(0.5, space="feature", eps=0.5), ops.weighted_laplacian(kernel="gaussian"),
    ops.pde_step(ops.fractional_laplacian(0.5, space="feature", eps=0.5), 0.5),
], ids=["grid", "grid_inverse", "grid_zero_padded", "feature_fractional", "weighted", "pde_step_feature"])
def test_one_nonlocal_layer_sees_every_input_pixel(term):
    c, h, w = 3, 6, 8
    m = _bind(term, c)
    x = _rand(c, h, w, 3)
    jac = torch.autograd.functional.jacobian(lambda z: m(z), x).reshape(c, h * w, c, h * w)
    if isinstance(term, GridLaplacian):  # channels are independent: every pixel of the same channel
        per = torch.stack([jac[i, :, i, :] for i in range(c)])
    else:
        per = jac.abs().amax(dim=(0, 2))
    assert (per.abs() > 1e-12).all(), f"{(per.abs() <= 1e-12).sum()} zero sensitivities"


def test_max_pooled_keys_see_only_the_window_maxima():
    # with keys and values max-pooled (pool > 1) a pixel that is not its window's maximum in any
    # channel influences the output only through its own x_i: the pooled paper operator's field of
    # view is the set of window maxima (pool=1 above gives the full field)
    m = _bind(ops.weighted_laplacian(kernel="gaussian", pool=2), 3)
    jac = torch.autograd.functional.jacobian(lambda z: m(z), _rand(3, 6, 8, 3)).reshape(3, 48, 3, 48)
    assert (jac.abs().amax(dim=(0, 2)) <= 1e-12).any()


def test_a_local_stencil_does_not():  # the field-of-view test can fail
    m = _bind(ops.fractional_laplacian(1.0))
    jac = torch.autograd.functional.jacobian(lambda z: m(z), _rand(1, 6, 8)).reshape(48, 48)
    assert (jac.abs() <= 1e-12).any()


# ---------------------------------------------------------------------------
# PDE steps: energy and the stability check
# ---------------------------------------------------------------------------
@settings(max_examples=5)
@given(order=orders, n=st.integers(4, 10), ratio=st.floats(0.05, 1.0), periodic=st.booleans(),
       seed=st.integers(0, 999))
def test_energy_does_not_grow_when_the_step_condition_holds(order, n, ratio, periodic, seed):
    lam = float(pide.symbol_max(sympy.nsimplify(order), 2 * n if not periodic else n, 2 * n if not periodic else n))
    step = _bind(ops.pde_step(ops.fractional_laplacian(order, periodic=periodic), h=2 * ratio / lam), 2)
    x = _rand(2, n, n, seed)
    energy = [float(x.norm())]
    with torch.no_grad():
        for _ in range(60):
            x = step(x)
            energy.append(float(x.norm()))
    assert all(b <= a * (1 + 1e-9) for a, b in zip(energy, energy[1:])), energy
    rep = verify.stability(step, _rand(2, n, n, seed), iters=15)
    assert rep.ok and rep.condition is True, rep


@settings(max_examples=4)
@given(order=orders, n=st.integers(2, 4), ratio=st.floats(1.2, 2.0), seed=st.integers(0, 999))
def test_the_check_flags_a_step_that_violates_it(order, n, ratio, seed):
    n *= 2  # even: the top of the spectrum (8^s) is on the grid
    step = _bind(ops.pde_step(ops.fractional_laplacian(order), h=2 * ratio / 8 ** order), 1)
    rep = verify.stability(step, _rand(1, n, n, seed), iters=30)
    assert rep.condition is False and rep.ok is False, rep
    assert rep.steps[0]["h_lambda_max"] == pytest.approx(2 * ratio)
    assert 1 < rep.measured <= 2 * ratio - 1 + 1e-9  # power iteration approaches |1 - h lambda_max| from below
    x = _rand(1, n, n, seed)
    with torch.no_grad():
        y = x
        for _ in range(30):
            y = step(y)
    assert y.norm() > 10 * x.norm()


def test_stability_of_a_parabolic_layer_and_a_block_without_steps():
    m = _bind(ops.parabolic(ops.fractional_laplacian(0.5), h=0.05), 3)
    rep = verify.stability(m, _rand(3, 8, 8))
    assert rep.ok and rep.condition is None and rep.measured <= m.term.lipschitz_bound(m, (8, 8)) + 1e-9


def test_pde_step_lipschitz_is_exact_from_the_spectrum():
    m = _bind(ops.pde_step(ops.fractional_laplacian(0.5), h=0.9))
    bound = m.term.lipschitz_bound(m, (8, 8))
    assert bound == pytest.approx(abs(1 - 0.9 * 8 ** 0.5))
    m2 = _bind(ops.pde_step(ops.fractional_laplacian(0.5), h=0.6))  # the mean (eigenvalue 0) keeps norm 1
    assert m2.term.lipschitz_bound(m2, (8, 8)) == pytest.approx(1.0)
    assert torch.linalg.matrix_norm(_dense(m, 1, 8, 8), ord=2).item() == pytest.approx(bound)


# ---------------------------------------------------------------------------
# feature-space operators
# ---------------------------------------------------------------------------
def test_feature_operators_follow_their_formulas():
    torch.manual_seed(0)
    c, h, w = 4, 5, 6
    x = _rand(c, h, w)
    for kind in ("fractional", "inverse", "inverse_log", "weighted"):
        order = 1.0 if kind == "inverse_log" else 0.4
        term = FeatureNonlocal(kind, order, kernel="gaussian" if kind == "weighted" else "dot", normalize="n",
                               eps=0.3)
        m = _bind(term, c)
        th = m.theta(x).flatten(2)[0].T          # N, E
        ph = m.phi(x).flatten(2)[0].T            # M, E
        d = ((th[:, None] - ph[None]) ** 2).sum(-1).add(0.09).sqrt()
        n = 2
        if kind == "fractional":
            k = float(pide.frac_const(n, sympy.nsimplify(order))) * d ** -(n + 2 * order)
        elif kind == "inverse":
            k = float(pide.inv_frac_const(n, sympy.nsimplify(order))) * d ** -(n - 2 * order)
        elif kind == "inverse_log":
            k = -torch.log(d) / (2 * math.pi)
        else:
            k = torch.exp(th @ ph.T)
        k = k / k.shape[1]
        xs = x.flatten(2)[0].T                   # N, C
        if kind == "fractional":
            ref = k.sum(1, keepdim=True) * xs - k @ xs
        elif kind == "weighted":
            ref = k @ xs - k.sum(1, keepdim=True) * xs
        else:
            ref = k @ xs
        torch.testing.assert_close(m(x)[0].flatten(1).T, ref)


@pytest.mark.parametrize("kind, kernel, normalize", [
    ("fractional", "dot", "rows"), ("fractional", "dot", "n"), ("inverse", "dot", "rows"), ("inverse", "dot", "n"),
    ("inverse_log", "dot", "n"), ("weighted", "gaussian", "rows"), ("weighted", "gaussian", "n"),
])
def test_lam_scales_the_operator_under_every_normalisation(kind, kernel, normalize):
    """``lam`` multiplies the output (it was ignored under row normalisation)."""
    order = 1.0 if kind == "inverse_log" else 0.4
    x = _rand(4, 5, 6)
    outs = {}
    for lam in (0.1, 1.0):
        torch.manual_seed(0)
        outs[lam] = _bind(FeatureNonlocal(kind, order, kernel=kernel, lam=lam, pool=2, normalize=normalize, eps=0.3), 4)(x)
    assert (outs[1.0] - outs[0.1]).abs().max() > 1e-3 * outs[1.0].abs().max()
    torch.testing.assert_close(outs[0.1], 0.1 * outs[1.0])


def test_row_normalisation_is_a_weighted_average_and_paper_keeps_the_constant():
    """rows: ``lam (x_i - sum_j w_ij x_j / sum_j w_ij)``; paper: ``lam c(n, s) sum_j k_ij (x_i - x_j) / M``."""
    c, h, w, order, lam = 3, 4, 5, 0.4, 0.7
    x = _rand(c, h, w, seed=1)
    for normalize in ("rows", "n"):
        torch.manual_seed(0)
        m = _bind(FeatureNonlocal("fractional", order, lam=lam, normalize=normalize, eps=0.3), c)
        th, ph = m.theta(x).flatten(2)[0].T, m.phi(x).flatten(2)[0].T
        k = (((th[:, None] - ph[None]) ** 2).sum(-1) + 0.09) ** (-(2 + 2 * order) / 2)
        xs = x.flatten(2)[0].T
        if normalize == "rows":
            ref = lam * (xs - (k @ xs) / k.sum(1, keepdim=True))
        else:
            ref = lam * float(pide.frac_const(2, sympy.nsimplify(order))) * (k.sum(1, keepdim=True) * xs - k @ xs) / k.shape[1]
        torch.testing.assert_close(m(x)[0].flatten(1).T, ref)
    with pytest.raises(ValueError, match="changes sign"):
        FeatureNonlocal("inverse_log", 1.0, normalize="rows")


@pytest.mark.parametrize("name", ["pide_net", "nonlocal_resnet20"])
def test_registered_nonlocal_networks_offer_the_papers_normalisation(name):
    from operad.models import create_model
    terms = lambda m: [t for t in m.term.walk() if isinstance(t, FeatureNonlocal)]
    assert {t.normalize for t in terms(create_model(name))} == {"rows"}
    paper = create_model(name, normalize="paper")
    assert terms(paper) and {t.normalize for t in terms(paper)} == {"n"}
    with torch.no_grad():
        assert torch.isfinite(paper.eval()(torch.randn(2, 3, 16, 16))).all()
    with pytest.raises(ValueError, match="normalize must be one of"):
        create_model(name, normalize="row")


@pytest.mark.parametrize("kind, learn, normalize, kernel", [
    ("fractional", True, "n", "dot"), ("fractional", False, "rows", "dot"), ("inverse", True, "n", "dot"),
    ("inverse_log", False, "n", "dot"), ("inverse", False, "rows", "dot"), ("weighted", False, "n", "gaussian"), ("weighted", False, "rows", "gaussian"),
])
def test_feature_operator_gradients_are_exact(kind, learn, normalize, kernel):
    """Gradients in the input, the embeddings and a learned order, against finite differences."""
    term = FeatureNonlocal(kind, 1.0 if kind == "inverse_log" else 0.4, learn, kernel, 0.7, 2, normalize, None, 2, 0.3)
    m = _bind(term, 3)
    names = [n for n, _ in m.named_parameters()]
    f = lambda x, *p: torch.func.functional_call(m, dict(zip(names, p)), (x,))
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]
    assert torch.autograd.gradcheck(f, (_rand(3, 4, 5).requires_grad_(True), *params))


@pytest.mark.parametrize("kind", ["fractional", "inverse", "inverse_log"])
def test_fused_row_blocks_agree_with_the_plain_kernel(kind, monkeypatch):
    """The fused path (row blocks, kernel recomputed backward) against the kernel matrix with
    plain autograd, with blocks of 3 rows so that several blocks and a ragged last one run."""
    from operad.operators import nonlocal_ops
    monkeypatch.setattr(nonlocal_ops, "_FUSED_BLOCK", 3 * 2 * 6)
    term = FeatureNonlocal(kind, 1.0 if kind == "inverse_log" else 0.4, kind != "inverse_log", pool=2, normalize="n",
                           eps=0.3)
    m = _bind(term, 3)
    x = torch.randn(2, 3, 5, 5, dtype=D, requires_grad=True)
    assert m._fused_sums(*m.embeddings(x), "cpu") is not None
    out = m(x)
    w0, scale, v = m.kernel_parts(x)
    xi = x.flatten(2).transpose(1, 2)
    rs, wv = w0.sum(-1, keepdim=True), torch.bmm(w0, v)
    plain = scale * (rs * xi - wv if kind == "fractional" else wv)
    plain = plain.transpose(1, 2).reshape(out.shape)
    torch.testing.assert_close(out, plain)
    probe = torch.randn_like(out)
    fused_grads = torch.autograd.grad((out * probe).sum(), [x, *m.parameters()])
    plain_grads = torch.autograd.grad((plain * probe).sum(), [x, *m.parameters()])
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b)


def test_fused_path_keeps_no_kernel_matrix_for_backward():
    m = ops.fractional_laplacian(0.5, space="feature").bind(Field(8))
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    n = 16 * 16
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        m(x).sum().backward()
    assert max(saved) < 2 * n * n  # the (B, N, M) kernel would be 2 * 256 * 256 elements
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_fused_feature_kernel_runs_in_float32_under_bf16_autocast():
    m = ops.fractional_laplacian(0.5, space="feature", pool=2, learn_order=True).bind(Field(4))
    x = torch.randn(2, 4, 8, 8)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.bfloat16())
        y.float().sum().backward()
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=0.05 * ref.abs().max().item(), rtol=0.05)
    assert torch.isfinite(m.order_logit.grad)


def test_feature_cost_grows_with_keys_and_counts_exactly():
    for pool in (1, 2, 4):
        m = ops.fractional_laplacian(0.5, space="feature", pool=pool).bind(Field(8))
        assert operad.cost(m, size=(16, 12)) == operad.count(m, (2, 8, 16, 12))


def test_inverse_feature_order_one_is_logarithmic():
    assert ops.inverse_fractional_laplacian(1.0, space="feature").kind == "inverse_log"


@pytest.mark.parametrize("call, match", [
    (lambda: ops.fractional_laplacian(1.5), "order must be in"),
    (lambda: ops.fractional_laplacian(1.0, learn_order=True), "open interval"),
    (lambda: ops.fractional_laplacian(0.5, space="pixels"), "space must be"),
    (lambda: ops.fractional_laplacian(0.5, pool=2), "space='feature'"),
    (lambda: ops.weighted_laplacian(normalize="rows"), "cannot be normalised"),
    (lambda: ops.fractional_laplacian(1.0, space="feature"), "c\\(n, s\\) vanishes"),
    (lambda: ops.fractional_laplacian(0.5, space="feature", eps=0.0), "eps must be > 0"),
    (lambda: ops.pde_step(ops.fractional_laplacian(), h=-1), "positive"),
])
def test_config_errors_say_what_to_change(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_pde_step_rejects_an_operator_that_changes_the_field():
    with pytest.raises(operad.TypeMismatch, match="keeps the field"):
        ops.pde_step(ops.conv(4)).bind(Field(3))


# ---------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------
def test_pide_networks_and_the_local_baseline_budget():
    from operad.models import create_model, list_models
    names = list_models("*pide*") + list_models("*nonlocal*")
    assert {"pide_net", "pide_local", "pide_seg", "nonlocal_resnet20", "nonlocal_resnet56"} <= set(names)
    net, local = create_model("pide_net"), create_model("pide_local")
    pn, pl = operad.cost(net, size=(32, 32)).params, operad.cost(local, size=(32, 32)).params
    assert abs(pn - pl) / pn < 0.01
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == local(x).shape == (2, 10)
    assert [m.out_type.channels for m in (net.unit1, net.unit2, net.unit3)] == [32, 64, 112]
    grid = create_model("pide_net_grid").eval()
    assert operad.cost(grid, size=(32, 32)) == operad.count(grid, (1, 3, 32, 32))


def test_nonlocal_resnet20_has_one_nonlocal_block_per_stage():
    from operad.models import create_model
    from operad.operators.pde import PdeStep
    m = create_model("nonlocal_resnet20")
    steps = [s for s in m.modules() if isinstance(getattr(s, "term", None), PdeStep)]
    assert len(steps) == 3
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_pide_seg_predicts_eleven_classes_at_the_input_size_from_the_whole_image():
    """Eleven logits per pixel at any input size (odd ones too), and each pixel's logits
    depend on the far corner of the image: the nonlocal blocks see all of it, where a
    local stack of this depth (receptive field < 100 px) could not."""
    from operad.models import create_model, model_info
    assert model_info("pide_seg").task == "segmentation"
    torch.manual_seed(0)
    m = create_model("pide_seg").eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 45, 61)).shape == (1, 11, 45, 61)
    x = torch.randn(1, 3, 90, 120, requires_grad=True)
    y = m(x)
    assert y.shape == (1, 11, 90, 120)
    (g,) = torch.autograd.grad(y[0, :, 0, 0].sum(), x)
    assert g[..., 60:, 90:].abs().max() > 1e-6 * g.abs().max()


def test_pide_benchmark_runs_and_its_dense_baseline_is_the_quadrature(capsys, monkeypatch, tmp_path):
    from operad.experiments.bench import pide as bench_pide
    monkeypatch.setattr(bench_pide, "WARM_S", 0.0)
    k = bench_pide.quadrature_matrix(6, 5, chunk=7)
    torch.testing.assert_close(k, k.T)
    torch.testing.assert_close(k.sum(1), torch.zeros(30), atol=1e-5, rtol=0)
    assert torch.linalg.eigvalsh(k.double()).min() > -1e-5  # a positive semi-definite dense operator
    rows = bench_pide.bench_grid([(8, 8), (16, 12), (48, 40)], batch=2, channels=2, reps=2, dense_gib=0.01)
    assert [r[:2] for r in rows] == [(8, 8), (16, 12), (48, 40)]
    # the dense N x N matrix is timed exactly where it fits the memory limit (48x40: 14.7 MB > 0.01 GiB)
    assert [r[4] == r[4] for r in rows] == [True, True, False]
    assert all(r[2] == 2 and r[3] > 0 and r[5] > 0 for r in rows)
    png = tmp_path / "grid.png"
    assert bench_pide.plot_grid(rows, 2, str(png)) == str(png) and png.stat().st_size > 1000
    rel = bench_pide.bench_scaling([8, 16], 512, reps=2)
    assert rel[8] == 1.0 and rel[16] > 0
    bench_pide.bench_feature((8, 8), 4, (1, 2), reps=1)
    out = capsys.readouterr().out
    assert "dense/fft" in out and "N log N check" in out and "pool" in out


def test_interleaved_timer_warms_up_for_the_requested_time():
    import time
    from operad.experiments.bench import time_interleaved
    calls = []
    t0 = time.perf_counter()
    t = time_interleaved({"a": lambda: calls.append(1)}, runs=3, warmup=1, warmup_s=0.05)
    assert time.perf_counter() - t0 >= 0.05 and len(calls) > 4 and t["a"] >= 0


def test_compare_pide_trains_both_networks_on_shipped_cifar(shared_data, capsys):
    from operad.experiments.studies import pide as compare_pide
    res = compare_pide.main(["--data", shared_data, "--per-class", "2", "--test-per-class", "1", "--epochs", "1",
                             "--batch", "10", "--widths", "4,8,8", "--nonlocal", "grid,fractional", "--seeds", "0"])
    assert set(res) == {"nonlocal (grid)", "nonlocal (fractional)", "local baseline"}
    # accuracies are fractions of the 10 test images; parameter counts are the networks' own
    assert all(acc * 10 == pytest.approx(round(acc * 10)) and 0 <= acc <= 1 for runs in res.values() for acc, _, _ in runs)
    from operad.models.pide import pide_classifier
    for name, kind in [("nonlocal (grid)", "grid"), ("nonlocal (fractional)", "fractional"), ("local baseline", None)]:
        assert res[name][0][2] == operad.cost(pide_classifier(10, 3, (4, 8, 8), 1, kind), Field(3)).params
    assert "| local baseline |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        compare_pide.main(["--data", shared_data, "--nonlocal", "fractinal"])
