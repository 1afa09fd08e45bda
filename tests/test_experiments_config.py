"""Config validation, overrides, profiles, runs, TOML round trip, bundled configs."""
import glob
import os
import tomllib

import pytest

from operad.experiments.config import (Config, ConfigError, dump_toml, expand_runs, load_config,
                                       parse_overrides)
from operad.experiments.train import build_model

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "*.toml")))


def test_unknown_key_names_it_and_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat'.*did you mean") as e:
        Config.from_dict({"learning_rat": 0.1})
    with pytest.raises(ConfigError, match=r"'wieght_decay'; did you mean 'weight_decay'"):
        Config.from_dict({"wieght_decay": 0.1})
    with pytest.raises(ConfigError, match=r"'batchsize'.*did you mean 'batch_size'.*runs\[1\]"):
        expand_runs({"runs": [{"name": "a"}, {"name": "b", "batchsize": 3}]}, profile="cpu")


def test_bad_values():
    with pytest.raises(ConfigError, match="'epochs' expects an integer"):
        Config.from_dict({"epochs": "many"})
    with pytest.raises(ConfigError, match="optimizer = 'sgdd' is not one of sgd, adamw; did you mean 'sgd'"):
        Config.from_dict({"optimizer": "sgdd"})
    with pytest.raises(ConfigError, match="either model"):
        Config.from_dict({"model": "resnet20", "model_expr": "ops.relu()"})
    with pytest.raises(ConfigError, match="flip' expects true or false"):
        Config.from_dict({"flip": 3})
    assert Config.from_dict({"lr": 1, "epochs": 2.0}).lr == 1.0


def test_overrides_profiles_and_runs():
    raw = {"epochs": 100, "lr": 0.1, "model_args": {"width": 8}, "cpu": {"epochs": 2, "subset": 10},
           "gpu": {"compile": True},
           "runs": [{"name": "a", "model": "resnet20"}, {"name": "b", "model": "x", "cpu": {"lr": 0.5}}]}
    ov = parse_overrides(["lr=0.2", "model_args.depth=3", "cpu.subset=20"])
    cpu = expand_runs(raw, ov, profile="cpu")
    assert [(c.name, c.epochs, c.lr, c.subset, c.compile) for c in cpu] == [("a", 2, 0.2, 20, False),
                                                                            ("b", 2, 0.2, 20, False)]
    assert cpu[0].model_args == {"width": 8, "depth": 3}
    gpu = expand_runs(raw, {}, profile="gpu")
    assert [(c.epochs, c.lr, c.compile) for c in gpu] == [(100, 0.1, True), (100, 0.1, True)]
    assert expand_runs(raw, {}, profile="cpu")[1].lr == 0.5  # the run's own cpu table
    assert [c.name for c in expand_runs(raw, {}, profile="cpu", only=["b"])] == ["b"]
    with pytest.raises(ConfigError, match="no run named 'c'"):
        expand_runs(raw, {}, profile="cpu", only=["c"])
    with pytest.raises(ConfigError, match="two runs are named"):
        expand_runs({"runs": [{"name": "a"}, {"name": "a"}]}, profile="cpu")


def test_dump_toml_round_trip():
    c = Config(name='we"ird', model_args={"a": 1, "b": [1, 2]}, milestones=[0.3], claim="multi\nline")
    back = Config.from_dict(tomllib.loads(dump_toml(c.to_dict(), "header\nline 2")))
    assert back == c


def test_load_config_by_bundled_name():
    raw = load_config("min_resnet_vs_resnet")
    assert raw["experiment"] == "min_resnet_vs_resnet"
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config")


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_bundled_configs_validate(path):
    raw = load_config(path)
    assert raw.get("claim"), "each experiment states its claim"
    cpu = expand_runs(raw, profile="cpu")
    gpu = expand_runs(raw, profile="gpu")
    assert len(cpu) == len(gpu) >= 1
    for c, g in zip(cpu, gpu):
        assert c.model or c.model_expr
        # the CPU version is small: a subset and a few epochs (a speed recipe's full schedule is short by design)
        # (a detection profile trains a small derived data set of its own: cars only, at a lower resolution)
        small = (c.subset and c.epochs <= 5) or (c.task == "detection" and c.data_root != g.data_root
                                                  and c.epochs < g.epochs)
        assert small and (g.epochs >= 50 or g.recipe == "speedrun") and not g.subset
    for c in cpu:
        if c.model_expr:  # expressions bind now; registry names are resolved at train time
            m = build_model(c, 10)
            import torch

            assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
