"""Checkpoint converters: a randomly initialised torchvision or timm model, converted, gives
the same outputs (skipped where the library does not import), and mismatches fail clearly."""
import pytest
import torch

from operad.models import create_model
from operad.models.convert import SUPPORTED, conversion_check, convert_state_dict, load_pretrained, reference_model


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


@pytest.mark.parametrize("source", ["torchvision", "timm"])
@pytest.mark.parametrize("name", SUPPORTED)
def test_converted_checkpoints_give_the_source_models_outputs(name, source):
    """Runs where torchvision / timm import (the GPU machines; the GPU suite's correctness
    section calls the same conversion_check), skips elsewhere."""
    pytest.importorskip(source)
    r = conversion_check(name, source)
    assert r["output_abs_max"] > 0.05  # a real output, not zeros
    assert r["max_abs_diff"] <= 1e-4 * max(1.0, r["output_abs_max"]), r


def test_unknown_names_and_sources_are_clear():
    with pytest.raises(ValueError, match="no converter for 'vgg16'"):
        reference_model("vgg16", "torchvision")
    with pytest.raises(ValueError, match="unknown source 'keras'"):
        reference_model("resnet18", "keras")
