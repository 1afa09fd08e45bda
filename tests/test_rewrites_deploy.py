"""fuse and remove_residuals: exact in float64 on random residual compositions
(hypothesis), fewer and larger kernels, plain networks, and clear errors."""
import pytest
import torch
from hypothesis import given, strategies as st

import operad
from operad import Field, ops
from operad.operators.activation import ACTIVATIONS, IDENTITY_ON_NONNEGATIVE, NONNEGATIVE, Activation
from operad.rewrite import fuse, remove_residuals


def _randomize_bn(m):
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            with torch.no_grad():
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return m


@st.composite
def residual_nets(draw):
    mode = draw(st.sampled_from(["zeros", "circular"]))
    c = draw(st.integers(2, 6))

    def cb(out, k=3, stride=1):
        t = ops.conv(out, k=k, stride=stride, bias=draw(st.booleans()), padding_mode=mode)
        return t >> ops.bn() if draw(st.booleans()) else t

    items = [ops.conv(c, padding_mode=mode) >> ops.bn() >> ops.relu()]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["basic", "repvgg", "bottleneck"]))
        out = draw(st.sampled_from([c, c, c + 2]))
        stride = draw(st.sampled_from([1, 1, 2]))
        if kind == "repvgg":
            branches = [cb(out, 3, stride), cb(out, 1, stride)]
            if out == c and stride == 1:
                branches.append(ops.identity())
            block = branches[0]
            for b in branches[1:]:
                block = block + b
            items.append(block >> ops.relu())
            c = out
            continue
        if kind == "basic":
            body = cb(out, 3, stride) >> ops.relu() >> cb(out, 3)
        else:
            mid = draw(st.integers(1, 4))
            body = cb(mid, 1) >> ops.relu() >> cb(mid, 3, stride) >> ops.relu() >> cb(out, 1)
        if out == c and stride == 1:
            short = None
        elif draw(st.booleans()):
            short = ops.option_a(out, stride)
        else:
            short = ops.conv(out, k=1, stride=stride, bias=False) >> ops.bn()
        items.append(ops.residual(body, short) >> ops.relu())
        c = out
    net = items[0]
    for it in items[1:]:
        net = net >> it
    size = (draw(st.integers(5, 10)), draw(st.integers(5, 10)))
    return net, Field(draw(st.integers(1, 4))), size


def _convs(term):
    return [t for t in term.walk() if t.family == "conv"]


@given(residual_nets(), st.integers(0, 2 ** 16))
def test_fuse_and_rm_are_exact_on_random_residual_compositions(case, seed):
    net, t, size = case
    torch.manual_seed(seed)
    m = _randomize_bn(net.bind(t).double()).eval()
    x = torch.randn(2, t.channels, *size, dtype=torch.float64)
    with torch.no_grad():
        ref = m(x)
        f = fuse(m)
        assert (f(x) - ref).abs().max() < 1e-5
        assert not any(t2.family == "bn" for t2 in f.term.walk()), f.term
        assert len(_convs(f.term)) <= len(_convs(net))
        p = remove_residuals(m)
        assert (p(x) - ref).abs().max() < 1e-5
    assert not any(t2.family in ("residual", "sum") for t2 in p.term.walk()), p.term
    # both results are ordinary bound modules: cost and type inference work on them
    assert operad.cost(p, size=size).params == sum(q.numel() for q in p.parameters())
    assert p.out_type == m.out_type


def test_repvgg_block_becomes_one_larger_kernel():
    block = (ops.conv(8, bias=False) >> ops.bn()) + (ops.conv(8, k=1, bias=False) >> ops.bn()) + ops.identity()
    m = _randomize_bn(block.bind(Field(8)).double()).eval()
    f = fuse(m)
    assert repr(f.term) == "conv(8, padding=1)" and f.weight.shape == (8, 8, 3, 3)
    x = torch.randn(3, 8, 7, 7, dtype=torch.float64)
    assert (f(x) - m(x)).abs().max() < 1e-10


def test_fuse_keeps_what_cannot_merge_and_whole_models_stay_exact():
    for name in ["resnet20", "densenet_bc100_k12", "preact_resnet20", "allcnn_c"]:
        m = _randomize_bn(operad.create_model(name).double()).eval()
        f = fuse(m)
        x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
        assert (f(x) - m(x)).abs().max() < 1e-5, name
        assert len(_convs(f.term)) <= len(_convs(m.term))
    # a BN before a padded conv does not fold (its shift would meet the zero padding)
    t = ops.bn() >> ops.conv(4)
    assert [x.family for x in fuse(t.bind(Field(4)).eval()).term.items] == ["bn", "conv"]


def test_rm_makes_resnet20_plain_and_exact():
    m = _randomize_bn(operad.create_model("resnet20").double()).eval()
    p = remove_residuals(m)
    assert not any(t.family == "residual" for t in p.term.walk())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert (p(x) - m(x)).abs().max() < 1e-5
    # every stage is now a plain chain of conv-relu pairs
    assert {t.family for t in p.term.walk()} <= {"conv", "relu", "seq", "global_pool", "linear"}


def test_rm_errors_where_the_input_may_be_negative():
    m = operad.create_model("preact_resnet20").eval()
    with pytest.raises(ValueError, match="non-negative"):
        remove_residuals(m)
    kept = remove_residuals(m, strict=False)
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(kept(x), m(x), atol=1e-4)
    net = ops.residual(ops.conv(3) >> ops.relu() >> ops.conv(3))
    with pytest.raises(ValueError, match=r"block <root>.*non-negative"):
        remove_residuals(net.bind(Field(3)))
    assert remove_residuals(net.bind(Field(3)), input_nonnegative=True).term.family == "seq"
    body_not_affine = ops.conv(3) >> ops.relu() >> ops.residual(ops.conv(3) >> ops.gelu() >> ops.conv(3))
    with pytest.raises(ValueError, match="cannot be made plain"):
        remove_residuals(body_not_affine.bind(Field(3)))


def test_fuse_rejects_plain_modules():
    with pytest.raises(TypeError, match="bound operad module"):
        fuse(torch.nn.Conv2d(3, 3, 3))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_rm_decides_by_the_declared_sign_for_every_activation(act):
    """Before a block: exact where the activation's output is non-negative, else a clear
    error. Inside the body: exact where it is the identity on x >= 0, else a clear error.
    strict=False is exact in every case."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    block = ops.residual(ops.conv(4) >> ops.bn() >> ops.relu() >> ops.conv(4) >> ops.bn())
    before = ops.conv(4) >> Activation(act) >> block >> ops.relu()
    inside = ops.conv(4) >> ops.relu() >> ops.residual(ops.conv(4) >> Activation(act) >> ops.conv(4))
    for net, qualifies, why in [(before, act in NONNEGATIVE, "non-negative"),
                                (inside, act in IDENTITY_ON_NONNEGATIVE, "cannot be made plain")]:
        m = _randomize_bn(net.bind(Field(3)).double()).eval()
        with torch.no_grad():
            ref = m(x)
            if qualifies:
                p = remove_residuals(m)
                assert not any(t.family == "residual" for t in p.term.walk())
                assert (p(x) - ref).abs().max() < 1e-10, act
            else:
                with pytest.raises(ValueError, match=why):
                    remove_residuals(m)
            kept = remove_residuals(m, strict=False)
            assert (kept(x) - ref).abs().max() < 1e-10, act


def test_nonnegative_is_derived_by_the_combinators():
    t = Field(3)
    assert (ops.conv(4) >> ops.relu() >> ops.max_pool()).nonnegative(t)
    assert not (ops.conv(4) >> ops.leaky_relu() >> ops.max_pool()).nonnegative(t)
    assert not ops.conv(4).nonnegative(t, True)
    assert ops.concat(ops.relu(), ops.sigmoid()).nonnegative(t)
    assert not ops.concat(ops.relu(), ops.gelu()).nonnegative(t)
    assert ops.residual(ops.relu()).nonnegative(t, True) and not ops.residual(ops.relu()).nonnegative(t)
    assert (ops.relu() * 3).named("a").nonnegative(t)
    # macro families follow their expansion: CMod and a ReLU'd ghost module end in ReLUs
    assert ops.cmod(8).nonnegative(t) and ops.ghost(8).nonnegative(t)
    assert not ops.inverted_residual(8).nonnegative(Field(8)) and not ops.ghost(8, relu=False).nonnegative(t)
    torch.manual_seed(0)
    m = _randomize_bn((ops.ghost(8) >> ops.residual(ops.conv(8) >> ops.relu() >> ops.conv(8))).bind(t).double()).eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert (remove_residuals(m)(x) - m(x)).abs().max() < 1e-10
