"""Min units and dendritic units: exact costs of units and whole networks before
and after substitution, the function-preserving dendritic rewrite, the
memory of the fused dendritic convolution, regions of linearity, a function a
dendritic net represents and a standard net of the same width cannot,
universal approximation, and the min of two filters as an end-stopped AND."""
import math

import pytest
import sympy
import torch
from hypothesis import given, settings, strategies as st

import operad
from operad import Field, TypeMismatch, ops
from operad.models import create_model, model_term
from operad.operators.dendritic import dendritic_product
from operad.operators.min_unit import MinBlock
from operad.operators.rewrites import to_dendritic, to_min
from operad.theory import units as U


# ---------------------------------------------------------------------------
# costs
# ---------------------------------------------------------------------------
@given(cin=st.integers(1, 6), out=st.integers(1, 6), k=st.sampled_from([1, 3]), q=st.integers(1, 3),
       n=st.integers(2, 3), stride=st.sampled_from([1, 2]), norm=st.sampled_from(["instance", "bn", None]))
def test_min_unit_formula_equals_algebra(cin, out, k, q, n, stride, norm):
    term = ops.min_unit(out, k=k, q=q, n=n, stride=stride, norm=norm)
    assert operad.cost(term, Field(cin), size=(8, 12)) == U.min_unit_cost(cin, out, 8, 12, k, q, n, stride, norm)


@given(cin=st.integers(1, 6), out=st.integers(1, 6), k=st.sampled_from([1, 3, 5]), bias=st.booleans())
def test_dendritic_formulas_equal_algebra(cin, out, k, bias):
    c = operad.cost(ops.dendritic_conv(out, k=k, bias=bias), Field(cin))
    assert c == U.dendritic_conv_cost(cin, out, k, operad.H, operad.W, bias)
    assert c.macs == operad.cost(ops.conv(out, k=k), Field(cin)).macs  # the same counted MACs as a conv
    assert operad.cost(ops.dendritic_linear(out, bias=bias), Field(cin, rank=0)) == U.dendritic_linear_cost(
        cin, out, bias)


@pytest.mark.parametrize("variant,name", [("standard", "resnet{}"), ("dendritic", "dendritic_resnet{}"),
                                          ("min", "min_resnet{}")])
def test_network_formula_equals_algebra_symbolically(variant, name):
    sym = U.cifar_resnet_cost(variant)  # symbolic in n, H and W (sizes divisible by 4)
    for depth in (20, 56):
        n = (depth - 2) // 6
        term = model_term(name.format(depth))
        assert operad.cost(term, Field(3)).params == sym.params.subs(U.n_sym, n), (variant, depth)
        for h, w in ((32, 32), (16, 24)):
            claimed = operad.cost(term, Field(3), size=(h, w))
            assert claimed == sym.subs({U.n_sym: n, operad.H: h, operad.W: w}), (variant, depth, h, w)


def test_resnet20_cost_change_by_substitution():
    std, dend, mn = (U.cifar_resnet_cost(v, 3, h=32, w=32) for v in ("standard", "dendritic", "min"))
    assert std == operad.Cost(269722, 40551040)
    # dendritic: every conv but the stem and the FC head doubles its weights; MACs unchanged
    conv_weights = 9 * (16 * 16 * 6 + 16 * 32 + 32 * 32 * 5 + 32 * 64 + 64 * 64 * 5)
    assert dend.params - std.params == conv_weights + 640
    assert dend.macs == std.macs
    assert mn.params < std.params and mn.macs < std.macs


def test_counted_costs_of_the_networks_equal_the_formulas():
    x = torch.randn(1, 3, 16, 16)
    for variant, name in (("dendritic", "dendritic_resnet20"), ("min", "min_resnet20")):
        counted = operad.count(create_model(name), x)
        assert counted == U.cifar_resnet_cost(variant, 3, h=16, w=16), name


# ---------------------------------------------------------------------------
# rewrites
# ---------------------------------------------------------------------------
def _copy_weights(src, dst):
    a = [p for _, p in src.named_parameters()]
    b = [p for n, p in dst.named_parameters() if "dendrite_bias" not in n]
    assert len(a) == len(b)
    with torch.no_grad():
        for p, q in zip(a, b):
            q.copy_(p.reshape(q.shape))
        sb, db = list(src.buffers()), list(dst.buffers())
        assert len(sb) == len(db)
        for p, q in zip(sb, db):
            q.copy_(p)


def _settle_bn(m):
    gen = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
    return m.eval()


def test_dendritic_rewrite_keeps_the_function_at_zero_biases():
    std = _settle_bn(model_term("resnet20").bind(Field(3)))
    dend = create_model("dendritic_resnet20").eval()
    _copy_weights(std, dend)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(dend(x), std(x), rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # and it is a different function once the biases move
        for n, p in dend.named_parameters():
            if "dendrite_bias" in n:
                p.normal_(0, 0.3)
    assert (dend(x) - std(x)).abs().max() > 1e-2


def test_dendritic_rewrite_structure():
    t = to_dendritic(ops.conv(8) >> ops.bn() >> ops.relu() >> ops.max_pool(2) >> ops.conv(8) >> ops.relu()
                     >> ops.global_pool() >> ops.linear(10))
    fams = [s.family for s in t.walk()]
    assert fams.count("dendritic_conv") == 1 and fams.count("dendritic_linear") == 1
    assert "relu" in fams  # the ReLU before the average pooling stays
    # a ReLU before a grouped conv or a norm stays where it is
    t2 = to_dendritic(ops.relu() >> ops.bn())
    assert [s.family for s in t2.walk()][1:] == ["relu", "bn"]


def test_min_rewrite_first_and_all():
    net = model_term("resnet20")
    first = to_min(net, "first")
    assert sum(isinstance(s, MinBlock) for s in first.walk()) == 3
    assert sum(isinstance(s, MinBlock) for s in to_min(net, "all").walk()) == 9
    relu = to_min(net, "relu")
    assert not any(s.family == "relu" for s in relu.walk())
    assert sum(s.family == "min_filters" for s in relu.walk()) == 1 + 2 * 9
    m = create_model("min_resnet20")
    assert m.stage2[0].term == ops.min_block(32, stride=2)
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_unit_errors_say_what_to_change():
    with pytest.raises(ValueError, match="n >= 2"):
        ops.min_unit(8, n=1)
    with pytest.raises(ValueError, match="odd"):
        ops.min_filters(k=2)
    with pytest.raises(ValueError, match="impl"):
        ops.dendritic_conv(8, impl="fast")
    with pytest.raises(TypeMismatch, match="rank-0"):
        ops.dendritic_linear(4).bind(Field(3))
    with pytest.raises(TypeMismatch, match="zero channels"):
        ops.min_shortcut(2).bind(Field(4))
    with pytest.raises(TypeMismatch, match="rank-2"):
        ops.instance_norm().bind(Field(4, rank=0))


# ---------------------------------------------------------------------------
# the fused dendritic convolution
# ---------------------------------------------------------------------------
def _saved_numel(fn, *args):
    total = [0]

    def pack(t):
        total[0] += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return out, total[0]


def test_fused_matches_naive_and_saves_only_its_inputs():
    torch.manual_seed(0)
    b_, j, l, o = 4, 27, 64, 16
    u = torch.randn(b_, j, l, requires_grad=True)
    w = torch.randn(o, j, requires_grad=True)
    b = torch.randn(o, j, requires_grad=True)
    yf, saved_f = _saved_numel(dendritic_product, u, w, b, "fused")
    yn, saved_n = _saved_numel(dendritic_product, u, w, b, "naive")
    torch.testing.assert_close(yf, yn)
    g = torch.randn_like(yf)
    gf = torch.autograd.grad(yf, (u, w, b), g)
    gn = torch.autograd.grad(yn, (u, w, b), g)
    for a, c in zip(gf, gn):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)
    assert saved_f == u.numel() + w.numel() + b.numel()
    assert saved_n >= b_ * o * j * l  # the naive form keeps the whole (B, C_out, J, L) tensor


def test_fused_gradcheck_and_conv_equivalence():
    torch.manual_seed(0)
    u = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: dendritic_product(*a), (u, w, b))
    m = ops.dendritic_conv(6, k=3, stride=2).bind(Field(4))
    c = ops.conv(6, k=3, stride=2, bias=False).bind(Field(4))
    c.weight.data.copy_(m.weight.data)
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(m(x), c(x.relu()))


def test_compiled_matches_fused_in_values_gradients_and_saved_memory():
    torch.manual_seed(0)
    m = ops.dendritic_conv(16, k=3, stride=2, bias=True, bias_init=0.5, impl="compiled").bind(Field(4))
    f = ops.dendritic_conv(16, k=3, stride=2, bias=True, impl="fused").bind(Field(4))
    f.load_state_dict(m.state_dict())
    x = torch.randn(3, 4, 11, 11, requires_grad=True)
    (ym, saved), (yf, saved_fused) = _saved_numel(m, x), _saved_numel(f, x)
    torch.testing.assert_close(ym, yf, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ym)
    gm = torch.autograd.grad(ym, [x, *m.parameters()], g)
    gf = torch.autograd.grad(yf, [x, *f.parameters()], g)
    for a, c in zip(gm, gf):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)
    per_connection = 3 * 16 * (4 * 9) * 25
    assert saved <= saved_fused < per_connection / 4  # both keep their inputs only, never ReLU(u + b)


def test_compiled_inside_a_compiled_model_matches_eager():
    torch.manual_seed(0)
    m = (ops.dendritic_conv(6, k=3, bias_init=0.5, impl="compiled") >> ops.global_pool()).bind(Field(3))
    x = torch.randn(2, 3, 8, 8)
    y, yc = m(x), torch.compile(m)(x)
    torch.testing.assert_close(yc, y, rtol=1e-5, atol=1e-5)
    g, gc = (torch.autograd.grad(f(x).square().sum(), list(m.parameters())) for f in (m, torch.compile(m)))
    for a, c in zip(g, gc):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


def test_every_impl_trains_under_bf16_autocast_after_a_conv():
    """Under autocast the conv before hands the dendritic layer a bf16 input while its own
    weights are float32; the fused backward once mixed the two and raised."""
    grads = {}
    for impl in ("naive", "fused", "compiled"):
        m = (ops.conv(8) >> ops.dendritic_conv(8, k=3, bias_init=0.5, impl=impl) >> ops.global_pool()).bind(Field(3))
        torch.manual_seed(0)
        for p in m.parameters():
            p.data.copy_(0.2 * torch.randn_like(p))
        x = torch.randn(2, 3, 8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        y.float().sum().backward()
        grads[impl] = [p.grad for p in m.parameters()]
        assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads[impl])
    for impl in ("fused", "compiled"):
        for a, b in zip(grads[impl], grads["naive"]):
            torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)


def test_compiled_is_counted_exactly_and_falls_back_with_a_warning(monkeypatch):
    from operad.operators import dendritic as D
    torch.manual_seed(0)
    term = ops.dendritic_conv(5, k=3, impl="compiled")
    m = term.bind(Field(3))
    x = torch.randn(2, 3, 8, 8)
    assert operad.count(m, x[:1]).macs == operad.cost(term, Field(3), size=(8, 8)).macs  # counted: the fused form

    def broken(*a):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setitem(D._COMPILED, "fn", broken)
    with pytest.warns(RuntimeWarning, match="running impl='fused' instead"):
        y = m(x)
    assert D._COMPILED["fn"] is None
    c = ops.conv(5, k=3, bias=False).bind(Field(3))
    c.weight.data.copy_(m.weight.data)
    torch.testing.assert_close(y, c(x.relu()))


# ---------------------------------------------------------------------------
# geometry and representational power
# ---------------------------------------------------------------------------
def _grid(n=161, r=3.0):
    g = torch.linspace(-r, r, n, dtype=torch.float64)
    return torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def _jacobians(module, x):
    """Per-point Jacobians (N, out, in) of a point-wise (rank-0) bound module."""
    x = x.clone().requires_grad_(True)
    y = module(x)
    rows = [torch.autograd.grad(y[:, j].sum(), x, retain_graph=True)[0] for j in range(y.shape[1])]
    return torch.stack(rows, 1)


def _linear_regions(module, x) -> int:
    """How many linear pieces of ``module`` the points ``x`` visit (distinct Jacobians)."""
    return len({tuple(r) for r in _jacobians(module, x).flatten(1).round(decimals=8).tolist()})


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 3), seed=st.integers(0, 1000), impl=st.sampled_from(["fused", "naive"]))
def test_dendritic_layer_regions_are_the_bias_grid(m, seed, impl):
    """The bound dendritic layer's linear pieces on a grid of the plane are the cells of the
    grid its dendrite biases cut; a standard layer's stay within Zaslavsky's bound."""
    gen = torch.Generator().manual_seed(seed)
    b = (torch.rand(m, 2, generator=gen, dtype=torch.float64) * 4 - 2).round(decimals=1) + 0.05
    layer = ops.dendritic_linear(m, impl=impl).bind(Field(2, rank=0)).double()
    with torch.no_grad():
        layer.dendrite_bias.copy_(b)
        layer.weight.copy_(torch.rand(m, 2, generator=gen, dtype=torch.float64) + 0.5)  # non-zero weights
    x = _grid()
    assert _linear_regions(layer, x) == U.dendritic_regions(b)
    # a standard layer of m units on 2 inputs: at most 1 + m + C(m, 2) regions, fewer than the grid's
    std = (ops.linear(m) >> ops.relu()).bind(Field(2, rank=0)).double()
    assert _linear_regions(std, x) <= U.standard_regions_max(m, 2)
    assert U.standard_regions_max(m, 2) <= U.dendritic_regions(b) or m == 1


def test_one_dendritic_unit_has_four_regions_a_standard_unit_two():
    unit = ops.dendritic_linear(1).bind(Field(2, rank=0)).double()
    with torch.no_grad():
        unit.weight.fill_(1.0)  # y = ReLU(x1) + ReLU(x2)
    x = _grid(41).requires_grad_(True)
    (g,) = torch.autograd.grad(unit(x).sum(), x)
    assert len({tuple(r) for r in g.round(decimals=6).tolist()}) == 4
    std = (ops.linear(1) >> ops.relu()).bind(Field(2, rank=0)).double()
    (g2,) = torch.autograd.grad(std(x).sum(), x)
    assert len({tuple(r) for r in g2.round(decimals=6).tolist()}) <= 2


def _fit(net, x, y, steps=300):
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("width", [1, 2, 3])
def test_dendritic_staircase_has_twice_the_kinks_of_any_standard_net(width):
    """The bound dendritic net computes the staircase (a sum of clipped ramps) exactly, with
    2 width kinks; a standard net of that width fitted to it keeps at most width kinks and
    misses it."""
    net = U.dendritic_staircase(width)
    x = torch.linspace(-8, 8, 1601, dtype=torch.float64)[:, None]
    t = 2.0 * torch.arange(width, dtype=torch.float64) - (width - 1)
    stairs = (1 - (x - t).relu()).clamp_min(0).sum(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(net(x), stairs)
    assert U.breakpoints(net, -8.0, 8.0) == 2 * width
    torch.manual_seed(width)
    std = _fit((ops.linear(width) >> ops.relu() >> ops.linear(1)).bind(Field(1, rank=0)).double(), x, stairs)
    with torch.no_grad():
        assert U.breakpoints(std, -8.0, 8.0) <= width
        assert (std(x) - stairs).abs().max() > 0.1


@settings(max_examples=15, deadline=None)
@given(width=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_standard_nets_have_at_most_width_kinks(width, seed):
    torch.manual_seed(seed)
    std = (ops.linear(width) >> ops.relu() >> ops.linear(1)).bind(Field(1, rank=0)).double()
    assert U.breakpoints(std, -8.0, 8.0) <= U.standard_max_breakpoints(width)


def test_universal_approximation_constructive_error_falls_as_one_over_n_squared():
    f = lambda x: torch.sin(3 * x) + 0.3 * x ** 2
    x = torch.linspace(-1, 1, 2001, dtype=torch.float64)[:, None]
    errs = []
    for n in (4, 8, 16, 32):
        t = torch.linspace(-1, 1, n + 1, dtype=torch.float64)
        net = U.dendritic_interpolant(t, f(t))
        with torch.no_grad():
            errs.append(float((net(x) - f(x)).abs().max()))
    for a, b in zip(errs, errs[1:]):
        assert 3.0 < a / b < 5.0  # halving h divides the error by ~4
    for n, e in zip((4, 8, 16, 32), errs):  # the interpolation bound h^2 / 8 * max |f''|, |f''| <= 9.6
        assert e <= (2 / n) ** 2 / 8 * 9.6


def test_universal_approximation_by_training_improves_with_width():
    torch.manual_seed(0)
    f = lambda x: torch.sin(4 * x)
    x = torch.linspace(-1, 1, 256)[:, None]
    errs = []
    for width in (1, 4, 16):
        net = (ops.dendritic_linear(width, bias=True, bias_init=0.5, impl="naive")
               >> ops.dendritic_linear(1, bias=True, bias_init=0.5, impl="naive")).bind(Field(1, rank=0))
        opt = torch.optim.Adam(net.parameters(), lr=0.03)
        for _ in range(200):
            opt.zero_grad()
            loss = ((net(x) - f(x)) ** 2).mean()
            loss.backward()
            opt.step()
        errs.append(loss.item())
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.2 * errs[0]


# ---------------------------------------------------------------------------
# min of two filters as AND: end-stopping
# ---------------------------------------------------------------------------
def test_min_of_two_filters_is_end_stopped():
    s = U.end_stopping_stimuli(21)
    through = U.end_stopping_response(s["through"])
    ending = U.end_stopping_response(s["ending"])
    assert ending["min"] > 0.5 and through["min"] == 0.0        # answers to the end only
    assert through["line"] == pytest.approx(ending["line"])       # one filter alone: no end-stopping


@pytest.mark.parametrize("term", [ops.minimum(ops.conv(3) >> ops.relu(), ops.conv(3) >> ops.relu()),
                                  ops.min_filters(k=3, n=2, norm=None)])
def test_minimum_is_and_of_nonnegative_responses(term):
    """operad's minimum of ReLU branches answers exactly where every branch does (an AND),
    and equals the smaller response there."""
    torch.manual_seed(0)
    m = term.bind(Field(3)).double().eval()
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        a, b = (br(x) for br in m.branch)
    assert ((a > 0) ^ (b > 0)).any() and (y > 0).any()  # the test sees both cases
    assert torch.equal(y > 0, (a > 0) & (b > 0))
    torch.testing.assert_close(y, torch.where(a < b, a, b))
