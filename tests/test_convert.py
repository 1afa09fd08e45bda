"""Checkpoint converters: a randomly initialised torchvision model, converted, gives the
same outputs (skipped where torchvision does not import), and mismatches fail clearly."""
import pytest
import torch

from operad.models import create_model
from operad.models.convert import convert_state_dict, load_pretrained

TORCHVISION_NAMES = {"mobilenetv2_100": "mobilenet_v2"}


def test_mismatch_errors():
    m = create_model("resnet18")
    sd = m.state_dict()
    with pytest.raises(ValueError, match="entries"):
        convert_state_dict(m, dict(list(sd.items())[:-1]))
    bad = dict(sd)
    bad["head.3.weight" if "head.3.weight" in bad else list(bad)[-2]] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="does not match"):
        convert_state_dict(m, bad)
    renamed = {f"x{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(sd.items())}
    other = load_pretrained(create_model("resnet18"), renamed)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), sd.values()))


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "densenet121", "mobilenetv2_100"])
def test_torchvision_outputs_match(name):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = getattr(tv.models, TORCHVISION_NAMES.get(name, name))(weights=None).eval()
    for mod in ref.modules():  # non-trivial BN statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    model = load_pretrained(create_model(name), ref.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-4, rtol=1e-4)
