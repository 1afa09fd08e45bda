"""Binary and quantized networks: bits in types, STE gradients, the paper's
formulas, the binarize/quantize rewrites on a ResNet, and pack's exactness and size."""
import copy
import io

import pytest
import sympy
import torch
import torch.nn.functional as F

import operad
from operad import Field, ops, rewrite
from operad.models import create_model
from operad.models.resnet import basic_block, cifar_resnet
from operad.operators import _bitpack
from operad.operators.binary import BinaryConv
from operad.operators.rewrites.pack import PackedConv2d


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


def _reloaded(p, fresh):
    """``fresh`` (a packed model of the same architecture) with ``p``'s state, saved and loaded weights-only."""
    buf = io.BytesIO()
    torch.save(p.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    return fresh


_QNN = [dict(w_bits=2, a_bits=2), dict(w_bits=3, a_bits=2), dict(w_bits=4, a_bits=3, log=True),
        dict(w_bits=5, a_bits=4), dict(w_bits=1, a_bits=2)]


@pytest.mark.parametrize("kw", _QNN, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_pack_quantized_is_exact_and_loads_weights_only(kw):
    net = ops.conv(8) >> ops.relu() >> ops.conv(16) >> ops.relu() >> ops.conv(16, stride=2) >> ops.relu() \
        >> ops.global_pool() >> ops.linear(12) >> ops.linear(5)
    m = _trained(rewrite.quantize(net, **kw))
    p = rewrite.pack(m)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(p(x), m(x)), kw
    m64 = copy.deepcopy(m).double()
    assert torch.equal(rewrite.pack(m64)(x.double()), m64(x.double())), kw
    fresh = _reloaded(p, rewrite.pack(_trained(rewrite.quantize(net, **kw), seed=1)))
    assert torch.equal(fresh(x), m(x))


def _packable(m):
    return [mod for mod in m.modules() if type(mod).__name__ in ("BinaryConv2d", "BinaryLinearModule",
                                                                   "QuantConv2d", "QuantLinearModule")]


@pytest.mark.parametrize("w_bits", [2, 3, 4])
def test_k_bit_weights_are_stored_as_k_bit_integers(w_bits):
    """A ResNet-20 with k-bit weights packs into exactly ceil(n k / 8) bytes of levels per layer,
    the levels are the trained layer's integers, and its file shrinks accordingly."""
    m = _trained(rewrite.quantize(cifar_resnet(20), w_bits=w_bits, a_bits=2))
    p = rewrite.pack(m)
    layers = _packable(m)
    assert len(layers) == 18
    assert p.packed_bits.numel() == sum(-(-mod.weight.numel() * w_bits // 8) for mod in layers)
    assert p.packed_floats.numel() == sum(mod.out_channels for mod in layers)  # one scale per filter
    packed = [mod for mod in p.modules() if isinstance(mod, PackedConv2d)]
    for mod, pm in zip(layers, packed):
        w = mod.weight.detach()
        scale = w.abs().amax(dim=(1, 2, 3), keepdim=True)
        assert torch.equal(pm.codes(), torch.round(w / scale * (2 ** (w_bits - 1) - 1)).long())
    ratio = _file_bytes(rewrite.packable_state(m)) / _file_bytes(rewrite.packable_state(p))
    assert ratio >= {2: 15.0, 3: 10.0, 4: 7.5}[w_bits], ratio  # 32/k less the per-filter scales; int8 gave < 4x
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(p(x), m(x))


def _file_bytes(sd) -> int:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getbuffer().nbytes


def _random_bn(m):
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):  # away from exact ties at sign's threshold
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2)
    return m.eval()


@pytest.mark.parametrize("name", ["resnet20_xnor", "resnet20_bwn", "nin_cifar_xnor"])
def test_packed_binary_layers_are_25x_smaller_on_disk(name):
    """The issue's figure: the saved bytes of the binarized layers, float form over packed form."""
    torch.manual_seed(0)
    m = _random_bn(create_model(name))
    p = rewrite.pack(m)
    layers = _packable(m)
    assert len(layers) == {"resnet20_xnor": 18, "resnet20_bwn": 18, "nin_cifar_xnor": 7}[name]
    packed_sd = rewrite.packable_state(p)
    assert sorted(packed_sd) == ["packed_bits", "packed_floats"]  # one store for all the layers
    assert packed_sd["packed_bits"].numel() == sum(-(-mod.weight.numel() // 8) for mod in layers)
    assert packed_sd["packed_floats"].numel() == sum(mod.out_channels * (1 + (mod.bias is not None)) for mod in layers)
    float_sd = rewrite.packable_state(m)
    assert len(float_sd) == sum(1 + (mod.bias is not None) for mod in layers)
    ratio = _file_bytes(float_sd) / _file_bytes(packed_sd)
    assert ratio >= 25, ratio
    torch.manual_seed(1)
    fresh = _reloaded(p, rewrite.pack(_random_bn(create_model(name))))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh(x), p(x))
    torch.testing.assert_close(p(x), m(x), rtol=1e-4, atol=1e-4)


def test_packed_resnet20_saves_and_loads_as_safetensors(tmp_path):
    """The weights file training writes (safetensors): 25x smaller too, and it loads into pack(fresh)."""
    pytest.importorskip("safetensors")
    from operad.models.hub import load_weights, save_safetensors

    torch.manual_seed(0)
    m = _random_bn(create_model("resnet20_xnor"))
    p = rewrite.pack(m)
    sizes = {}
    for form, model in (("float", m), ("packed", p)):
        save_safetensors(rewrite.packable_state(model), str(tmp_path / f"{form}.safetensors"))
        sizes[form] = (tmp_path / f"{form}.safetensors").stat().st_size
    assert sizes["float"] / sizes["packed"] >= 25, sizes
    path = save_safetensors(p, str(tmp_path / "model.safetensors"))
    torch.manual_seed(1)
    fresh = load_weights(rewrite.pack(_random_bn(create_model("resnet20_xnor"))), path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh(x), p(x))


def test_pack_store_follows_copies_and_dtype_changes():
    net = ops.conv(8) >> ops.bn() >> ops.binary_conv(16, scheme="xnor") >> ops.bn() >> ops.binary_conv(8) \
        >> ops.global_pool() >> ops.linear(3)
    p = rewrite.pack(_trained(rewrite.binarize(net, "xnor")))
    x = torch.randn(2, 3, 8, 8)
    y = p(x)
    q = copy.deepcopy(p)
    q.packed_floats.zero_()  # the copy's layers read the copy's store, not p's
    assert torch.equal(p(x), y) and not torch.equal(q(x), y)
    torch.testing.assert_close(copy.deepcopy(p).double()(x.double()), y.double())
    with pytest.raises(ValueError, match="float types"):
        m = _trained(rewrite.binarize(net, "xnor"))
        _packable(m)[0].double()
        rewrite.pack(m)


@pytest.mark.parametrize("mod", ["operad.operators.rewrites.pack", "operad.operators.rewrites._pack_store",
                                 "operad.operators._bitpack"])
def test_pack_docstring_examples(mod):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(mod), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 13])
def test_k_bit_streams_round_trip(k):
    g = torch.Generator().manual_seed(k)
    q = torch.randint(-(1 << (k - 1)), 1 << (k - 1), (37,), generator=g) if k > 1 else torch.randint(0, 2, (37,))
    u = _bitpack.to_unsigned(q, k) if k > 1 else q
    s = _bitpack.pack_bits(u, k)
    assert s.dtype == torch.uint8 and s.numel() == -(-37 * k // 8)
    back = _bitpack.unpack_bits(s, k, 37)
    assert torch.equal(_bitpack.to_signed(back, k) if k > 1 else back, q)
    with pytest.raises(ValueError, match="lie in"):
        _bitpack.pack_bits(torch.tensor([1 << k]), k)


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
