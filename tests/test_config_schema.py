"""The config schema: every key's type and range checked at load, overrides parsed
by declared type, and a hypothesis fault test that mutates one key at a time."""
import doctest
import importlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operad.experiments import config as C
from operad.experiments.config import (CHOICES, SCHEMA, Config, ConfigError, expand_runs, parse_overrides,
                                       validate_name)

EXPR = "ops.conv(4) >> ops.relu() >> ops.global_pool() >> ops.linear(10)"

# (key, bad value, the allowed range the message must quote): the probes of issue 14
PROBES = [("eval_every", 0, "[1, inf)"), ("clip_grad", -1.0, "[0, inf)"), ("subset", -5, "[0, inf)"),
          ("val_subset", -1, "[0, inf)"), ("max_steps", -1, "[0, inf)"), ("weight_decay", -1e-4, "[0, inf)"),
          ("ema", 1.0, "[0, 1)"), ("ema", -0.1, "[0, 1)"), ("cutout", -2, "[0, inf)"),
          ("checkpoint_every", -1, "[0, inf)"), ("lr", 0.0, "(0, inf)"), ("lr", -0.1, "(0, inf)"),
          ("lr", math.nan, "(0, inf)"), ("lr", math.inf, "(0, inf)"), ("momentum", 1.0, "[0, 1)"),
          ("momentum", -0.5, "[0, 1)"), ("threads", -1, "[0, inf)"), ("label_smoothing", 1.0, "[0, 1)"),
          ("label_smoothing", -0.1, "[0, 1)"), ("crop_padding", -1, "[0, inf)"), ("mixup", -0.5, "[0, inf)"),
          ("cutmix", -1.0, "[0, inf)"), ("epochs", 0, "[1, inf)"), ("batch_size", 0, "[1, inf)"),
          ("eval_batch_size", -3, "[1, inf)"), ("log_every", 0, "[1, inf)"), ("plot_every", -1, "[0, inf)"),
          ("warmup_epochs", -1.0, "[0, inf)"), ("warmup_start", 1.5, "[0, 1]"), ("min_lr", -1.0, "[0, inf)"),
          ("gamma", 0.0, "(0, inf)"), ("onecycle_pct", 1.0, "(0, 1)"), ("rotate", 181.0, "[0, 180]"),
          ("seed", -1, "[0, 1e+18]"), ("betas", [0.9, 1.0], "[0, 1)"), ("milestones", [0.5, -1.0], "(0, inf)"),
          ("scale_range", [0.0, 1.0], "(0, inf)"), ("crop_size", [0, 32], "[1, inf)"),
          ("rotation_angles", [0.0, math.inf], "(-inf, inf)"),
          # regularization (issue 19)
          ("rand_augment_n", 0, "[1, 4]"), ("rand_augment_n", 5, "[1, 4]"), ("rand_augment_m", 31, "[0, 30]"),
          ("rand_augment_m", -1, "[0, 30]"), ("erasing", 1.5, "[0, 1]"), ("erasing", -0.1, "[0, 1]"),
          ("erasing_area", [0.0, 0.4], "(0, 1)"), ("erasing_area", [0.02, 1.0], "(0, 1)"),
          ("tsla_until", -1.0, "[0, inf)"), ("disturb_label", 1.0, "[0, 1)"), ("disturb_label", -0.1, "[0, 1)"),
          ("drop_block_ramp", 1.5, "[0, 1]"), ("drop_block_ramp", -0.5, "[0, 1]")]


@pytest.mark.parametrize("key,value,allowed", PROBES, ids=[f"{k}={v}" for k, v, _ in PROBES])
def test_out_of_range_names_key_value_and_range(key, value, allowed):
    with pytest.raises(ConfigError) as e:
        Config.from_dict({key: value})
    msg = str(e.value)
    assert e.value.key == key and f"'{key}'" in msg and allowed in msg, msg
    assert repr(value) in msg or repr(float(value) if not isinstance(value, list) else value) in msg, msg


@pytest.mark.parametrize("key,value", [("epochs", "3"), ("epochs", True), ("epochs", 2.5), ("lr", "0.1"),
                                       ("lr", True), ("flip", 1), ("flip", "yes"), ("name", 3),
                                       ("betas", 0.9), ("betas", ["a", "b"]), ("crop_size", [32.5, 32]),
                                       ("model_args", [1]), ("robustness", "jpeg"), ("subset", math.inf)])
def test_wrong_types_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}' expects") as e:
        Config.from_dict({key: value})
    assert e.value.key == key


def test_lengths_choices_and_cross_key_rules():
    with pytest.raises(ConfigError, match=r"'betas' = \[0.9\] must have 2 elements"):
        Config.from_dict({"betas": [0.9]})
    with pytest.raises(ConfigError, match=r"'crop_size' = \[32\] must have 0 or 2 elements"):
        Config.from_dict({"crop_size": [32]})
    with pytest.raises(ConfigError, match=r"robustness = 'jpg' is not one of jpeg, shift, rotation; did you mean 'jpeg'"):
        Config.from_dict({"robustness": ["jpg"]})
    with pytest.raises(ConfigError, match=r"dataset = 'cifar11' is not one of"):
        Config.from_dict({"dataset": "cifar11"})
    with pytest.raises(ConfigError, match=r"'min_lr' = 0.5 exceeds lr = 0.1"):
        Config.from_dict({"min_lr": 0.5})
    with pytest.raises(ConfigError, match=r"'scale_range' = \[2.0, 1.0\] must be \[low, high\]"):
        Config.from_dict({"scale_range": [2, 1]})
    with pytest.raises(ConfigError, match=r"'erasing_area' = \[0.5, 0.1\] must be \[low, high\]") as e:
        Config.from_dict({"erasing_area": [0.5, 0.1]})
    assert e.value.key == "erasing_area"
    with pytest.raises(ConfigError, match=r"'erasing_area' = \[0.2\] must have 2 elements"):
        Config.from_dict({"erasing_area": [0.2]})
    with pytest.raises(ConfigError, match=r"auto_augment = 'cifar' is not one of '', cifar10, rand, trivial; "
                                          r"did you mean 'cifar10'"):
        Config.from_dict({"auto_augment": "cifar"})
    with pytest.raises(ConfigError, match=r"'ema' = 1.0 is outside .* \[in runs\[1\]\]"):
        expand_runs({"runs": [{"name": "a"}, {"name": "b", "ema": 1}]}, profile="cpu")
    for raw in ({"cpu": 3}, {"runs": [{"name": "a", "gpu": [1]}]}):
        with pytest.raises(ConfigError, match="must be a table of overrides"):
            expand_runs(raw, profile="cpu")
    # what stays legal: the boundaries and the "off" values
    c = Config.from_dict({"ema": 0.0, "momentum": 0.0, "threads": 0, "subset": 0, "clip_grad": 0, "lr": 1e-9,
                          "epochs": 2.0, "gamma": 1, "warmup_start": 1, "rotate": 180, "crop_size": [8, 8],
                          "rand_augment_n": 4, "rand_augment_m": 0, "erasing": 1, "erasing_area": [0.3, 0.3],
                          "drop_block_ramp": 1, "disturb_label": 0.0, "tsla_until": 0})
    assert (c.epochs, c.gamma, c.crop_size) == (2, 1.0, [8, 8])


def test_choices_are_derived_from_the_schema_and_datasets_match_data():
    assert CHOICES["optimizer"] == ("sgd", "adamw") and CHOICES["deploy"] == ("", "fuse", "remove_residuals")
    assert set(CHOICES) >= {"optimizer", "schedule", "device", "task", "amp", "deploy", "dataset"}
    from operad.experiments.data import DATASETS
    assert set(SCHEMA["dataset"].choices) == set(DATASETS)
    # every key is declared with a doc, and every number (or list of numbers) with a range
    for spec in SCHEMA.values():
        assert spec.doc, spec.name
        if spec.kind in (int, float) or spec.item in (int, float):
            assert spec.range is not None, spec.name


@pytest.mark.parametrize("name", ["", "  ", ".", "..", "/abs", "a/b", "a\\b", "../up", "x\0y"])
def test_bad_run_names(name):
    with pytest.raises(ConfigError, match=r"^name (is empty|.* is not a plain folder name)") as e:
        Config.from_dict({"name": name})
    assert e.value.key == "name"
    with pytest.raises(ConfigError, match=r"^name (is empty|.* is not a plain folder name)"):
        validate_name(name)


def test_overrides_parse_by_declared_type():
    ov = parse_overrides(["name=nan", "experiment=1e3", "lr=1e-3", "epochs=3", "max_steps=1e3", "flip=0",
                          "nesterov=TRUE", "betas=[0.8, 0.9]", "milestones=0.3,0.6", "robustness=jpeg,shift",
                          "crop_size=[16, 24]", 'model_args={"width": 8}', 'data_root="/my data"',
                          "claim=it's fine", "cpu.name=inf", "gpu.epochs=200", "model_args.depth=3"])
    assert ov == {"name": "nan", "experiment": "1e3", "lr": 0.001, "epochs": 3, "max_steps": 1000, "flip": False,
                  "nesterov": True, "betas": [0.8, 0.9], "milestones": [0.3, 0.6], "robustness": ["jpeg", "shift"],
                  "crop_size": [16, 24], "model_args": {"width": 8, "depth": 3}, "data_root": "/my data",
                  "claim": "it's fine", "cpu": {"name": "inf"}, "gpu": {"epochs": 200}}
    assert isinstance(ov["lr"], float) and isinstance(ov["epochs"], int)
    cfg = expand_runs({"model_expr": EXPR}, ov, profile="cpu")[0]
    assert (cfg.name, cfg.experiment, cfg.lr) == ("inf", "1e3", 0.001)
    for bad, key in [("epochs=2.5", "epochs"), ("epochs=three", "epochs"), ("flip=maybe", "flip"),
                     ("lr=fast", "lr"), ("betas=[0.9, x]", "betas"), ("crop_size=1.5,2", "crop_size"),
                     ("model_args=[1]", "model_args")]:
        with pytest.raises(ConfigError, match=f"config key '{key}' expects") as e:
            parse_overrides([bad])
        assert e.value.key == key
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="outside its allowed range"):  # parsed, then range-checked at load
        expand_runs({}, parse_overrides(["lr=nan"]), profile="cpu")


def test_config_docstrings_run():
    res = doctest.testmod(importlib.import_module("operad.experiments.config"))
    assert res.failed == 0 and res.attempted >= 10


# ----------------------------------------------------------------------------- fault test

def _bad_values(spec) -> st.SearchStrategy:
    """Values of the wrong type, or of the right type out of ``spec``'s range, choices or lengths."""
    wrong = {bool: st.sampled_from([2, "yes", 1.0, [True]]),
             int: st.one_of(st.sampled_from(["3", True, [1], math.nan]),
                            st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())),
             float: st.sampled_from(["0.1", False, None, [0.5]]),
             str: st.sampled_from([3, 1.5, True, ["a"]]),
             list: st.sampled_from([3, "x", {"a": 1}]),
             dict: st.sampled_from([[1], "x", 3])}[spec.kind]
    out = [wrong]
    rng = spec.range
    if rng is not None:
        kind = spec.item or spec.kind
        lo = [rng.lo] if not rng.lo_closed else []
        hi = [rng.hi] if not rng.hi_closed else []
        below = st.floats(max_value=rng.lo, exclude_max=rng.lo_closed, allow_nan=False) if rng.lo > -math.inf else None
        above = st.floats(min_value=rng.hi, exclude_min=rng.hi_closed, allow_nan=False) if rng.hi < math.inf else None
        nums = [s for s in (below, above) if s is not None] + [st.sampled_from(lo + hi)] * bool(lo + hi)
        num = st.one_of(nums) if nums else st.nothing()
        if kind is int:
            num = num.filter(lambda f: math.isfinite(f) and abs(f) < 1e300) \
                .map(lambda f: math.floor(f) if f < rng.lo else math.ceil(f)).filter(lambda v: v not in rng)
        else:
            num = st.one_of(num, st.just(math.nan))
        if spec.kind is list:
            n = spec.lengths[-1] if spec.lengths else 2
            num = num.map(lambda v: [v] * max(n, 1))
        out.append(num)
    if spec.choices:
        text = st.text(max_size=8).filter(lambda s: s not in spec.choices)
        out.append(text.map(lambda s: [s]) if spec.kind is list else text)
    if spec.lengths:
        good = {int: 8, float: 0.5}.get(spec.item, "x")
        out.append(st.sampled_from([n for n in range(5) if n not in spec.lengths]).map(lambda n: [good] * n))
    if spec.name == "name":
        out.append(st.sampled_from(["", ".", "..", "/tmp/x", "a/b"]))
    return st.one_of(out)


@pytest.mark.parametrize("key", sorted(SCHEMA))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fault_one_bad_key_is_a_config_error_before_any_data_loads(monkeypatch, tmp_path, key, data):
    """Every key of the schema, mutated out of its type, range, choices or lengths."""
    value = data.draw(_bad_values(SCHEMA[key]), label=key)
    data = importlib.import_module("operad.experiments.data")
    train = importlib.import_module("operad.experiments.train")

    def no_data(*a, **k):
        raise AssertionError(f"data was read although {key} = {value!r} is invalid")

    monkeypatch.setattr(data, "load_dataset", no_data)
    monkeypatch.setattr(train, "load_dataset", no_data, raising=False)
    raw = {"model_expr": EXPR, "data_root": str(tmp_path / "no-such-dir"), "out_dir": str(tmp_path / "runs"),
           "epochs": 1, key: value}
    with pytest.raises(ConfigError) as e:
        train.train(raw, profile="cpu")
    assert e.value.key == key and key in str(e.value), str(e.value)
    assert not (tmp_path / "runs").exists()
