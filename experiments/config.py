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

Every key is declared once, on one line of :class:`Config`: its type (the
annotation), its default, and with :func:`setting` its allowed range (an
interval such as ``"(0, inf)"``, applied to each element of a list), its
choices and a one-line doc. Values are checked when the config loads, before
any data is read::

    >>> Config.from_dict({"lr": 0})
    Traceback (most recent call last):
    ...
    operad.experiments.config.ConfigError: config key 'lr' = 0.0 is outside its allowed range (0, inf) (learning rate (peak of the schedule))
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "ConfigError", "load_config", "expand_runs", "parse_overrides", "dump_toml", "SCHEMA",
           "KeySpec", "Interval", "setting", "validate_name", "parse_value"]


from operad.operators.algebra.errors import OperadError


class ConfigError(OperadError, ValueError):
    """A config key or value is invalid. ``key`` names the offending key (None when none applies)."""

    def __init__(self, message: str, key: Optional[str] = None):
        super().__init__(message)
        self.key = key


ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "lr_schedule": "schedule", "scheduler": "schedule",
           "optim": "optimizer", "arch": "model", "architecture": "model", "bs": "batch_size",
           "num_epochs": "epochs", "n_epochs": "epochs", "data": "data_root", "data_dir": "data_root",
           "expr": "model_expr", "expression": "model_expr", "workers": "threads", "num_threads": "threads",
           "smoothing": "label_smoothing", "grad_clip": "clip_grad", "max_grad_norm": "clip_grad",
           "warmup": "warmup_epochs", "output_dir": "out_dir", "run_name": "name"}


# ----------------------------------------------------------------------------- the schema language

@dataclass(frozen=True)
class Interval:
    """A closed, open or half-open interval of numbers, written as in maths.

    >>> i = Interval.parse("[0, 1)")
    >>> (0 in i, 1 in i, float("nan") in i, str(i))
    (True, False, False, '[0, 1)')
    """

    lo: float
    hi: float
    lo_closed: bool
    hi_closed: bool

    @classmethod
    def parse(cls, s: str) -> "Interval":
        s = s.strip()
        if len(s) < 5 or s[0] not in "[(" or s[-1] not in "])" or "," not in s:
            raise ValueError(f"an interval looks like '[0, 1)' or '(0, inf)'; got {s!r}")
        lo, hi = (float(v) for v in s[1:-1].split(","))
        return cls(lo, hi, s[0] == "[", s[-1] == "]")

    def __contains__(self, v: float) -> bool:
        if isinstance(v, float) and math.isnan(v):
            return False
        above = v >= self.lo if self.lo_closed else v > self.lo
        below = v <= self.hi if self.hi_closed else v < self.hi
        return above and below

    def __str__(self) -> str:
        num = lambda v: "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"
        return f"{'[' if self.lo_closed else '('}{num(self.lo)}, {num(self.hi)}{']' if self.hi_closed else ')'}"


@dataclass(frozen=True)
class KeySpec:
    """What one config key accepts: ``kind`` (bool, int, float, str, list, dict),
    ``item`` (the element type of a list), ``range`` (for numbers, and for each
    number of a list), ``choices`` (for strings, and for each string of a list),
    ``lengths`` (allowed list lengths) and ``doc``."""

    name: str
    kind: type
    item: Optional[type] = None
    range: Optional[Interval] = None
    choices: Tuple[Any, ...] = ()
    lengths: Tuple[int, ...] = ()
    doc: str = ""

    def check(self, v: Any, where: str = "config") -> None:
        """Raise :class:`ConfigError` naming this key if ``v`` (already of the right type) is out of range."""
        sfx = _where(where)
        about = f" ({self.doc})" if self.doc else ""
        if self.kind is list:
            if self.lengths and len(v) not in self.lengths:
                n = " or ".join(str(n) for n in self.lengths)
                raise ConfigError(f"config key {self.name!r} = {v!r} must have {n} elements{about}{sfx}", self.name)
            for x in v:
                self._check_one(x, v, sfx, about)
        elif self.kind in (int, float, str):
            self._check_one(v, v, sfx, about)

    def _check_one(self, x: Any, whole: Any, sfx: str, about: str) -> None:
        what = f"config key {self.name!r} = {whole!r}" + (f" (element {x!r})" if whole is not x else "")
        if self.range is not None and x not in self.range:
            raise ConfigError(f"{what} is outside its allowed range {self.range}{about}{sfx}", self.name)
        if self.choices and x not in self.choices:
            close = difflib.get_close_matches(str(x), [str(c) for c in self.choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            allowed = ", ".join(repr(c) if c == "" else str(c) for c in self.choices)
            raise ConfigError(f"{self.name} = {x!r} is not one of {allowed}{hint}{sfx}", self.name)


def setting(default: Any, range: str = "", doc: str = "", choices: Sequence[Any] = (),
            lengths: Sequence[int] = ()) -> Any:
    """Declare a config key's default, allowed range or choices and doc (one line per key).

    >>> @dataclass
    ... class C:
    ...     lr: float = setting(0.1, "(0, inf)", "learning rate")
    >>> fields(C)[0].metadata["range"]
    Interval(lo=0.0, hi=inf, lo_closed=False, hi_closed=False)
    """
    meta = {"range": Interval.parse(range) if range else None, "doc": doc, "choices": tuple(choices),
            "lengths": tuple(lengths)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _where(where: str) -> str:
    return f" [in {where}]" if where != "config" else ""


INF = "inf"
POS = "(0, inf)"      # a positive number
NONNEG = "[0, inf)"   # zero or more (0 usually means "off")
COUNT = "[1, inf)"    # one or more
UNIT = "[0, 1)"       # a fraction below one
FINITE = "(-inf, inf)"


# ----------------------------------------------------------------------------- the keys

@dataclass
class Config:
    """Every key of a run, one line each: type, default, allowed range or choices, doc.
    ``model`` names a registered model; ``model_expr`` is an expression over
    ``ops`` instead (e.g. ``"ops.conv(16) >> ops.relu() >> ops.global_pool() >> ops.linear(10)"``).
    To add a key, add one line here (and use it in :mod:`operad.experiments.train`)."""

    # identity
    name: str = setting("run", doc="run name: the folder under out_dir (no path separators)")
    experiment: str = setting("", doc="experiment this run belongs to (default: the config file's name)")
    claim: str = setting("", doc="the claim the experiment tests, one sentence")
    out_dir: str = setting("runs", doc="folder that holds the run folders")
    seed: int = setting(0, "[0, 1e18]", "random seed")
    # model
    model: str = setting("", doc="a registered model name (operad list)")
    model_expr: str = setting("", doc="an expression over ops, instead of model")
    model_args: Dict[str, Any] = setting({}, doc="keyword arguments for create_model")
    recipe: str = setting("", doc="a training recipe of its own instead of the engine (operad.experiments.speedrun)",
                          choices=("", "speedrun"))
    recipe_args: Dict[str, Any] = setting({}, doc="settings of the recipe")
    prune: Dict[str, Any] = setting({}, doc="after training, rounds of pruning and fine-tuning: rounds, macs or "
                                            "amount, importance, epochs, lr, batches, round_to "
                                            "(operad.experiments.pruning)")
    # data
    dataset: str = setting("cifar10", doc="data set", choices=("cifar10", "cifar100", "camvid", "voc", "coco"))
    data_root: str = setting("", doc="data folder (default $OPERAD_DATA, then ./data)")
    subset: int = setting(0, NONNEG, "first N training images per class (0: all)")
    val_subset: int = setting(0, NONNEG, "first N validation images per class (0: all)")
    download: bool = setting(False, doc="download the data set if missing")
    task: str = setting("auto", doc="what the model predicts", choices=("auto", "classification", "segmentation", "detection"))
    # optimisation
    epochs: int = setting(10, COUNT, "training epochs")
    max_steps: int = setting(0, NONNEG, "stop after this many steps (0: epochs decide)")
    batch_size: int = setting(128, COUNT, "training batch size (over all processes)")
    eval_batch_size: int = setting(256, COUNT, "evaluation batch size")
    optimizer: str = setting("sgd", doc="optimizer", choices=("sgd", "adamw"))
    lr: float = setting(0.1, POS, "learning rate (peak of the schedule)")
    momentum: float = setting(0.9, UNIT, "SGD momentum")
    nesterov: bool = setting(True, doc="Nesterov momentum (SGD)")
    betas: List[float] = setting([0.9, 0.999], UNIT, "AdamW betas", lengths=(2,))
    weight_decay: float = setting(5e-4, NONNEG, "weight decay")
    decay_norm_and_bias: bool = setting(False, doc="apply weight decay to norm weights and biases too")
    schedule: str = setting("cosine", doc="learning-rate schedule", choices=("cosine", "step", "onecycle", "constant"))
    warmup_epochs: float = setting(0.0, NONNEG, "linear warm-up length in epochs")
    warmup_start: float = setting(0.1, "[0, 1]", "warm-up starts at this fraction of lr")
    min_lr: float = setting(0.0, NONNEG, "final learning rate of the cosine schedule (at most lr)")
    milestones: List[float] = setting([0.5, 0.75], POS, "step schedule: fractions of training (<= 1) or epochs")
    gamma: float = setting(0.1, POS, "step schedule: factor at each milestone (> 1 raises the lr)")
    onecycle_pct: float = setting(0.3, "(0, 1)", "onecycle schedule: fraction of steps spent warming up")
    clip_grad: float = setting(0.0, NONNEG, "clip the gradient norm to this (0: off)")
    ema: float = setting(0.0, UNIT, "decay of an exponential moving average of the weights (0: off)")
    label_smoothing: float = setting(0.0, UNIT, "label smoothing")
    # augmentation
    crop_padding: int = setting(4, NONNEG, "random crop with this much zero padding (0: off)")
    flip: bool = setting(True, doc="random horizontal flips")
    cutout: int = setting(0, NONNEG, "side of the cutout square in pixels (0: off)")
    rotate: float = setting(0.0, "[0, 180]", "random rotation by up to this many degrees")
    mixup: float = setting(0.0, NONNEG, "mixup Beta alpha (0: off)")
    cutmix: float = setting(0.0, NONNEG, "CutMix Beta alpha (0: off)")
    scale_range: List[float] = setting([1.0, 1.0], POS, "segmentation: random scale [low, high]", lengths=(2,))
    crop_size: List[int] = setting([], COUNT, "segmentation: random crop [height, width] (empty: none)",
                                   lengths=(0, 2))
    box_scales: List[float] = setting([], "(0, 1]", "detection: default-box scales [smallest, largest] over the "
                                      "levels (SSD's s_min, s_max; empty: 0.2, 0.95)", lengths=(0, 2))
    # regularization (issue 19: experiments/regularization.py, experiments/autoaugment.py)
    auto_augment: str = setting("", doc="augmentation policy on the uint8 batch: AutoAugment's CIFAR-10 policy, "
                                "RandAugment, TrivialAugmentWide ('': off)", choices=("", "cifar10", "rand", "trivial"))
    rand_augment_n: int = setting(2, "[1, 4]", "RandAugment: operations per image")
    rand_augment_m: int = setting(9, "[0, 30]", "RandAugment: magnitude bin of 31")
    erasing: float = setting(0.0, "[0, 1]", "RandomErasing probability per image (0: off)")
    erasing_area: List[float] = setting([0.02, 0.4], "(0, 1)", "RandomErasing: erased fraction [low, high]",
                                        lengths=(2,))
    tsla_until: float = setting(0.0, NONNEG, "TSLA: label_smoothing before this epoch, hard labels after (0: off)")
    disturb_label: float = setting(0.0, UNIT, "DisturbLabel: rate of labels replaced by a uniform class (0: off)")
    drop_block_ramp: float = setting(0.0, "[0, 1]", "DropBlock p rises linearly over this fraction of training "
                                     "(0: off)")
    # engine
    device: str = setting("auto", doc="device", choices=("auto", "cpu", "cuda", "mps"))
    amp: str = setting("auto", doc="mixed precision", choices=("auto", "off", "bf16", "fp16"))
    channels_last: bool = setting(True, doc="channels_last memory format")
    compile: bool = setting(False, doc="torch.compile the model")
    threads: int = setting(0, NONNEG, "CPU threads (0: automatic)")
    deterministic: bool = setting(False, doc="deterministic algorithms")
    log_every: int = setting(50, COUNT, "log the training loss every N steps")
    eval_every: int = setting(1, COUNT, "evaluate every N epochs")
    checkpoint_every: int = setting(0, NONNEG, "also checkpoint every N steps (0: at epoch ends only)")
    plot_every: int = setting(1, NONNEG, "redraw the curves every N epochs (0: at the end only)")
    progress: bool = setting(True, doc="progress bars")
    # after training
    robustness: List[str] = setting([], doc="robustness sweeps after training", choices=("jpeg", "shift", "rotation"))
    rotation_angles: List[float] = setting([0, 15, 30, 45, 60, 90, 135, 180], FINITE, "angles of the rotation sweep")
    measure_speed: bool = setting(False, doc="time training and inference")
    deploy: str = setting("", doc="rewrite the trained model, check and time it",
                          choices=("", "fuse", "remove_residuals"))

    # ------------------------------------------------------------------ construction
    @classmethod
    def keys(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "config") -> "Config":
        """Validate and convert a flat mapping: unknown keys, wrong types and
        values out of range are :class:`ConfigError` naming the key."""
        c = cls()
        for k, v in d.items():
            c = c.with_value(k, v, where)
        c.validate(where)
        return c

    def with_value(self, key: str, value: Any, where: str = "config") -> "Config":
        """A copy with ``key`` set to ``value``, type- and range-checked."""
        spec = _spec(key, where)
        v = _coerce(spec, value, where)
        spec.check(v, where)
        return dataclasses.replace(self, **{key: v})

    def validate(self, where: str = "config") -> None:
        """Check every key's range and the rules that tie keys together."""
        for spec in SCHEMA.values():
            spec.check(getattr(self, spec.name), where)
        validate_name(self.name, where)
        sfx = _where(where)
        if self.model and self.model_expr:
            raise ConfigError("set either model (a registered name) or model_expr (an expression), not both" + sfx,
                              "model_expr")
        if self.min_lr > self.lr:
            raise ConfigError(f"config key 'min_lr' = {self.min_lr!r} exceeds lr = {self.lr!r}; "
                              f"min_lr must be in [0, lr]{sfx}", "min_lr")
        if self.scale_range[0] > self.scale_range[1]:
            raise ConfigError(f"config key 'scale_range' = {self.scale_range!r} must be [low, high] "
                              f"with low <= high{sfx}", "scale_range")
        if self.box_scales and self.box_scales[0] >= self.box_scales[1]:
            raise ConfigError(f"config key 'box_scales' = {self.box_scales!r} must be [smallest, largest] "
                              f"with smallest < largest{sfx}", "box_scales")
        if self.erasing_area[0] > self.erasing_area[1]:
            raise ConfigError(f"config key 'erasing_area' = {self.erasing_area!r} must be [low, high] "
                              f"with low <= high{sfx}", "erasing_area")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def validate_name(name: Any, where: str = "config") -> str:
    """Check a run name: one plain folder name (not empty, not absolute, not
    ``.`` or ``..``, no path separators); the rules are
    :func:`operad.experiments.run_dir.check_run_name`'s. Returns the name;
    raises :class:`ConfigError` with ``key="name"``.

    >>> validate_name("resnet20-a")
    'resnet20-a'
    >>> validate_name("../x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    operad.experiments.config.ConfigError: name '../x' is not a plain folder name: ...
    """
    from operad.experiments.run_dir import check_run_name  # run_dir imports this module

    try:
        check_run_name(name)
    except ConfigError as e:
        raise ConfigError(f"{e}{_where(where)}", "name") from None
    return name


def _build_schema() -> Dict[str, KeySpec]:
    hints = typing.get_type_hints(Config)
    out = {}
    for f in fields(Config):
        h = hints[f.name]
        origin = typing.get_origin(h) or h
        kind = {list: list, dict: dict}.get(origin, origin)
        item = typing.get_args(h)[0] if kind is list else None
        m = f.metadata
        out[f.name] = KeySpec(f.name, kind, item, m.get("range"), m.get("choices", ()), m.get("lengths", ()),
                              m.get("doc", ""))
    return out


#: every key's :class:`KeySpec`, in declaration order
SCHEMA: Dict[str, KeySpec] = _build_schema()
#: the keys that take one of a fixed set of strings (derived from the schema)
CHOICES: Dict[str, Tuple[Any, ...]] = {k: s.choices for k, s in SCHEMA.items() if s.choices and s.kind is str}


def _spec(key: str, where: str = "config") -> KeySpec:
    if key in SCHEMA:
        return SCHEMA[key]
    valid = list(SCHEMA)
    close = [ALIASES[key.lower()]] if key.lower() in ALIASES else \
        difflib.get_close_matches(key, valid + ["cpu", "gpu", "runs"], n=1, cutoff=0.5)
    if not close:
        close = [ALIASES[a] for a in difflib.get_close_matches(key.lower(), list(ALIASES), n=1, cutoff=0.7)]
    hint = f"; did you mean {close[0]!r}?" if close else f" (valid keys: {', '.join(valid)})"
    raise ConfigError(f"unknown config key {key!r}{hint}{_where(where)}", key)


# ----------------------------------------------------------------------------- types

_EXPECT = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
           dict: "a table"}


def _coerce(spec: KeySpec, v: Any, where: str) -> Any:
    """``v`` as ``spec.kind`` (ints for floats, integral floats for ints); else a ConfigError."""
    if spec.kind is list:
        if not isinstance(v, (list, tuple)):
            raise _bad(spec, v, where)
        return [_coerce_scalar(spec, spec.item, x, where, v) for x in v]
    if spec.kind is dict:
        if not isinstance(v, dict):
            raise _bad(spec, v, where, "a table (TOML) or JSON object")
        return dict(v)
    return _coerce_scalar(spec, spec.kind, v, where)


def _coerce_scalar(spec: KeySpec, kind: type, v: Any, where: str, whole: Any = None) -> Any:
    if kind is bool and isinstance(v, bool):
        return v
    if kind is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if kind is int and isinstance(v, float) and v.is_integer():
        return int(v)
    if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if kind is str and isinstance(v, str):
        return v
    if kind is Any:
        return v
    raise _bad(spec, v if whole is None else whole, where, (_EXPECT[kind] if whole is None else
                                                             f"a list of {_EXPECT[kind].replace('an ', '').replace('a ', '')}s"))


def _bad(spec: KeySpec, v: Any, where: str, expect: Optional[str] = None) -> ConfigError:
    return ConfigError(f"config key {spec.name!r} expects {expect or _EXPECT[spec.kind]}, got {v!r}"
                       f" ({type(v).__name__}){_where(where)}", spec.name)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_value(key: str, text: str) -> Any:
    """A command-line value read by the declared type of ``key``: strings stay
    strings (``name=nan``, ``name=1e3``), numbers, bools (true/false/1/0) and
    lists (``[0.9, 0.99]`` or ``0.9,0.99``) are parsed; tables are JSON or TOML.

    >>> parse_value("name", "1e3"), parse_value("lr", "1e-3"), parse_value("epochs", "3"), parse_value("flip", "0")
    ('1e3', 0.001, 3, False)
    """
    spec = _spec(key)
    text = text.strip()
    if spec.kind is list:
        if text.startswith("["):
            v = _toml_or_none(text)
            if not isinstance(v, list):
                raise _bad(spec, text, "command line")
            return _coerce(spec, v, "command line")
        parts = [s.strip() for s in text.split(",") if s.strip()]
        return [_parse_scalar(spec, spec.item, s, text) for s in parts]
    if spec.kind is dict:
        for load in (json.loads, lambda s: tomllib.loads(f"v = {s}")["v"]):
            try:
                v = load(text)
            except (ValueError, tomllib.TOMLDecodeError):
                continue
            if isinstance(v, dict):
                return v
        raise _bad(spec, text, "command line", "a table (TOML) or JSON object")
    return _parse_scalar(spec, spec.kind, text, text)


def _parse_scalar(spec: KeySpec, kind: type, s: str, whole: str) -> Any:
    if kind is str or kind is Any:
        if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
            v = _toml_or_none(s)
            return v if isinstance(v, str) else s[1:-1]
        return s
    if kind is bool:
        if s.lower() in _TRUE + _FALSE:
            return s.lower() in _TRUE
    elif kind is int:
        try:
            return int(s.replace("_", ""))
        except ValueError:
            try:
                f = float(s)
                if f.is_integer():
                    return int(f)
            except (ValueError, OverflowError):
                pass
    elif kind is float:
        try:
            return float(s.replace("_", ""))
        except ValueError:
            pass
    expect = _EXPECT[kind] if whole is s else f"a list of {_EXPECT[kind].replace('an ', '').replace('a ', '')}s"
    raise ConfigError(f"config key {spec.name!r} expects {expect}, got {whole!r} [on the command line]", spec.name)


def _toml_or_none(s: str) -> Any:
    try:
        return tomllib.loads(f"v = {s}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def _auto(s: str) -> Any:
    """Parse a command-line value of an undeclared key (``model_args.*``) as TOML would."""
    v = _toml_or_none(s)
    return s.strip("\"'") if v is None else v


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``["lr=0.05", "model_args.width=32", "cpu.epochs=1"]`` -> nested dict,
    each value parsed by its key's declared type (:func:`parse_value`).

    >>> parse_overrides(["lr=0.05", "model_args.width=32", "flip=false", "name=nan"])
    {'lr': 0.05, 'model_args': {'width': 32}, 'flip': False, 'name': 'nan'}
    """
    out: Dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"override {it!r} is not key=value")
        k, v = it.split("=", 1)
        parts = k.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {it!r} has an empty key part")
        key = parts[1:] if parts[0] in ("cpu", "gpu") and len(parts) > 1 else parts
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise ConfigError(f"override {it!r} sets a part of {p!r}, which is not a table")
        d[parts[-1]] = parse_value(key[0], v) if len(key) == 1 and key[0] in SCHEMA else _auto(v.strip())
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
        bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
        here = os.path.join(bundled, path)
        for cand in (here, here + ".toml"):
            if os.path.isfile(cand) and not os.path.isabs(path):
                path = cand
                break
        else:
            raise ConfigError(f"config file {source} not found (nor among the bundled configs in {bundled})")
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
        raise ConfigError("runs must be an array of tables ([[runs]])", "runs")
    for where, tabs in (("config", tables), ("command line", ov_tables)):
        for p, tab in tabs.items():
            if not isinstance(tab, dict):
                raise ConfigError(f"{p} must be a table of overrides ([{p}]); got {tab!r} [in {where}]", p)
    device = overrides.get("device", raw.get("device", "auto"))
    profile = profile or resolve_profile(str(device))
    if profile not in ("cpu", "gpu"):
        raise ConfigError(f"profile must be cpu or gpu, got {profile!r}")
    out = []
    names = set()
    for i, run in enumerate(runs):
        run = dict(run)
        run_tables = {p: run.pop(p, {}) for p in ("cpu", "gpu")}
        for p, tab in run_tables.items():
            if not isinstance(tab, dict):
                raise ConfigError(f"{p} must be a table of overrides; got {tab!r} [in runs[{i}]]", p)
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
