"""Training-mode behaviour of the regularizers, checked statistically (the
property suite covers their eval-mode claims)."""
import math

import pytest
import torch
import torch.nn.functional as F

from operad import Field, ops
from operad.operators.algebra.combinators import Residual
from operad.operators.regularize import linear_drop_path, set_drop_block_progress


def _sigma(p, n):
    return math.sqrt(p * (1 - p) / n)


def _expected_block_drop(p, b, H, W):
    """The exact expected dropped fraction of DropBlock: a pixel is dropped
    unless all seed positions whose block covers it stay off."""
    h, w = H - b + 1, W - b + 1
    gamma = p * H * W / (b * b * h * w)
    cover = lambda n, m: [min(i, m - 1) - max(0, i - b + 1) + 1 for i in range(n)]
    tot = sum(1 - (1 - gamma) ** (cy * cx) for cy in cover(H, h) for cx in cover(W, w))
    return tot / (H * W)


@pytest.mark.parametrize("b,p", [(3, 0.1), (5, 0.2), (1, 0.3)])
def test_drop_block_rate_and_rescaling(b, p):
    torch.manual_seed(0)
    m = ops.drop_block(b, p).bind(Field(8)).train()
    x = torch.ones(16, 8, 24, 20)
    y = m(x)
    dropped = (y == 0).float().mean().item()
    exp = _expected_block_drop(p, b, 24, 20)
    assert abs(exp - p) < 0.25 * p  # gamma is the paper's approximation of the rate
    # the drops of one map are correlated (blocks): allow the variance of independent blocks
    assert dropped == pytest.approx(exp, abs=6 * _sigma(exp, y.numel() / (b * b)))
    assert y.mean().item() == pytest.approx(1.0, rel=1e-5)  # kept units rescaled
    assert torch.equal(m.eval()(x), x)


@pytest.mark.parametrize("b", [2, 3, 5])
def test_drop_block_drops_whole_blocks_inside_the_map(b):
    torch.manual_seed(1)
    m = ops.drop_block(b, 0.3).bind(Field(4)).train()
    keep = m.mask(torch.zeros(8, 4, 13, 11))
    z = 1.0 - keep
    assert z.sum() > 0
    # a union of b x b squares inside the map is unchanged by an opening (erode, then dilate) with b x b
    eroded = -F.max_pool2d(-z, b, stride=1)  # 1 where the whole b x b window from here is dropped
    opened = F.max_pool2d(F.pad(eroded, (b - 1,) * 4), b, stride=1)
    assert torch.equal(opened, z)


def test_drop_block_linear_schedule():
    torch.manual_seed(2)
    net = (ops.conv(4) >> ops.drop_block(3, 0.2)).bind(Field(3)).train()
    assert set_drop_block_progress(net, 0.0) == 1
    x = torch.ones(8, 4, 16, 16)
    assert torch.equal(net[1](x), x)
    rates = []
    for frac in (0.25, 1.0):
        set_drop_block_progress(net, frac)
        rates.append((net[1](x) == 0).float().mean().item())
    assert rates[0] == pytest.approx(_expected_block_drop(0.05, 3, 16, 16), abs=0.03)
    assert rates[1] == pytest.approx(_expected_block_drop(0.2, 3, 16, 16), abs=0.04)


def test_spatial_dropout_drops_whole_channels():
    torch.manual_seed(3)
    m = ops.spatial_dropout(0.3).bind(Field(16)).train()
    y = m(torch.ones(200, 16, 5, 5))
    per_map = y.flatten(2)
    assert torch.all(per_map.amin(2) == per_map.amax(2))  # each map all kept or all dropped
    v = per_map[:, :, 0]
    assert torch.all((v == 0) | ((v - 1 / 0.7).abs() < 1e-6))
    rate = (per_map[:, :, 0] == 0).float().mean().item()
    assert rate == pytest.approx(0.3, abs=5 * _sigma(0.3, 3200))


def _scaled_identity(c, s):
    conv = ops.conv(c, k=1, bias=False)
    return conv, lambda m: m.weight.data.copy_(s * torch.eye(c)[:, :, None, None])


def test_drop_path_per_sample_rate_and_rescaling():
    torch.manual_seed(4)
    term = ops.residual(ops.conv(3, k=1, bias=False), drop_path=0.3)
    m = term.bind(Field(3)).train()
    x = torch.randn(4000, 3, 2, 2)
    with torch.no_grad():
        body, delta = m.body(x), m(x) - x
    # per sample, delta = r * body with r = 0 (dropped) or 1 / (1 - p) (kept, rescaled)
    r = (delta * body).flatten(1).sum(1) / (body * body).flatten(1).sum(1)
    torch.testing.assert_close(delta, r[:, None, None, None] * body)  # one decision per sample
    assert torch.all((r.abs() < 1e-4) | ((r - 1 / 0.7).abs() < 1e-4))
    assert (r.abs() < 1e-4).float().mean().item() == pytest.approx(0.3, abs=5 * _sigma(0.3, 4000))
    assert torch.equal(m.eval()(x), x + body)


def test_linear_drop_path_rule_on_resnet_builders():
    from operad.models.resnet import cifar_resnet, resnet
    rates = [t.drop_path for t in cifar_resnet(20, drop_path=0.2).walk() if isinstance(t, Residual)]
    assert rates == pytest.approx([0.2 * (i + 1) / 9 for i in range(9)])
    assert [t.drop_path for t in resnet((1, 1, 1, 1), drop_path=0.4).walk() if isinstance(t, Residual)] == \
        pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert all(t.drop_path == 0 for t in cifar_resnet(20).walk() if isinstance(t, Residual))
    with pytest.raises(ValueError, match="drop_path"):
        ops.residual(ops.conv(3), drop_path=1.0)
    assert linear_drop_path(ops.conv(3), 0.5) == ops.conv(3)


def test_shake_shake_independent_forward_and_backward_coefficients():
    torch.manual_seed(5)
    b_conv, set_b = _scaled_identity(2, 3.0)
    m = ops.shake_shake(ops.identity(), b_conv).bind(Field(2))
    set_b(m.branch[1])
    m.train()
    x = (torch.rand(3000, 2, 3, 3) + 0.5).requires_grad_()
    y = m(x)  # alpha * x + (1 - alpha) * 3x
    y.sum().backward()  # gradient: beta * 1 + (1 - beta) * 3
    alpha = ((3 * x - y) / (2 * x)).detach().flatten(1)
    beta = ((3 - x.grad) / 2).flatten(1)
    assert torch.allclose(alpha, alpha[:, :1].expand_as(alpha), atol=1e-4)  # per sample
    assert torch.allclose(beta, beta[:, :1].expand_as(beta), atol=1e-5)
    a, b = alpha[:, 0], beta[:, 0]
    assert a.min() >= 0 and a.max() <= 1 and b.min() >= 0 and b.max() <= 1
    assert not torch.allclose(a, b)  # the backward pass has its own coefficient
    for u in (a, b):  # uniform on [0, 1]: mean 1/2, variance 1/12
        assert u.mean().item() == pytest.approx(0.5, abs=0.03)
        assert u.var().item() == pytest.approx(1 / 12, abs=0.01)
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.1  # independent
    m.eval()
    torch.testing.assert_close(m(x), 2 * x)  # the expectation, 0.5 / 0.5


def test_shake_drop_gate_and_coefficients():
    torch.manual_seed(6)
    m = ops.shake_drop(0.4, alpha_range=(-1.0, 1.0), beta_range=(0.0, 1.0)).bind(Field(2)).train()
    x = torch.ones(4000, 2, 2, 2, requires_grad=True)
    y = m(x)
    y.sum().backward()
    fwd, bwd = y.detach().flatten(1)[:, 0], x.grad.flatten(1)[:, 0]
    on = ((fwd - 1).abs() < 1e-6) & ((bwd - 1).abs() < 1e-6)
    assert on.float().mean().item() == pytest.approx(0.6, abs=5 * _sigma(0.6, 4000))
    off_f, off_b = fwd[~on], bwd[~on]
    assert off_f.min() >= -1 and off_f.max() <= 1 and off_b.min() >= 0 and off_b.max() <= 1
    assert off_f.mean().item() == pytest.approx(0.0, abs=0.06)
    assert off_b.mean().item() == pytest.approx(0.5, abs=0.03)
    assert fwd.mean().item() == pytest.approx(0.6, abs=0.05)  # the eval-mode expectation
    torch.testing.assert_close(m.eval()(x), 0.6 * x)


def test_regularizer_arguments_are_checked():
    with pytest.raises(ValueError, match="block_size"):
        ops.drop_block(0, 0.1)
    with pytest.raises(ValueError, match="p must"):
        ops.spatial_dropout(1.0)
    with pytest.raises(ValueError, match="alpha_range"):
        ops.shake_drop(0.5, alpha_range=(1.0, -1.0))
    with pytest.raises(Exception, match="one field"):
        ops.shake_shake(ops.conv(4), ops.conv(5)).bind(Field(3))
    # main's argument checks: OpArgError (a ValueError) naming the op, for every bad number
    from operad.operators.algebra.errors import OpArgError, OpArgTypeError
    for make in (lambda v: ops.residual(ops.relu(), drop_path=v), lambda v: Residual(ops.relu(), None, v),
                 lambda v: ops.drop_block(3, v), lambda v: ops.shake_drop(v), lambda v: ops.spatial_dropout(v),
                 lambda v: linear_drop_path(ops.residual(ops.relu()), v)):
        for bad in (1.0, -0.1, math.nan, math.inf, True, "0.1"):
            with pytest.raises(OpArgError):
                make(bad)
    with pytest.raises(OpArgTypeError, match="shake_drop alpha_range"):
        ops.shake_drop(0.5, alpha_range=0.5)
    with pytest.raises(OpArgTypeError, match="shake_shake takes two terms"):
        ops.shake_shake(ops.conv(4), 3)


def test_sign_declarations_with_regularizers():
    """A dropped body is 0 and a kept one is rescaled by 1 / (1 - p) > 0, so drop_path keeps
    the residual's sign declaration, in training as in eval; so do DropBlock and spatial dropout.
    ShakeDrop keeps signs only when alpha >= 0."""
    t = Field(3)
    pos = ops.residual(ops.conv(3) >> ops.relu(), drop_path=0.5)
    assert pos.nonnegative(t, True) and not pos.nonnegative(t, False)
    assert not ops.residual(ops.conv(3), drop_path=0.5).nonnegative(t, True)
    assert ops.drop_block(3, 0.3).nonnegative(t, True) and ops.spatial_dropout(0.3).nonnegative(t, True)
    assert not ops.shake_drop(0.5).nonnegative(t, True)
    assert ops.shake_drop(0.5, alpha_range=(0.0, 1.0)).nonnegative(t, True)
    torch.manual_seed(0)
    x = torch.rand(64, 3, 6, 6)
    for term in (pos >> ops.drop_block(3, 0.3) >> ops.spatial_dropout(0.3),
                 ops.shake_drop(0.5, alpha_range=(0.0, 1.0)),
                 ops.shake_shake(ops.relu(), ops.identity())):
        assert term.nonnegative(t, True)
        m = term.bind(t)
        for mode in (True, False):
            assert m.train(mode)(x).min() >= 0, (term, mode)


def test_model_options_and_controls():
    from operad.models import create_model
    from operad.operators.regularize import DropBlock, ShakeDrop, ShakeShake
    from operad.models.registry import model_term
    t = model_term("resnet20", drop_block=0.1)
    assert [x.p for x in t.walk() if isinstance(x, DropBlock)] == [0.1, 0.1]
    assert not any(isinstance(x, DropBlock) for x in model_term("resnet20").walk())
    assert any(isinstance(x, ShakeShake) for x in model_term("shake_shake_resnet26_2x32d").walk())
    assert not any(isinstance(x, ShakeShake) for x in model_term("shake_shake_resnet26_2x32d", shake=False).walk())
    rates = [x.p for x in model_term("pyramidnet20_a48_shakedrop").walk() if isinstance(x, ShakeDrop)]
    assert rates == pytest.approx([0.5 * (k + 1) / 9 for k in range(9)])
    torch.manual_seed(0)
    plain = create_model("pyramidnet20_a48_shakedrop", p_last=0.0).train()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(plain(x), plain(x))  # ShakeDrop at p = 0 draws nothing that matters


def test_training_mode_compiles_without_graph_breaks():
    t = (ops.conv(4) >> ops.drop_block(3, 0.2) >> ops.spatial_dropout(0.1)
         >> ops.residual(ops.shake_shake(ops.conv(4), ops.conv(4)) >> ops.shake_drop(0.3), drop_path=0.2))
    m = t.bind(Field(3)).train()
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    torch.manual_seed(0)
    y = compiled(x)
    y.sum().backward()
    g = x.grad.clone()
    x.grad = None
    torch.manual_seed(0)
    m(x).sum().backward()
    torch.testing.assert_close(x.grad, g)  # the same draws and the same shaken gradient


@pytest.mark.parametrize("mod", ["operad.operators.regularize", "operad.models.shake", "operad.experiments.autoaugment",
                                 "operad.experiments.regularization", "operad.experiments.studies.regularization",
                                 "operad.operators.algebra.combinators"])
def test_docstring_examples(mod):
    import doctest
    import importlib
    res = doctest.testmod(importlib.import_module(mod))
    assert res.failed == 0 and res.attempted > 0


def test_resnet_spatial_dropout_option_sits_on_the_last_two_stages():
    from operad.models import create_model

    m = create_model("resnet20", spatial_dropout=0.1)
    where = [n for n, mod in m.named_modules() if getattr(getattr(mod, "term", None), "family", "") == "spatial_dropout"]
    assert [w.split(".")[0] for w in where] == ["stage2", "stage3"]
    m.eval()
    x = torch.randn(2, 3, 32, 32)
    plain = create_model("resnet20")
    plain.load_state_dict(m.state_dict())
    assert torch.equal(plain.eval()(x), m(x))   # the identity in eval
