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
