"""What a resumed run may change: its config against the checkpoint's.

``operad train cfg.toml --resume lr=0.01`` continues a run with a lower
learning rate; ``--resume batch_size=64`` would continue a different
experiment, so it is refused, naming every key that differs. Keys in
``CHANGEABLE`` take effect from the resumed step (the LR schedule is rescaled
to the new ``lr``, optimiser hyper-parameters are written into the restored
optimiser); every other key must equal the checkpoint's.

    >>> from operad.experiments.config import Config
    >>> old = Config(model="resnet20", lr=0.1).to_dict()
    >>> resume_changes(old, Config(model="resnet20", lr=0.01, epochs=20))
    {'epochs': (10, 20), 'lr': (0.1, 0.01)}
    >>> resume_changes(old, Config(model="resnet56", batch_size=64))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    operad.experiments.config.ConfigError: --resume cannot change batch_size (128 in the checkpoint, 64 now), model ('resnet20' in the checkpoint, 'resnet56' now): ...
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from operad.experiments.config import Config, ConfigError

__all__ = ["CHANGEABLE", "SCHEDULE_KEYS", "OPTIMIZER_KEYS", "resume_changes"]

# the LR schedule (rescaled at the resumed step when any of these changes)
SCHEDULE_KEYS = frozenset({"lr", "epochs", "max_steps", "schedule", "warmup_epochs", "warmup_start", "min_lr",
                           "milestones", "gamma", "onecycle_pct"})
# optimiser hyper-parameters (written into the restored optimiser's parameter groups)
OPTIMIZER_KEYS = frozenset({"momentum", "nesterov", "weight_decay", "betas"})
CHANGEABLE = SCHEDULE_KEYS | OPTIMIZER_KEYS | frozenset({
    # read at every step
    "clip_grad", "label_smoothing",
    # where the run and its data lie, and what it is called in tables
    "name", "out_dir", "data_root", "download", "experiment", "claim",
    # engine: how, not what, is computed
    "device", "amp", "channels_last", "compile", "threads", "deterministic", "progress",
    # logging, evaluation, checkpoints, plots
    "log_every", "eval_every", "eval_batch_size", "checkpoint_every", "plot_every",
    # after training
    "robustness", "rotation_angles", "measure_speed", "deploy",
})
# Not changeable, like the other augmentation keys and the model: the regularization
# keys (auto_augment, rand_augment_n, rand_augment_m, erasing, erasing_area, tsla_until,
# disturb_label, drop_block_ramp) decide what data and labels the run trains on and
# how its network drops units, so they define the experiment.


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _norm(x)) for k, x in v.items()))
    return v


def resume_changes(saved: Mapping[str, Any], cfg: Config) -> Dict[str, Tuple[Any, Any]]:
    """``{key: (checkpoint's value, new value)}`` for every key that differs,
    sorted by key; a :class:`ConfigError` listing the keys that may not
    change (with both values) if any does. A key the checkpoint predates
    counts as its default."""
    default = Config()
    new = cfg.to_dict()
    diff: Dict[str, Tuple[Any, Any]] = {}
    for k in sorted(new):
        old = saved.get(k, getattr(default, k))
        if _norm(old) != _norm(new[k]):
            diff[k] = (old, new[k])
    fixed = {k: v for k, v in diff.items() if k not in CHANGEABLE}
    if fixed:
        what = ", ".join(f"{k} ({a!r} in the checkpoint, {b!r} now)" for k, (a, b) in fixed.items())
        raise ConfigError(
            f"--resume cannot change {what}: they define the experiment, so continuing would mix two. Set them "
            f"back to the checkpoint's values, or start a new run (another name=, or --overwrite). A resume may "
            f"change: {', '.join(sorted(CHANGEABLE))}")
    return diff
