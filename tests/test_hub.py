"""Weights files (safetensors and .pt, names and shapes checked), default_cfg, and
timm's conventions on every registered classifier."""
import pickle

import pytest
import torch

pytest.importorskip("safetensors")

from operad.models import create_model, list_models  # noqa: E402
from operad.models.hub import TIMM_ALIASES, load_weights, save_safetensors  # noqa: E402
from operad.models.registry import MODELS  # noqa: E402

CLASSIFIERS = [n for n in list_models() if MODELS[n].task == "classification"]
SMALL = [n for n in CLASSIFIERS if MODELS[n].input_size[1] <= 32]
LARGE = [n for n in CLASSIFIERS if MODELS[n].input_size[1] > 32]


def _randomize(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1 if t.dim() == 1 else 0))
    return model.eval()


@pytest.mark.parametrize("suffix", ["safetensors", "pt", "final.pt"])
def test_weights_round_trip_through_create_model(tmp_path, suffix):
    m = _randomize(create_model("resnet20", num_classes=7))
    path = str(tmp_path / f"w.{suffix}")
    if suffix == "safetensors":
        save_safetensors(m, path)
    elif suffix == "pt":
        torch.save(m.state_dict(), path)
    else:  # a run's final.pt: EMA weights preferred
        torch.save({"model": {k: v * 0 for k, v in m.state_dict().items()}, "ema": m.state_dict(),
                    "config": {"lr": 0.1}, "classes": list("abcdefg")}, path)
    m2 = create_model("resnet20", num_classes=7, checkpoint_path=path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(m(x), m2(x))
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def test_mismatch_lists_every_name_and_shape(tmp_path):
    path = save_safetensors(create_model("resnet20", num_classes=10), str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError) as e:
        create_model("resnet20", num_classes=5, checkpoint_path=path)
    msg = str(e.value)
    assert "2 mismatches" in msg and "head.1.weight: file (10, 64), model (5, 64)" in msg and "head.1.bias" in msg
    assert "num_classes" in msg
    with pytest.raises(ValueError) as e:
        create_model("resnet32", checkpoint_path=path)
    assert "72 mismatches" in str(e.value) and "missing from the file: stage1.8.body.3.weight (16, 16, 3, 3)" in str(e.value)
    assert "... and 52 more" in str(e.value)
    sd = create_model("resnet20").state_dict()
    sd["extra.weight"] = torch.ones(2)
    with pytest.raises(ValueError, match=r"not in the model: extra.weight \(2,\)"):
        load_weights(create_model("resnet20"), sd)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pt_files_are_read_without_running_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": create_model("resnet20").state_dict(), "x": _Evil()}, str(path))
    with pytest.raises(pickle.UnpicklingError):
        create_model("resnet20", checkpoint_path=str(path))
    with pytest.raises(FileNotFoundError, match="no weights file"):
        create_model("resnet20", checkpoint_path=str(tmp_path / "none.safetensors"))


def test_training_writes_final_safetensors(tmp_path):
    from operad.experiments import train
    from operad.experiments.synthetic import write_cifar_pickle
    from operad.experiments.train import load_run_model

    write_cifar_pickle(str(tmp_path / "data"), per_class=4, test_per_class=2)
    expr = "ops.conv(4) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(10)"
    train({"model_expr": expr, "dataset": "cifar10", "data_root": str(tmp_path / "data"), "out_dir": str(tmp_path),
           "name": "t", "batch_size": 20, "epochs": 1, "progress": False, "threads": 1, "plot_every": 0, "ema": 0.5})
    model, _, _ = load_run_model(str(tmp_path / "t"))  # the EMA weights from final.pt
    from safetensors.torch import load_file

    st = load_file(str(tmp_path / "t" / "final.safetensors"))
    assert st.keys() == model.state_dict().keys()
    assert all(torch.equal(st[k], v) for k, v in model.state_dict().items())
    pytest.importorskip("onnxruntime")
    from operad.experiments.cli import main  # a run folder exports too

    assert main(["export", str(tmp_path / "t"), "--format", "onnx", "--out", str(tmp_path / "t.onnx")]) == 0
    assert (tmp_path / "t.onnx").stat().st_size > 0
    from operad.experiments.export import resolve_model

    m2, shape = resolve_model(str(tmp_path / "t" / "final.safetensors"))
    assert shape == (1, 3, 32, 32) and all(torch.equal(st[k], v) for k, v in m2.state_dict().items())


def _check_default_cfg(names):
    for name in names:
        m = create_model(name)
        cfg = m.default_cfg
        e = MODELS[name]
        assert cfg["input_size"] == e.input_size and cfg["architecture"] == name, name
        assert len(cfg["mean"]) == len(cfg["std"]) == e.input_size[0], name
        assert cfg["interpolation"] and 0 < cfg["crop_pct"] <= 1 and cfg["first_conv"], name
        if e.task == "classification":
            assert isinstance(cfg["num_classes"], int) and cfg["classifier"].startswith("head."), name
            assert next(m.get_classifier().parameters()).shape[0] == cfg["num_classes"], name


def test_default_cfg_of_every_small_registered_model():
    _check_default_cfg([n for n in list_models() if MODELS[n].input_size[1] <= 32])


@pytest.mark.slow
def test_default_cfg_of_every_large_registered_model():
    _check_default_cfg([n for n in list_models() if MODELS[n].input_size[1] > 32])


def test_summary_prints_default_cfg(capsys):
    from operad.experiments.cli import main

    assert main(["summary", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "default_cfg" in out and "input_size (3, 32, 32)" in out and "crop_pct 1.0" in out


def _check_timm(name, size):
    m = create_model(name, num_classes=5).eval()
    c = m.default_cfg["input_size"][0]
    x = torch.randn(2, c, size, size)
    with torch.no_grad():
        y = m(x)
        f = m.forward_features(x)
        assert y.shape == (2, 5) and torch.allclose(m.forward_head(f), y, atol=1e-5), name
        assert f.shape[1] == m.feature_info[-1]["num_chs"] == m.num_features, name
        assert [i["reduction"] for i in m.feature_info] == sorted(i["reduction"] for i in m.feature_info)
        pre = m.forward_head(f, pre_logits=True)
        assert pre.dim() == 2 and pre.shape[0] == 2, name
        leaves = list(m.head.modules())
        if m.get_classifier() is leaves[-1] and isinstance(leaves[-1], torch.nn.Linear):  # head ends in its fc
            assert torch.allclose(m.get_classifier()(pre), y, atol=1e-5), name
    _check_features_only(name, m, x)
    return m, x


def _check_features_only(name, m, x):
    """``features_only=True`` without ``out_indices``: every stage, as timm (MobileNetV2's, like
    timm's, ends before its 1x1 ``conv_head``), each the classifier's output at that stage."""
    p = create_model(name, features_only=True).eval()
    mine = p.trunk.state_dict()
    p.trunk.load_state_dict({k: v for k, v in m.state_dict().items() if k in mine})  # strict: all from m
    with torch.no_grad():
        outs = p(x)
        ref = x
        for child in list(m.children())[:len(outs)]:
            ref = child(ref)
    assert 0 < len(outs) == len(p.feature_info) <= len(m.feature_info), name
    assert [i["name"] for i in p.feature_info] == [i["name"] for i in m.feature_info][:len(outs)], name
    assert [o.shape[1] for o in outs] == [i["num_chs"] for i in p.feature_info], name
    assert torch.allclose(outs[-1], ref, atol=1e-5), name


@pytest.mark.parametrize("name", SMALL)
def test_timm_methods_on_every_cifar_classifier(name):
    _check_timm(name, MODELS[name].input_size[1])


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_timm_methods_on_every_imagenet_classifier(name):
    _check_timm(name, 64)


@pytest.mark.parametrize("name", ["resnet20", "hnet_digits", "cifar10_speedrun", "ghost_vgg16", "allcnn_c"])
def test_reset_classifier(name):
    m, x = _check_timm(name, MODELS[name].input_size[1])
    cls = m.default_cfg["classifier"] + "."
    keep = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith(cls)}  # trunk, hidden head layers
    m.reset_classifier(3)
    m.eval()
    assert m(x).shape == (2, 3) and m.num_classes == 3 and m.default_cfg["num_classes"] == 3
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in keep.items() if m.state_dict()[k].shape == v.shape)
    before = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(cls)}
    m.reset_classifier(3)  # the same size: still a fresh classifier, as in timm
    assert any(not torch.equal(v, m.state_dict()[k]) for k, v in before.items() if v.is_floating_point() and v.numel() > 1)
    m.double().reset_classifier(4)  # the new classifier follows the model's dtype
    assert m(x.double()).dtype == torch.float64 and m(x.double()).shape == (2, 4)
    m.float().reset_classifier(0)
    with torch.no_grad():
        assert torch.allclose(m(x), m.forward_head(m.forward_features(x), pre_logits=True))


def test_features_only_out_indices_and_list_models_tags(tmp_path):
    p = create_model("resnet20", features_only=True, out_indices=(1, -1))
    outs = p(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [f["channels"] for f in p.feature_info] == [16, 64]
    path = save_safetensors(_randomize(create_model("resnet20")), str(tmp_path / "w.safetensors"))
    p2 = create_model("resnet20", features_only=True, out_indices=(-1,), checkpoint_path=path)
    full = create_model("resnet20", checkpoint_path=path).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(p2.eval()(x)[0], full.forward_features(x))
    assert list_models("resnet*", tags="cifar") == ["resnet110", "resnet20", "resnet20_bwn", "resnet20_qnn",
                                                    "resnet20_xnor", "resnet32", "resnet44", "resnet56"]
    assert list_models("resnet*", tags="cifar", exclude_filters="*_*") == \
        ["resnet110", "resnet20", "resnet32", "resnet44", "resnet56"]
    assert list_models(["resnet2*", "preact*"], tags=("cifar", "preact"), exclude_filters="*110") == \
        ["preact_resnet18", "preact_resnet20", "preact_resnet56"]


def test_timm_aliases_are_the_same_architecture():
    for alias, target in TIMM_ALIASES.items():
        assert alias in list_models() and MODELS[alias].fn is MODELS[target].fn
        a, b = create_model(alias), create_model(target)
        assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]


def test_created_models_pickle_and_deepcopy_with_their_methods():
    import copy

    m = create_model("resnet20", num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        c.eval()
        assert torch.equal(c.forward_head(c.forward_features(x)), m(x)) and c.default_cfg == m.default_cfg


@pytest.mark.parametrize("mod", ["operad.models.hub", "operad.models.registry", "operad.experiments.export"])
def test_docstring_examples(mod):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(mod))
    assert res.failed == 0 and res.attempted > 0
