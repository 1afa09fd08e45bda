"""Network zoo I: published counts, overrides through substitution, feature
pyramids, builders with pluggable blocks, and the docstring examples."""
import doctest
import importlib
from functools import partial

import pytest
import torch

import operad
from operad import Field, ops
from operad.models import create_model, list_models, model_term
from operad.models.features import create_features, feature_info, forward_features
from operad.models.resnet import basic_block, cifar_resnet, resnet

ZOO1 = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34", "resnet50",
        "preact_resnet18", "preact_resnet20", "preact_resnet56", "preact_resnet110", "densenet_bc100_k12",
        "densenet121", "allcnn_c", "allcnn_c_maxpool", "hardnet68", "hardnet85", "hardnet68_cifar", "threshnet79"]

# (model, published params, published MACs or None, input size)
PUBLISHED = [
    ("resnet20", 0.27e6, None, 32),
    ("resnet56", 0.85e6, None, 32),
    ("resnet110", 1.7e6, None, 32),
    ("resnet18", 11.69e6, 1.82e9, 224),
    ("resnet34", 21.80e6, 3.67e9, 224),
    ("resnet50", 25.56e6, 4.11e9, 224),
    ("densenet121", 7.98e6, 2.87e9, 224),
    ("allcnn_c", 1.37e6, None, 32),
    ("hardnet68", 17.6e6, 4.3e9, 224),
    ("hardnet85", 36.7e6, 9.1e9, 224),
]

# exact counts of the reference implementations (torchvision; the CIFAR ResNets of
# He et al. with option A as in the widely used reference code; DenseNet-BC-100 k=12)
EXACT = {"resnet20": 269_722, "resnet56": 853_018, "resnet110": 1_727_962, "resnet18": 11_689_512,
         "resnet34": 21_797_672, "resnet50": 25_557_032, "densenet121": 7_978_856,
         "densenet_bc100_k12": 769_162}


@pytest.mark.parametrize("name,params,macs,size", PUBLISHED)
def test_counts_match_published(name, params, macs, size):
    c = operad.cost(model_term(name), Field(3), size=(size, size))
    # within 1%, or equal at the precision the paper printed (ResNet-110: 1.728M is "1.7M")
    digits = len(repr(params / 1e6).split(".")[1].rstrip("0"))
    assert (abs(c.params - params) / params < 0.01 or round(c.params / 1e6, digits) == params / 1e6), \
        f"{name}: {c.params} parameters, published {params:.4g}"
    if macs is not None:
        assert abs(c.macs - macs) / macs < 0.02, f"{name}: {c.macs} MACs, published {macs:.4g}"


def test_threshnet79_matches_its_published_imagenet_counts():
    # the ThreshNet repository's table (torchstat, 224x224, 1000 classes): 15.32M, 3.46 GFLOPs (= MACs)
    c = operad.cost(model_term("threshnet79", num_classes=1000), Field(3), size=(224, 224))
    assert abs(c.params - 15.32e6) / 15.32e6 < 0.01 and abs(c.macs - 3.46e9) / 3.46e9 < 0.02


def test_harmonic_links_follow_hardnet():
    from operad.operators.algebra.links import harmonic_links
    links, widths, outs = harmonic_links(8, 14)
    assert links[7] == (7, 6, 4, 0) and links[3] == (3, 2, 0) and links[0] == (0,)
    assert widths == (14, 24, 14, 40, 14, 24, 14, 68) and outs == (1, 3, 5, 7, 8)
    # threshnet: dense blocks first, harmonic blocks after the threshold
    fams = [t.family for t in model_term("threshnet79").walk() if t.family in ("dense", "links")]
    assert fams == ["dense"] * 3 + ["links"] * 2


def test_densenet_bc_published_figure_is_rounded():
    # the paper's "0.8M" is 769,162 rounded to one digit
    p = operad.cost(model_term("densenet_bc100_k12"), Field(3), size=(32, 32)).params
    assert round(p / 1e6, 1) == 0.8


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_reference_counts(name):
    size = 224 if operad.models.model_info(name).input_size[1] == 224 else 32
    assert operad.cost(model_term(name), Field(3), size=(size, size)).params == EXACT[name]


def test_registry_has_zoo1():
    assert set(ZOO1) <= set(list_models())
    assert list_models("resnet1*") == ["resnet110", "resnet18", "resnet18_bwn", "resnet18_qnn", "resnet18_xnor"]


def test_cifar_resnet_has_option_a_shortcuts_without_parameters():
    m = create_model("resnet20")
    short = m.stage2[0].shortcut
    assert sum(p.numel() for p in short.parameters()) == 0
    x = torch.randn(1, 16, 8, 8)
    y = short(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any() and not y[:, 24:].any()


def test_overrides_go_through_substitution():
    m = create_model("resnet20", act=ops.gelu())
    fams = {t.family for t in m.term.walk()}
    assert "gelu" in fams and "relu" not in fams
    m = create_model("resnet20", conv=lambda c: ops.conv(c.out, k=c.k, stride=c.stride, bias=False,
                                                         padding_mode="circular"))
    assert all(t.padding_mode == "circular" for t in m.term.walk() if t.family == "conv")
    assert m(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    m = create_model("densenet_bc100_k12", act=ops.silu(), num_classes=100)
    assert "relu" not in {t.family for t in m.term.walk()} and m.out_type.channels == 100
    with pytest.raises(TypeError, match="no option"):
        create_model("resnet20", widht=2)


def test_pluggable_block():
    seen = []

    def block(cin, cout, stride):
        seen.append((cin, cout, stride))
        return basic_block(cin, cout, stride, act=ops.gelu)

    t = cifar_resnet(20, block=block, widths=(8, 16, 32))
    assert seen[:4] == [(8, 8, 1), (8, 8, 1), (8, 8, 1), (8, 16, 2)]
    assert t.bind(Field(3))(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        cifar_resnet(21)
    with pytest.raises(TypeError, match="must return a term"):
        cifar_resnet(20, block=lambda a, b, s: None)
    # a widening block: the builder infers the widths
    wide = resnet((1, 1), widths=(8, 16), block=lambda c, w, s: ops.conv(2 * w, stride=s) >> ops.relu())
    assert wide.bind(Field(3)).stage2.out_type == Field(32)


@pytest.mark.parametrize("name,stages", [
    ("resnet20", [("stem", 16, 1), ("stage1", 16, 1), ("stage2", 32, 2), ("stage3", 64, 4)]),
    ("resnet50", [("stem", 64, 2), ("stage1", 256, 4), ("stage2", 512, 8), ("stage3", 1024, 16),
                  ("stage4", 2048, 32)]),
    ("densenet121", [("stem", 64, 2), ("stage1", 256, 4), ("stage2", 512, 8), ("stage3", 1024, 16),
                     ("stage4", 1024, 32)]),
    ("allcnn_c", [("stem", 96, 1), ("stage1", 192, 2), ("stage2", 192, 4)]),
])
def test_feature_info(name, stages):
    info = feature_info(model_term(name, features_only=True))
    assert [(f["name"], f["channels"], f["reduction"]) for f in info] == stages


def test_feature_pyramid_matches_forward_and_forward_features():
    torch.manual_seed(0)
    pyr = create_features("resnet18", out_indices=(1, 2, 3, 4))
    x = torch.randn(1, 3, 64, 64)
    outs = pyr(x)
    assert [o.shape[1] for o in outs] == [f["channels"] for f in pyr.feature_info]
    assert [64 // o.shape[-1] for o in outs] == [f["reduction"] for f in pyr.feature_info]
    full = create_model("resnet18").eval()
    missing = full.load_state_dict(pyr.trunk.state_dict(), strict=False)
    assert set(missing.missing_keys) == {k for k in full.state_dict() if k.startswith("head.")}
    pyr.eval()
    assert torch.allclose(forward_features(full, x), pyr(x)[-1])
    with pytest.raises(IndexError):
        create_features("resnet20", out_indices=(7,))


def test_features_only_model_and_segmentation_backbone():
    m = create_model("resnet18", features_only=True)  # timm's default: every stage
    assert [f["name"] for f in m.feature_info] == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert m.trunk.out_type == Field(512)
    from operad.models.seg_heads import pyramid, backbone
    assert pyramid(backbone("resnet18"))[-1] == ("stage4", 512, 32)


@pytest.mark.parametrize("mod", ["operad.models.resnet", "operad.models.densenet", "operad.models.allcnn",
                                 "operad.models.features", "operad.operators.shortcut", "operad.operators.algebra.links",
                                 "operad.operators.rewrites.fuse", "operad.operators.rewrites.remove_residuals"])
def test_docstring_examples(mod):
    res = doctest.testmod(importlib.import_module(mod))
    assert res.failed == 0 and res.attempted > 0


def test_cifar_resnet_cost_formula_in_depth_and_width():
    import sympy
    from operad.models.resnet import cifar_resnet_cost
    n, C = sympy.symbols("n C", positive=True, integer=True)
    c = cifar_resnet_cost(n, C)
    for depth in (20, 32, 44, 56, 110):
        exact = operad.cost(model_term(f"resnet{depth}"), Field(3), size=(32, 32))
        assert c.subs({n: (depth - 2) // 6, C: 16}) == exact
    assert sympy.Poly(c.params, C).degree() == 2 and sympy.Poly(c.macs, n).degree() == 1


def test_zoo_table_lists_exact_counts():
    from operad.experiments.zoo_table import table
    out = table(["resnet20", "densenet121"])
    assert "| resnet20 | 3x32x32 | 269,722 | 40,551,040 |" in out and "7,978,856" in out
