"""Hierarchical pruning through the training engine: prune, fine-tune, repeat.

A config with a ``prune`` table trains its model as usual, then runs rounds:
each round scores the channels of the current model (by default with the
gradient-matrix analysis of :func:`operad.theory.redundancy`, re-estimated on
the model the last round left), removes them with :func:`operad.rewrite.prune`
and fine-tunes the smaller model as an ordinary run of the engine named
``<name>-prune<r>`` (checkpoints, curves, resume)::

    [prune]
    rounds = 3              # prune + fine-tune this many times
    macs = 0.4              # end with at most 40% of the multiply-adds (or amount = 0.2 per round,
                            # or neither with importance "grad_rank": each layer's estimated redundancy)
    importance = "grad_rank"
    epochs = 2              # fine-tuning epochs per round
    lr = 0.01               # fine-tuning learning rate (default: a tenth of lr)
    batches = 4             # batches of the training set the importance looks at
    round_to = 1

The base run's folder gets ``prune.json`` (params, MACs and accuracy after
every round) and ``prune.png`` (accuracy against MACs).

>>> prune_settings({"rounds": 2, "macs": 0.5})["importance"]
'grad_rank'
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from operad.experiments.config import Config, ConfigError

__all__ = ["prune_settings", "prune_rounds", "term_expr"]

_DEFAULTS: Dict[str, Any] = {"rounds": 1, "macs": None, "amount": None, "importance": "grad_rank", "epochs": 1,
                             "lr": None, "batches": 4, "round_to": 1}


def prune_settings(table: Dict[str, Any]) -> Dict[str, Any]:
    """The ``prune`` table of a config, checked, with defaults filled in.

    >>> prune_settings({"rounds": 0})
    Traceback (most recent call last):
    ...
    operad.experiments.config.ConfigError: prune.rounds must be an int >= 1; got 0
    """
    from operad.operators.rewrites.prune import IMPORTANCE

    unknown = sorted(set(table) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"prune has no setting {', '.join(unknown)}; the settings are {', '.join(_DEFAULTS)}")
    s = dict(_DEFAULTS, **table)

    def need(ok: bool, key: str, what: str):
        if not ok:
            raise ConfigError(f"prune.{key} must be {what}; got {s[key]!r}")

    for key, lo in (("rounds", 1), ("epochs", 0), ("batches", 1), ("round_to", 1)):
        need(isinstance(s[key], int) and not isinstance(s[key], bool) and s[key] >= lo, key, f"an int >= {lo}")
    for key, hi_ok in (("macs", True), ("amount", False)):
        if s[key] is not None:
            v = s[key]
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v and (v <= 1 if hi_ok else v < 1),
                 key, "a fraction in (0, 1]" if hi_ok else "a fraction in (0, 1)")
    if s["lr"] is not None:
        need(isinstance(s["lr"], (int, float)) and s["lr"] > 0, "lr", "a positive number")
    need(s["importance"] in IMPORTANCE, "importance", f"one of {', '.join(IMPORTANCE)}")
    if s["macs"] is not None and s["amount"] is not None:
        raise ConfigError("prune takes macs (a final multiply-add fraction) or amount (a fraction per round), not both")
    if s["macs"] is None and s["amount"] is None and s["importance"] != "grad_rank":
        raise ConfigError(f"prune with importance {s['importance']!r} needs macs or amount (only grad_rank "
                          f"chooses each layer's ratio itself)")
    return s


def term_expr(term) -> str:
    """``term`` as a model expression (``ops.``-prefixed) that parses back to it, or a
    :class:`ConfigError` naming why not; a pruned run stores its model this way.

    >>> from operad import ops
    >>> term_expr(ops.conv(8) >> ops.relu())
    'ops.conv(8) >> ops.relu()'
    """
    from operad.experiments.expr import parse_expr

    text = re.sub(r"(?<![\w.'\"])([A-Za-z_]\w*)\(", r"ops.\1(", repr(term))
    try:
        back = parse_expr(text)
    except ConfigError as e:
        raise ConfigError(f"the pruned model's expression does not parse back ({e}); pruning rounds need a model "
                          f"whose operators print as expressions") from None
    if back != term:
        raise ConfigError("the pruned model's expression parses to a different model; pruning rounds need a model "
                          "whose operators print as expressions")
    return text


def _importance_batches(cfg: Config, batches: int) -> List:
    """The first ``batches`` training batches, normalised, without augmentation."""
    from operad.experiments.augment import DeviceBatches
    from operad.experiments.data import load_dataset

    data = load_dataset(cfg.dataset, "train", cfg.data_root or None, cfg.subset or None, cfg.download)
    stream = DeviceBatches(data, min(cfg.batch_size, 64), "cpu", shuffle=True, seed=cfg.seed)
    out = []
    for x, y in stream.epoch(0):
        out.append((x, y))
        if len(out) == batches:
            break
    return out


def _round_amount(model: nn.Module, s: Dict[str, Any], r: int, base_macs: float, data) -> Optional[float]:
    """This round's uniform amount: the fraction that brings the MACs to
    ``macs ** (r / rounds)`` of the base model's, or the fixed ``amount``."""
    from operad import cost
    from operad.rewrite import amount_for_macs

    if s["amount"] is not None:
        return s["amount"]
    if s["macs"] is None:
        return None
    target = base_macs * s["macs"] ** (r / s["rounds"])
    now = float(cost(model, size=_size(model)).macs)
    if now <= target:
        return 0.0
    imp = s["importance"] if s["importance"] != "grad_rank" else "l1"
    return amount_for_macs(model, target / now, importance=imp, size=_size(model), round_to=s["round_to"], data=data)


def _size(model: nn.Module):
    return tuple(getattr(model, "default_input_size", (3, 32, 32))[1:])


def _accuracy(summary: Dict[str, Any]) -> Optional[float]:
    for key in ("top1", "mean_iou"):
        v = summary.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def prune_rounds(cfg: Config, base_dir: str, resume: bool = False, overwrite: bool = False) -> List[Dict[str, Any]]:
    """Run the rounds of ``cfg.prune`` on the model the run in ``base_dir`` trained
    (see the module docstring); returns one record per round, the base model first."""
    from operad import cost
    from operad.experiments.train import load_run_model, train_run
    from operad.rewrite import prune

    s = prune_settings(cfg.prune)
    model, _, _ = load_run_model(base_dir)
    size = _size(model)
    base_macs = float(cost(model, size=size).macs)
    summary = _read_summary(base_dir)
    records = [{"round": 0, "params": sum(p.numel() for p in model.parameters()), "macs": base_macs,
                "acc": _accuracy(summary), "run": os.path.basename(base_dir)}]
    needs_data = s["importance"] in ("taylor", "grad_rank")
    for r in range(1, s["rounds"] + 1):
        data = _importance_batches(cfg, s["batches"]) if needs_data else None
        amount = _round_amount(model, s, r, base_macs, data)
        pruned = prune(model.cpu(), amount=amount, importance=s["importance"], data=data, round_to=s["round_to"],
                       seed=cfg.seed + r)
        rcfg = dataclasses.replace(cfg, name=f"{cfg.name}-prune{r}", model="", model_args={},
                                   model_expr=term_expr(pruned.term), prune={}, epochs=s["epochs"],
                                   lr=s["lr"] or cfg.lr / 10, warmup_epochs=0.0, max_steps=0)
        pruned.default_input_size = getattr(model, "default_input_size", (3,) + size)
        out = train_run(rcfg, resume=resume, overwrite=overwrite, model=pruned) if s["epochs"] else {}
        rdir = os.path.join(cfg.out_dir, rcfg.name)
        if s["epochs"]:
            model, _, _ = load_run_model(rdir)
            model.default_input_size = pruned.default_input_size
        else:
            model = pruned
        records.append({"round": r, "amount": amount, "params": sum(p.numel() for p in model.parameters()),
                        "macs": float(cost(model, size=size).macs), "acc": _accuracy(out), "run": rcfg.name,
                        "term": rcfg.model_expr})
    _write_report(base_dir, records)
    return records


def _read_summary(run_dir: str) -> Dict[str, Any]:
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write_report(run_dir: str, records: List[Dict[str, Any]]) -> None:
    with open(os.path.join(run_dir, "prune.json"), "w") as f:
        json.dump(records, f, indent=1)
    pts = [(r["macs"] / 1e6, r["acc"]) for r in records if r["acc"] is not None]
    if not pts:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
    for rec in records:
        if rec["acc"] is not None:
            ax.annotate(f"r{rec['round']}", (rec["macs"] / 1e6, rec["acc"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xlabel("million multiply-adds per image")
    ax.set_ylabel("validation accuracy")
    ax.set_title("hierarchical pruning: accuracy after each round")
    ax.invert_xaxis()
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "prune.png"), dpi=120)
    plt.close(fig)
