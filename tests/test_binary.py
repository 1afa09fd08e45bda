"""Binary and quantized networks: bits in types, STE gradients, the paper's
formulas, the binarize/quantize rewrites on a ResNet, and pack's exactness and size."""
import io

import pytest
import sympy
import torch
import torch.nn.functional as F

import operad
from operad import Field, ops, rewrite
from operad.models.resnet import basic_block, cifar_resnet
from operad.operators import _bitpack
from operad.operators.binary import BinaryConv


# ----- types ---------------------------------------------------------------------------
def test_bits_print_compare_and_hash():
    assert repr(Field(8, bits=1)) == "Field(8, bits=1)" and repr(Field(8)) == "Field(8)"
    assert Field(8, bits=1) != Field(8) and len({Field(8, bits=1), Field(8), Field(8, bits=32)}) == 2
    with pytest.raises(ValueError, match="bits"):
        Field(8, bits=0)


def test_low_bits_survive_only_declared_families():
    t = Field(4)
    assert (ops.sign() >> ops.relu()).bind(t).out_type == Field(4)  # relu keeps values but not a declaration
    assert (ops.relu() >> ops.sign()).bind(t).out_type == Field(4, bits=1)
    assert (ops.sign() >> ops.bn()).bind(t).out_type == Field(4)
    assert ops.residual(ops.sign()).bind(t).out_type == Field(4)  # x + sign(x) is not binary
    assert ops.quantize(3).bind(t).out_type.bits == 3


# ----- straight-through estimators and the papers' formulas ------------------------------
def test_sign_ste_gradient():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    y = ops.sign().bind(Field(7, rank=0))(x.view(1, 7))
    y.sum().backward()
    assert y.tolist() == [[-1, -1, -1, 1, 1, 1, 1]]
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 0]


def test_quantize_ste_gradient_and_levels():
    x = torch.linspace(-0.5, 1.5, 41, requires_grad=True)
    y = ops.quantize(2).bind(Field(41, rank=0))(x.view(1, -1))
    y.sum().backward()
    assert sorted(set(y.flatten().tolist())) == pytest.approx([0, 1 / 3, 2 / 3, 1])
    inside = ((x >= 0) & (x <= 1)).float()
    assert torch.equal(x.grad, inside)


def test_bwn_weights_are_alpha_sign():
    m = ops.binary_conv(3, bias=False).bind(Field(2))
    w = m.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(m.binary_weight(), alpha * torch.where(w >= 0, 1.0, -1.0))
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(m(x), F.conv2d(x, alpha * w.sign(), padding=1))


def test_xnor_input_scale_is_the_papers_K():
    m = ops.binary_conv(4, k=3, scheme="xnor", scale_input=True, bias=False).bind(Field(3))
    x = torch.randn(2, 3, 6, 6)
    a = x.abs().mean(1, keepdim=True)  # A = sum |I| / c
    K = F.conv2d(a, torch.full((1, 1, 3, 3), 1 / 9), padding=1)  # K = A * k
    w = m.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
    ref = F.conv2d(torch.where(x >= 0, 1.0, -1.0), torch.where(w >= 0, 1.0, -1.0), padding=1) * K * alpha
    torch.testing.assert_close(m(x), ref)


@pytest.mark.parametrize("family", ["conv", "linear"])
def test_xnor_sums_are_exact_so_a_tie_is_exactly_zero(family):
    """sign(I) (*) sign(W) is an integer: a sum of +-1 products that cancels gives 0 exactly
    (not +-1e-7 from rounding alpha * sign(W) first), so the next sign is +1 in every runtime."""
    n = 50  # 25 agreeing and 25 disagreeing products
    if family == "conv":
        m = ops.binary_conv(3, k=1, bias=False, scheme="xnor").bind(Field(n))
        x = torch.ones(1, n, 2, 2)
    else:
        m = ops.binary_linear(3, bias=False, scheme="xnor").bind(Field(n, rank=0))
        x = torch.ones(1, n)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        w = torch.rand(m.weight.shape, generator=g) * 0.37 + 0.01  # alpha = mean |W|: not a power of two
        neg = torch.stack([torch.randperm(n, generator=g)[: n // 2] for _ in range(3)])
        w.view(3, n).scatter_(1, neg, -w.view(3, n).gather(1, neg))  # half of each filter negative
        m.weight.copy_(w)
    y = m(x)
    assert torch.count_nonzero(y) == 0, y.flatten()[:4]
    x2 = x.clone()
    x2.view(1, n, -1)[:, 1:] *= -1  # only input 0 keeps its sign: the sums are -+2 alpha exactly
    w0 = m.weight.detach().view(3, n)[:, 0].sign()
    alpha = m.weight.detach().abs().mean(dim=tuple(range(1, m.weight.dim())))
    torch.testing.assert_close(m(x2).detach().flatten(1)[0, ::(y[0].numel() // 3)], 2 * w0 * alpha, rtol=0, atol=0)


def test_gradient_quantization_to_g_bits():
    m = ops.quant_conv(8, w_bits=2, a_bits=32, grad_bits=3).bind(Field(4))
    m(torch.randn(2, 4, 6, 6)).square().sum().backward()
    levels = m.weight.grad.unique().numel()
    assert 2 < levels <= 2 ** 3 - 1
    m2 = ops.quant_conv(8, w_bits=2, a_bits=32).bind(Field(4))
    m2.load_state_dict(m.state_dict())
    m2(torch.randn(2, 4, 6, 6)).square().sum().backward()
    assert m2.weight.grad.unique().numel() > 7


# ----- rewrites -------------------------------------------------------------------------
def _xnor_block(cin, cout, stride=1):
    body = (ops.bn() >> ops.binary_conv(cout, 3, stride, bias=False, scheme="xnor")
            >> ops.bn() >> ops.binary_conv(cout, 3, 1, bias=False, scheme="xnor"))
    short = None if stride == 1 and cin == cout else ops.option_a(cout, stride)
    return ops.residual(body, short) >> ops.relu()


def test_binarize_resnet_is_a_resnet_of_xnor_blocks_with_the_predicted_cost():
    got = rewrite.binarize(cifar_resnet(20), "xnor")
    assert got == cifar_resnet(20, block=_xnor_block)
    c = operad.cost(got, Field(3), size=(32, 32))
    # a float stem and head; 18 binary 3x3 convs, the first of stages 2 and 3 strided and widening
    stem, head = 3 * 16 * 9 * 32 * 32, 64 * 10
    weights = (6 * 16 * 16 + (16 * 32 + 5 * 32 * 32) + (32 * 64 + 5 * 64 * 64)) * 9
    binary = (6 * 16 * 16 * 32 * 32 + (16 * 32 + 5 * 32 * 32) * 16 * 16 + (32 * 64 + 5 * 64 * 64) * 8 * 8) * 9
    assert c.macs == stem + head + binary
    assert c.bops == 1024 * (stem + head) + binary
    filters = 6 * (16 + 32 + 64)  # one float32 alpha each
    assert c.bytes == 4 * (c.params - weights) + sympy.Rational(weights, 8) + 4 * filters


def test_binarize_bwn_keeps_structure_and_weights():
    f = cifar_resnet(20).bind(Field(3))
    b = rewrite.binarize(f, "bwn")
    convs = [t for t in b.term.walk() if isinstance(t, BinaryConv)]
    assert len(convs) == 18 and all(t.scheme == "bwn" for t in convs)
    layers = [type(t).__name__ for t in b.term.walk() if type(t).__name__ in ("Conv", "Linear", "BinaryConv")]
    assert layers[0] == "Conv" and layers[-1] == "Linear"  # the stem and the head stay float
    for k, v in f.state_dict().items():
        assert torch.equal(b.state_dict()[k], v)


def test_quantize_rewrite_bops():
    q = rewrite.quantize(cifar_resnet(20), w_bits=1, a_bits=2)
    f = operad.cost(cifar_resnet(20), Field(3), size=(32, 32))
    c = operad.cost(q, Field(3), size=(32, 32))
    stem, head = 3 * 16 * 9 * 32 * 32, 64 * 10
    assert c.macs == f.macs and c.bops == 1024 * (stem + head) + 2 * (f.macs - stem - head)


# ----- pack -----------------------------------------------------------------------------
def _trained(term, t=Field(3), seed=0):
    torch.manual_seed(seed)
    m = term.bind(t)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2)
    return m.eval()


@pytest.mark.parametrize("scheme", ["bwn", "xnor"])
def test_pack_computes_the_trained_function(scheme):
    net = ops.conv(16) >> ops.bn() >> ops.relu() >> ops.conv(70, bias=False) >> ops.bn() >> ops.relu() \
        >> ops.conv(16, stride=2) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(20) >> ops.linear(5)
    m = _trained(rewrite.binarize(net, scheme, scale_input=scheme == "xnor"))
    p = rewrite.pack(m)
    x = torch.randn(2, 3, 9, 9)
    if scheme == "bwn":  # the same weights, the same float operations
        assert torch.equal(p(x), m(x))
    m64 = m.double()
    torch.testing.assert_close(rewrite.pack(m64)(x.double()), m64(x.double()), rtol=1e-12, atol=1e-12)


def test_pack_quantized_is_exact_and_loads_weights_only():
    net = ops.conv(8) >> ops.relu() >> ops.conv(16) >> ops.relu() >> ops.conv(16, stride=2) >> ops.relu() \
        >> ops.global_pool() >> ops.linear(12) >> ops.linear(5)
    for kw in (dict(w_bits=2, a_bits=2), dict(w_bits=4, a_bits=3, log=True), dict(w_bits=1, a_bits=2)):
        m = _trained(rewrite.quantize(net, **kw))
        p = rewrite.pack(m)
        x = torch.randn(2, 3, 8, 8)
        assert torch.equal(p(x), m(x)), kw
        buf = io.BytesIO()
        torch.save(p.state_dict(), buf)
        buf.seek(0)
        fresh = rewrite.pack(_trained(rewrite.quantize(net, **kw), seed=1))
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        assert torch.equal(fresh(x), m(x))


def _file_bytes(sd) -> int:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getbuffer().nbytes


def test_packed_binary_layers_are_25x_smaller_on_disk():
    net = ops.conv(64) >> ops.bn() >> ops.relu() >> (ops.conv(128, bias=False) >> ops.bn() >> ops.relu()) * 3 \
        >> ops.global_pool() >> ops.linear(10)
    m = _trained(rewrite.binarize(net, "xnor"))
    p = rewrite.pack(m)
    names = [n for n, mod in m.named_modules() if type(mod).__name__ == "BinaryConv2d"]
    assert len(names) == 3
    float_sd = {k: v for k, v in m.state_dict().items() if any(k.startswith(n + ".") for n in names)}
    packed_sd = {k: v for k, v in p.state_dict().items() if any(k.startswith(n + ".") for n in names)}
    ratio = _file_bytes(float_sd) / _file_bytes(packed_sd)
    assert ratio >= 25, ratio
    buf = io.BytesIO()
    torch.save(p.state_dict(), buf)
    buf.seek(0)
    fresh = rewrite.pack(_trained(rewrite.binarize(net, "xnor"), seed=3))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(fresh(x), p(x))


@pytest.mark.parametrize("c,o,k,stride,pad,dil,mode", [
    (70, 5, 3, 1, 1, 1, "zeros"), (3, 4, 3, 2, 1, 1, "zeros"), (130, 8, 5, 1, 2, 2, "zeros"),
    (9, 3, 3, 1, 1, 1, "circular"), (64, 7, 1, 1, 0, 1, "zeros"), (5, 6, 2, 2, 0, 1, "zeros")])
def test_xnor_popcount_conv_is_exact(c, o, k, stride, pad, dil, mode):
    torch.manual_seed(c)
    w = torch.randn(o, c, k, k).sign()
    x = torch.randn(2, c, 11, 10)
    sx = torch.where(x >= 0, 1.0, -1.0)
    if mode == "zeros":
        ref = F.conv2d(sx, w, stride=stride, padding=pad, dilation=dil)
    else:
        ref = F.conv2d(F.pad(sx, (pad,) * 4, mode=mode), w, stride=stride, dilation=dil)
    backends = ["torch"] + (["cpp"] if _bitpack.cpp_loaded() else [])
    for b in backends:
        y = _bitpack.xnor_conv2d(x, _bitpack.pack_words(w > 0), c, stride, (pad, pad), dil, mode, backend=b)
        assert torch.equal(y, ref), b


@pytest.mark.slow
def test_cpp_popcount_kernel_is_exact():
    """The C++ kernel (built once by torch, about a minute) against the float simulation."""
    if not _bitpack.load_cpp():
        pytest.skip("no C++ toolchain for the popcount kernel")
    for c, o, k, stride, pad, dil in [(70, 5, 3, 1, 1, 1), (3, 4, 3, 2, 1, 1), (130, 8, 5, 1, 2, 2), (256, 9, 3, 1, 1, 1)]:
        w = torch.randn(o, c, k, k).sign()
        x = torch.randn(2, c, 11, 10)
        ref = F.conv2d(torch.where(x >= 0, 1.0, -1.0), w, stride=stride, padding=pad, dilation=dil)
        for dtype in (torch.float32, torch.float64):
            y = _bitpack.xnor_conv2d(x.to(dtype), _bitpack.pack_words(w > 0), c, stride, (pad, pad), dil, backend="cpp")
            assert torch.equal(y, ref.to(dtype))
