"""Run configuration: a flat, typed set of keys, read from TOML and validated.

A config file holds top-level keys, optional ``[model_args]`` (keyword
arguments for ``create_model``), optional ``[cpu]`` / ``[gpu]`` tables applied
on that kind of device (the small CPU version and the full GPU version of an
experiment), and optional ``[[runs]]`` (one run per entry, each a table of
overrides, e.g. the two models of a comparison). An unknown key is an error
naming it and the closest valid key::

    >>> from operad.experiments.config import Config
    >>> Config.from_dict({"model": "resnet20", "epcohs": 3})
    Traceback (most recent call last):
    ...
    operad.experiments.config.ConfigError: unknown config key 'epcohs'; did you mean 'epochs'?
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "ConfigError", "load_config", "expand_runs", "parse_overrides", "dump_toml"]


class ConfigError(ValueError):
    """A config key or value is invalid."""


ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "lr_schedule": "schedule", "scheduler": "schedule",
           "optim": "optimizer", "arch": "model", "architecture": "model", "bs": "batch_size",
           "num_epochs": "epochs", "n_epochs": "epochs", "data": "data_root", "data_dir": "data_root",
           "expr": "model_expr", "expression": "model_expr", "workers": "threads", "num_threads": "threads",
           "smoothing": "label_smoothing", "grad_clip": "clip_grad", "max_grad_norm": "clip_grad",
           "warmup": "warmup_epochs", "output_dir": "out_dir", "run_name": "name"}

CHOICES = {
    "optimizer": ("sgd", "adamw"),
    "schedule": ("cosine", "step", "onecycle", "constant"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "task": ("auto", "classification", "segmentation"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "deploy": ("", "fuse", "remove_residuals"),
}


@dataclass
class Config:
    """Every key of a run. ``model`` names a registered model; ``model_expr``
    is an expression over ``ops`` instead (e.g. ``"ops.conv(16) >> ops.relu()
    >> ops.global_pool() >> ops.linear(10)"``)."""

    # identity
    name: str = "run"
    experiment: str = ""
    claim: str = ""
    out_dir: str = "runs"
    seed: int = 0
    # model
    model: str = ""
    model_expr: str = ""
    model_args: Dict[str, Any] = field(default_factory=dict)
    # data
    dataset: str = "cifar10"
    data_root: str = ""
    subset: int = 0
    val_subset: int = 0
    download: bool = False
    task: str = "auto"
    # optimisation
    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 128
    eval_batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_start: float = 0.1
    min_lr: float = 0.0
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    onecycle_pct: float = 0.3
    clip_grad: float = 0.0
    ema: float = 0.0
    label_smoothing: float = 0.0
    # augmentation
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0
    rotate: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    scale_range: List[float] = field(default_factory=lambda: [1.0, 1.0])
    crop_size: List[int] = field(default_factory=list)
    # engine
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    threads: int = 0
    deterministic: bool = False
    log_every: int = 50
    eval_every: int = 1
    checkpoint_every: int = 0
    plot_every: int = 1
    progress: bool = True
    # after training
    robustness: List[str] = field(default_factory=list)
    rotation_angles: List[float] = field(default_factory=lambda: [0, 15, 30, 45, 60, 90, 135, 180])
    measure_speed: bool = False
    deploy: str = ""  # "fuse" or "remove_residuals": rewrite the trained model, check and time it
    # --- regularization (issue 19; ranges checked by experiments/regularization.check_config) ---
    auto_augment: str = ""  # "" | "cifar10" (AutoAugment) | "rand" (RandAugment) | "trivial" (TrivialAugmentWide)
    rand_augment_n: int = 2  # RandAugment ops per image, [1, 4]
    rand_augment_m: int = 9  # RandAugment magnitude bin of 31, [0, 30]
    erasing: float = 0.0  # RandomErasing probability per image, [0, 1]
    erasing_area: List[float] = field(default_factory=lambda: [0.02, 0.4])  # erased fraction, 0 < lo <= hi < 1
    tsla_until: float = 0.0  # TSLA: label_smoothing before this epoch, hard labels after; >= 0, 0 = off
    disturb_label: float = 0.0  # DisturbLabel rate, [0, 1)
    drop_block_ramp: float = 0.0  # DropBlock p rises linearly over this fraction of training, [0, 1], 0 = off
    # --- end regularization ---

    # ------------------------------------------------------------------ construction
    @classmethod
    def keys(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "config") -> "Config":
        """Validate and convert a flat mapping (unknown keys and bad types are errors)."""
        c = cls()
        for k, v in d.items():
            c = c.with_value(k, v, where)
        c.validate()
        return c

    def with_value(self, key: str, value: Any, where: str = "config") -> "Config":
        valid = self.keys()
        if key not in valid:
            close = [ALIASES[key.lower()]] if key.lower() in ALIASES else \
                difflib.get_close_matches(key, valid + ["cpu", "gpu", "runs"], n=1, cutoff=0.5)
            if not close:
                close = [ALIASES[a] for a in difflib.get_close_matches(key.lower(), list(ALIASES), n=1, cutoff=0.7)]
            hint = f"; did you mean {close[0]!r}?" if close else f" (valid keys: {', '.join(valid)})"
            raise ConfigError(f"unknown config key {key!r}{hint}" + (f" [in {where}]" if where != "config" else ""))
        return dataclasses.replace(self, **{key: _coerce(key, value, getattr(Config(), key), where)})

    def validate(self) -> None:
        for k, choices in CHOICES.items():
            if getattr(self, k) not in choices:
                close = difflib.get_close_matches(str(getattr(self, k)), choices, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{k} = {getattr(self, k)!r} is not one of {', '.join(choices)}{hint}")
        if self.model and self.model_expr:
            raise ConfigError("set either model (a registered name) or model_expr (an expression), not both")
        for k in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"{k} must be positive, got {getattr(self, k)}")
        if len(self.betas) != 2 or len(self.scale_range) != 2:
            raise ConfigError("betas and scale_range take two numbers each")
        if self.crop_size and len(self.crop_size) != 2:
            raise ConfigError("crop_size takes [height, width]")
        for r in self.robustness:
            if r not in ("jpeg", "shift", "rotation"):
                raise ConfigError(f"robustness entry {r!r} is not one of jpeg, shift, rotation")
        from operad.experiments.regularization import check_config  # issue 19 keys
        check_config(self, ConfigError)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, v: Any, default: Any, where: str) -> Any:
    def bad(expect: str):
        return ConfigError(f"config key {key!r} expects {expect}, got {v!r} [{where}]")

    if isinstance(default, bool):
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return v.lower() in ("true", "1", "yes", "on")
        raise bad("true or false")
    if isinstance(default, int):
        if isinstance(v, bool):
            raise bad("an integer")
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(float(v)) if float(v).is_integer() else _raise(bad("an integer"))
            except ValueError:
                raise bad("an integer") from None
        raise bad("an integer")
    if isinstance(default, float):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                raise bad("a number") from None
        raise bad("a number")
    if isinstance(default, str):
        if isinstance(v, str):
            return v
        raise bad("a string")
    if isinstance(default, list):
        if isinstance(v, str):
            v = [s for s in v.strip("[]").split(",") if s.strip()]
            v = [_auto(s.strip()) for s in v]
        if not isinstance(v, (list, tuple)):
            raise bad("a list")
        return list(v)
    if isinstance(default, dict):
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                raise bad("a table (TOML) or JSON object") from None
        if not isinstance(v, dict):
            raise bad("a table")
        return dict(v)
    return v


def _raise(e):
    raise e


def _auto(s: str) -> Any:
    """Parse a command-line value as TOML would (number, bool, string)."""
    try:
        return tomllib.loads(f"v = {s}")["v"]
    except tomllib.TOMLDecodeError:
        return s.strip("\"'")


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``["lr=0.05", "model_args.width=32", "cpu.epochs=1"]`` -> nested dict.

    >>> parse_overrides(["lr=0.05", "model_args.width=32", "flip=false"])
    {'lr': 0.05, 'model_args': {'width': 32}, 'flip': False}
    """
    out: Dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"override {it!r} is not key=value")
        k, v = it.split("=", 1)
        parts = k.strip().split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = _auto(v.strip())
    return out


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(source: Union[str, os.PathLike, Dict[str, Any], "Config"]) -> Dict[str, Any]:
    """Read a TOML file (or take a dict) into a raw mapping; see :func:`expand_runs`."""
    if isinstance(source, Config):
        return source.to_dict()
    if isinstance(source, dict):
        return dict(source)
    path = os.fspath(source)
    if not os.path.isfile(path):
        here = os.path.join(os.path.dirname(__file__), "configs", path)
        for cand in (here, here + ".toml"):
            if os.path.isfile(cand):
                path = cand
                break
        else:
            raise ConfigError(f"config file {source} not found (nor in {os.path.dirname(here)})")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    raw.setdefault("experiment", os.path.splitext(os.path.basename(path))[0])
    return raw


def resolve_profile(device: str) -> str:
    """``"cpu"`` or ``"gpu"``: which override table applies for a device setting."""
    if device == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu" if device == "cpu" else "gpu"


def expand_runs(raw: Dict[str, Any], overrides: Optional[Dict[str, Any]] = None, profile: Optional[str] = None,
                only: Optional[Sequence[str]] = None) -> List[Config]:
    """Turn a raw config into validated :class:`Config` objects, one per
    ``[[runs]]`` entry (or one). Order of precedence, lowest first: top-level
    keys, the ``[cpu]``/``[gpu]`` table for ``profile``, the run's own keys,
    the run's own ``cpu``/``gpu`` table, then ``overrides`` (the command line).

    >>> cs = expand_runs({"epochs": 5, "cpu": {"epochs": 1}, "runs": [{"name": "a"}, {"name": "b", "lr": 0.01}]},
    ...                  profile="cpu")
    >>> [(c.name, c.epochs, c.lr) for c in cs]
    [('a', 1, 0.1), ('b', 1, 0.01)]
    """
    raw = dict(raw)
    overrides = dict(overrides or {})
    runs = raw.pop("runs", None) or [{}]
    tables = {p: raw.pop(p, {}) for p in ("cpu", "gpu")}
    ov_tables = {p: overrides.pop(p, {}) for p in ("cpu", "gpu")}
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError("runs must be an array of tables ([[runs]])")
    device = overrides.get("device", raw.get("device", "auto"))
    profile = profile or resolve_profile(str(device))
    if profile not in ("cpu", "gpu"):
        raise ConfigError(f"profile must be cpu or gpu, got {profile!r}")
    out = []
    names = set()
    for i, run in enumerate(runs):
        run = dict(run)
        run_tables = {p: run.pop(p, {}) for p in ("cpu", "gpu")}
        merged = _merge(_merge(_merge(_merge(raw, tables[profile]), run), run_tables[profile]),
                        _merge(overrides, ov_tables[profile]))
        if not run.get("name") and len(runs) > 1 and "name" not in overrides:
            merged["name"] = run.get("model") or f"run{i}"
        where = f"runs[{i}]" if len(runs) > 1 else "config"
        c = Config.from_dict(merged, where)
        if c.name in names:
            raise ConfigError(f"two runs are named {c.name!r}; give each [[runs]] entry a distinct name")
        names.add(c.name)
        out.append(c)
    if only:
        missing = [o for o in only if o not in names]
        if missing:
            close = difflib.get_close_matches(missing[0], list(names), n=1)
            raise ConfigError(f"no run named {missing[0]!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                              + f" (runs: {', '.join(sorted(names))})")
        out = [c for c in out if c.name in only]
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return {True: "nan"}.get(v != v, "inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def dump_toml(d: Dict[str, Any], header: str = "") -> str:
    """Write a flat mapping (plus sub-tables) as TOML that :mod:`tomllib` reads back.

    >>> tomllib.loads(dump_toml({"a": 1, "b": [1.5, "x"], "t": {"k": True}}))
    {'a': 1, 'b': [1.5, 'x'], 't': {'k': True}}
    """
    lines = [f"# {h}" for h in header.splitlines()]
    tables = {k: v for k, v in d.items() if isinstance(v, dict)}
    for k, v in d.items():
        if k not in tables:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in tables.items():
        lines.append(f"\n[{k}]")
        for kk, vv in v.items():
            lines.append(f"{json.dumps(str(kk))} = {_toml_value(vv)}")
    return "\n".join(lines) + "\n"
