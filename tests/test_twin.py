"""Twin networks: registry, shapes, and the exact parameter formulas of twin
first layers against their standard counterparts."""
import pytest
import torch

import operad
from operad import Field, ops
from operad.models import create_model, list_models
from operad.models.twin import first_layer_params

TWINS = ["twin_resnet18", "twin_resnet18_rmax", "twin_resnet34", "twin_resnet34_rmax", "twin_resnet18_cifar",
         "twin_resnet18_cifar_rmax", "twin_resnet34_cifar", "twin_resnet34_cifar_rmax", "twin_alexnet",
         "twin_alexnet_rmax"]


def test_registered():
    assert set(TWINS) <= set(list_models())


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,k,bias,norm,size", [
    ("twin_resnet18", 7, False, True, 224), ("twin_resnet34", 7, False, True, 224),
    ("twin_resnet18_cifar", 3, False, True, 32), ("twin_alexnet", 11, True, False, 224)])
def test_twin_parameter_formula_is_exact(name, k, bias, norm, size):
    std = operad.cost(create_model(name, first="conv"), size=(size, size)).params
    for first in ("cmod", "rmax"):
        m = create_model(name, first=first)
        cw, mix = _wavelet_of(m)
        twin = operad.cost(m, size=(size, size)).params
        assert twin == _params(m)
        s_std = first_layer_params(64, 0, k, bias=bias, norm=norm)
        s_twin = first_layer_params(64, cw, k, mix=mix, bias=bias, norm=norm)
        assert std - twin == s_std - s_twin
        per_free = 3 * k * k + (1 if bias else 0) + (2 if norm else 0)
        assert s_std - s_twin == cw * per_free - 3 * mix - 2 * cw  # the wavelet path keeps a BN (2 Cw)


def _wavelet_of(m):
    for mod in m.modules():
        t = getattr(mod, "term", None)
        if t is not None and t.family in ("cmod", "rmax"):
            return t.out, t.mix
    raise AssertionError("no wavelet block")


def test_standard_counterpart_is_the_standard_resnet():
    assert (operad.cost(create_model("twin_resnet18", first="conv"), size=(224, 224))
            == operad.cost(create_model("resnet18"), size=(224, 224)))


@pytest.mark.parametrize("first", ["cmod", "rmax", "conv"])
def test_cifar_twin_runs_and_trains_a_step(first):
    m = create_model("twin_resnet18_cifar", first=first, width=8)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward()
    colour = [mod.mix for mod in m.modules() if getattr(mod, "term", None) is not None and mod.term.family == "dtcwpt"]
    if first == "conv":
        assert not colour
    else:  # the colour mixing (folded into the transform) is trained
        assert colour and colour[0].grad is not None and colour[0].grad.abs().sum() > 0


def test_imagenet_twin_shapes():
    m = create_model("twin_resnet18", width=8, wavelet=4, num_classes=7)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert m.stem.out_type == Field(8)


def test_bad_twin_config():
    with pytest.raises(ValueError, match="twin first layer"):
        create_model("twin_resnet18", first="gabor")
    with pytest.raises(ValueError, match="wavelet channels"):
        create_model("twin_resnet18", wavelet=65, mix=1)
