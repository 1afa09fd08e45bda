"""Network zoo II: published counts, the MGIC degree claim, whole-model checks,
segmentation heads and the operator families' own behaviour."""
import doctest
import importlib
import io

import pytest
import sympy
import torch

import operad
from operad import Field, TypeMismatch, ops
from operad.models import create_model, list_models, model_info, model_term

ZOO2 = ["mobilenetv2_100", "mobilenetv2_100_cifar", "ghostnet_100", "ghostnet_130", "ghost_resnet56", "ghost_vgg16",
        "g_ghost_resnet56", "sknet50", "sk_resnext29", "mgic_resnet56", "mgic_mobilenetv2_100"]
SEG = ["deeplabv3_mobilenetv2", "lraspp_mobilenetv2", "fcn_mobilenetv2"]

# (model, params, MACs or None, input size): the papers' figures
PUBLISHED = [
    ("mobilenetv2_100", 3.50e6, 300e6, 224),
    ("ghostnet_100", 5.2e6, 141e6, 224),
    ("ghost_resnet56", 0.43e6, 63e6, 32),
    ("ghost_vgg16", 7.7e6, 158e6, 32),
    ("sknet50", 27.5e6, None, 224),
]


@pytest.mark.parametrize("name,params,macs,size", PUBLISHED)
def test_counts_match_published(name, params, macs, size):
    c = operad.cost(model_term(name), Field(3), size=(size, size))
    assert abs(c.params - params) / params < 0.01, f"{name}: {c.params} parameters, published {params:.3g}"
    if macs is not None:
        assert abs(c.macs - macs) / macs < 0.01, f"{name}: {c.macs} MACs, published {macs:.3g}"


def test_exact_reference_counts():
    # torchvision's mobilenet_v2 and timm's ghostnet_100 / sknet-style counts, to the parameter
    assert operad.cost(model_term("mobilenetv2_100"), Field(3), size=(224, 224)).params == 3_504_872
    assert operad.cost(model_term("ghostnet_100"), Field(3), size=(224, 224)).params == 5_182_508
    assert operad.cost(model_term("mobilenetv2_140"), Field(3), size=(224, 224)).params == 6_108_776


def test_registry_has_the_zoo():
    names = set(list_models())
    assert set(ZOO2 + SEG + ["fcn_resnet18"]) <= names
    assert list_models("g_ghost_*")
    for n in SEG:
        info = model_info(n)
        assert info.task == "segmentation" and info.input_size == (3, 360, 480)


# ---------------------------------------------------------------------------
# MGIC: linear in the width, the standard block quadratic
# ---------------------------------------------------------------------------
C = sympy.Symbol("C", positive=True, integer=True)


def _degree(expr):
    return sympy.Poly(sympy.expand(expr), C).degree()


@pytest.mark.parametrize("block", ["basic", "inverted"])
def test_mgic_cost_is_degree_one_and_standard_block_degree_two(block):
    mg = operad.cost(ops.mgic(group=8, coarsest=16, block=block), Field(C))
    assert _degree(mg.params) == 1
    assert _degree(sympy.expand(mg.macs / (operad.H * operad.W))) == 1
    if block == "basic":
        std = ops.residual(ops.conv(C, bias=False) >> ops.bn() >> ops.relu() >> ops.conv(C, bias=False) >> ops.bn())
    else:
        std = ops.inverted_residual(C)
    sc = operad.cost(std, Field(C))
    assert _degree(sc.params) == 2
    assert _degree(sympy.expand(sc.macs / (operad.H * operad.W))) == 2


@pytest.mark.parametrize("c", [16, 32, 64, 128])
def test_mgic_symbolic_cost_equals_expansion_at_powers_of_two(c):
    term = ops.mgic(group=8, coarsest=16)
    sym = operad.cost(term, Field(C)).subs({C: c, operad.H: 8, operad.W: 8})
    assert sym == operad.cost(term, Field(c), size=(8, 8))
    m = term.bind(Field(c))
    assert operad.count(m, (2, c, 8, 8)) == sym


def test_mgic_levels_and_grouping():
    from operad.operators.mgic import mgic_levels
    assert mgic_levels(64, 8, 16) == [64, 32, 16]
    assert mgic_levels(160, 8, 32) == [160, 80, 40]
    m = ops.mgic(group=8, coarsest=16).bind(Field(64))
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert {c.in_channels // c.groups for c in convs if c.kernel_size == (3, 3)} == {8, 16}  # grouped + dense coarsest
    with pytest.raises(ValueError, match="even"):
        ops.mgic(group=7)


# ---------------------------------------------------------------------------
# Whole models: bind, cost == counted, forward + backward, state dict
# ---------------------------------------------------------------------------
QUICK = ["mobilenetv2_100_cifar", "g_ghost_resnet56"]


def _whole_model(name, s):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7)
    x = torch.randn(2, 3, s, s)
    assert operad.cost(m, size=(s, s)) == operad.count(m, x)
    m.train()
    y = m(x)
    assert y.shape == (2, 7)
    y.square().mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = create_model(name, num_classes=7)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x))


@pytest.mark.parametrize("name", QUICK)
def test_whole_model_quick(name):
    _whole_model(name, 16)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO2)
def test_whole_model(name):
    _whole_model(name, 64 if model_info(name).input_size[-1] > 32 else 32)


def test_macro_children_are_substituted():
    m = create_model("mobilenetv2_100_cifar", act=ops.gelu())
    kinds = {type(mod).__name__ for mod in m.modules()}
    assert "GELU" in kinds and "ReLU6" not in kinds


def test_features_only_and_output_stride():
    from operad.models.mobilenet import mobilenetv2
    from operad.models.seg_heads import backbone, pyramid
    assert [s for _, _, s in pyramid(mobilenetv2(features_only=True))] == [2, 2, 4, 8, 16, 16, 32, 32]
    assert [s for _, _, s in pyramid(mobilenetv2(output_stride=8, features_only=True))][-1] == 8
    names = [n for n, _, _ in pyramid(model_term("ghostnet_100", features_only=True))]
    assert names[0] == "stem" and names[-1] == "conv_head"
    assert pyramid(backbone("ghost_resnet56"))[-1] == ("stage3", 64, 4)


def test_feature_pyramids_on_zoo_backbones():
    from operad.models.features import create_features, feature_info
    info = feature_info(model_term("sknet50", features_only=True))
    assert [(f["name"], f["reduction"]) for f in info][-2:] == [("stage3", 16), ("stage4", 32)]
    net = create_features("ghost_resnet56", out_indices=(-2, -1)).eval()
    with torch.no_grad():
        ys = net(torch.randn(1, 3, 32, 32))
    assert [tuple(y.shape) for y in ys] == [(1, 32, 16, 16), (1, 64, 8, 8)]
    assert feature_info(model_term("mgic_mobilenetv2_100"))[-1]["name"] == "conv_head"


@pytest.mark.parametrize("name", SEG)
def test_segmentation_heads(name):
    m = create_model(name).eval()
    x = torch.randn(1, 3, 45, 60)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (1, 11, 45, 60)
    assert operad.cost(m, size=(45, 60)) == operad.count(m, x)


def test_deeplab_output_stride_8_and_fcn_on_any_backbone():
    from operad.models.seg_heads import backbone, fcn
    m = create_model("deeplabv3_mobilenetv2", output_stride=8)
    dil = [mod.dilation for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert (36, 36) in dil and (4, 4) in dil
    net = fcn(backbone("ghost_resnet56"), 5).bind(Field(3)).eval()
    assert net(torch.randn(1, 3, 33, 31)).shape == (1, 5, 33, 31)


# ---------------------------------------------------------------------------
# Families: structure and claims beyond the property suite
# ---------------------------------------------------------------------------
def test_inverted_residual_structure():
    keep = ops.inverted_residual(16, t=6).bind(Field(16))
    assert type(keep).__name__ == "ResidualModule"
    assert type(ops.inverted_residual(24, stride=2).bind(Field(16))).__name__ == "SeqModule"
    assert type(ops.inverted_residual(16, stride=1).bind(Field(8))).__name__ == "SeqModule"
    body = [type(x).__name__ for x in keep.body]
    assert body[-1] == "BatchNorm2d" and body.count("ReLU6") == 2  # linear bottleneck
    no_expand = ops.inverted_residual(8, t=1).bind(Field(8))
    assert sum(isinstance(x, torch.nn.Conv2d) for x in no_expand.modules()) == 2
    from operad.operators.inverted_residual import make_divisible
    assert [make_divisible(v) for v in (32 * 0.75, 16 * 0.5, 1280 * 1.4, 10)] == [24, 8, 1792, 16]


def test_ghost_module_widths():
    m = ops.ghost(7, ratio=3, k=1, dw=3).bind(Field(5))
    assert m.out_type == Field(7)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert convs[0].out_channels == 3 and convs[1].out_channels == 6 and convs[1].groups == 3
    assert m(torch.randn(2, 5, 6, 6)).shape == (2, 7, 6, 6)


def test_sk_attention_width_and_softmax():
    m = ops.sk(64, groups=8, r=16, L=32).bind(Field(64)).eval()
    lin = [x for x in m.attention.modules() if isinstance(x, torch.nn.Linear)]
    assert lin[0].out_features == 32 and lin[1].out_features == 2 * 64  # d = max(64/16, 32)
    m2 = ops.sk(1024, groups=32).bind(Field(1024))
    assert [x for x in m2.attention.modules() if isinstance(x, torch.nn.Linear)][0].out_features == 64
    # equal branches: whatever the weights, the output is that branch
    same = ops.select(ops.identity(), ops.identity(), r=1, L=2).bind(Field(3)).eval()
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(same(x), x)
    with pytest.raises(TypeMismatch, match="select"):
        ops.select(ops.conv(4), ops.conv(5)).bind(Field(3))


def test_gates_state_no_lipschitz_bound_and_shapes():
    se = ops.squeeze_excite(0.25).bind(Field(16))
    assert operad.verify.lipschitz(se, torch.randn(1, 16, 6, 6), iters=1).claimed is None
    assert operad.verify.lipschitz(ops.sk(8, groups=2, r=2, L=2).bind(Field(8)), torch.randn(1, 8, 6, 6), iters=1).claimed is None
    with pytest.raises(TypeMismatch, match="gate"):
        ops.gate(ops.global_pool() >> ops.linear(3)).bind(Field(8))


def test_g_ghost_stage_split():
    blk = lambda c: ops.conv(c, bias=False) >> ops.bn() >> ops.relu()
    m = ops.g_ghost_stage(blk(16), blk, blk(16), n=4, cheap_ratio=0.5).bind(Field(8))
    assert m.raw == 8 and len(m.middle) == 2
    assert m.middle[0].in_type == Field(8)
    assert m.mix.in_type == Field(16 + 2 * 8)
    with pytest.raises(ValueError, match="n >= 2"):
        ops.g_ghost_stage(blk(16), blk, blk(16), n=1)


def test_resize_bound_is_exact_for_nearest_doubling():
    from operad.operators.resize_to_input import interp_norm
    assert abs(interp_norm(4, 8, "nearest") - 2 ** 0.5) < 1e-12
    assert interp_norm(5, 5, "bilinear") == pytest.approx(1.0)


MODULES = ["operators.inverted_residual", "operators.ghost", "operators.gate", "operators.select", "operators.mgic",
           "operators.narrow", "operators.resize_to_input", "operators.image_pool",
           "models.mobilenet", "models.ghostnet", "models.sknet", "models.mgic"]


@pytest.mark.parametrize("mod", MODULES)
def test_docstring_examples(mod):
    m = importlib.import_module(f"operad.{mod}")
    res = doctest.testmod(m, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0


def test_bench_zoo_measures_and_the_gpu_path_runs_on_cpu():
    from operad.experiments.bench.zoo import _ratios, measure, table
    m = create_model("resnet20")
    r = measure(m, (16, 16), (8, 8), "classification", batch=2, runs=1, warmup=1)
    assert r["latency_ms"] > 0 and r["train_img_s"] > 0
    # the GPU section's settings (bf16 autocast, channels_last), and a segmentation target, on the CPU
    seg = ops.resize_to_input(ops.conv(4, stride=2)).bind(Field(3))
    r2 = measure(seg, (8, 8), (8, 8), "segmentation", amp=torch.bfloat16, channels_last=True, batch=2, runs=1,
                 warmup=1)
    assert r2["train_img_s"] > 0
    rows = _ratios([dict(model="resnet20", input="32x32", train_input="32x32", params=1, macs=10, **r),
                    dict(model="x", input="32x32", train_input="32x32", params=1, macs=20, **r)])
    assert rows[1]["mac_ratio"] == 2 and rows[1]["lat_per_mac"] == pytest.approx(0.5)
    assert "| x | 32x32 |" in table(rows, "t")
