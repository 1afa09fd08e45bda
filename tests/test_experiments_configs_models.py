"""Every bundled experiment config validates and names models that are registered."""
import glob
import os

import pytest

import operad
from operad.experiments.config import expand_runs, load_config

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(operad.experiments.__file__), "configs", "*.toml")))


def test_configs_are_bundled():
    assert len(CONFIGS) >= 9


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_config_models_are_registered(path, profile):
    runs = expand_runs(load_config(path), profile=profile)
    assert runs
    registered = set(operad.list_models())
    for cfg in runs:
        assert cfg.model or cfg.model_expr, f"{path}: run {cfg.name} names no model"
        if cfg.model:
            assert cfg.model in registered, f"{os.path.basename(path)} run {cfg.name}: model {cfg.model!r} is not registered"


def _leaves(term):
    return [repr(t) for t in term.walk() if not t.children()]


def test_allcnn_vs_maxpool_arms_differ_only_as_the_papers_models_do():
    """ConvPool-CNN-C is All-CNN-C with each stride-2 conv (+ ReLU) replaced by the same
    conv at stride 1 (+ ReLU) and a 3x3/2 max pool: same dropout, no BN, same padding."""
    from operad import ops
    from operad.experiments.train import build_model
    path = [p for p in CONFIGS if p.endswith("allcnn_vs_maxpool.toml")][0]
    arms = {cfg.name: build_model(cfg, 10) for cfg in expand_runs(load_config(path), profile="gpu")}
    allcnn, convpool = _leaves(arms["allcnn_c"].term), _leaves(arms["convpool_cnn_c"].term)
    expected, pending = [], False
    for leaf in allcnn:
        if leaf == repr(ops.conv(96, stride=2)) or leaf == repr(ops.conv(192, stride=2)):
            leaf, pending = leaf.replace(", stride=2", ""), True
        expected.append(leaf)
        if pending and leaf == "relu()":
            expected.append(repr(ops.max_pool(3, stride=2, padding=1)))
            pending = False
    assert allcnn.count("dropout(0.5)") == 2 and "bn()" not in allcnn
    assert convpool == expected
    assert operad.cost(arms["convpool_cnn_c"], size=(32, 32)).params == operad.cost(arms["allcnn_c"], size=(32, 32)).params


def test_twin_config_compares_cifar_resnet18s_that_differ_only_in_the_first_stage():
    from operad.experiments.train import build_model
    path = [p for p in CONFIGS if p.endswith("twin_cmod_vs_resnet.toml")][0]
    terms = [build_model(cfg, 10).term for cfg in expand_runs(load_config(path), profile="gpu")]
    assert len(terms) == 2
    (std, twin) = terms
    assert [repr(t) for t in std.items[1:]] == [repr(t) for t in twin.items[1:]]
    assert repr(std.items[0]) != repr(twin.items[0]) and "cmod" in repr(twin.items[0])
    # the CIFAR layout: a stride-2 first stage, 4x4 maps after the last stage at 32x32
    assert std.items[0].out_size(operad.Field(3), (32, 32)) == (16, 16)
