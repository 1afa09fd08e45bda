"""Run and grade claims: ``reproduce(names, profile, seeds, out)``.

Trained arms run once per seed under ``OUT/runs/<profile>/<arm>-<config hash>/seed<k>``;
a run whose ``summary.json`` exists is reused (so a cut-short study resumes,
and claims that share an arm share its runs). Each claim writes
``OUT/<claim>.json`` and ``OUT/<claim>.png``; ``OUT/RESULTS.md`` is rebuilt
from every claim JSON in ``OUT`` after each claim.

>>> from operad.experiments.claims.runner import reproduce
>>> reproduce(["resnet20_params"], "smoke", 1, "/tmp/operad-claims-doctest")[0]["verdict"]   # doctest: +SKIP
'reproduced'
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence

from . import get_claims
from .base import Arm, Claim, metric_value
from .stats import interval, mean_std, one_sample, paired

__all__ = ["arm_config", "run_arm", "run_claim", "reproduce", "commit_id", "device_name", "OutOfTime"]

_NOT_HASHED = ("name", "out_dir", "progress", "experiment", "claim", "seed", "data_root", "log_every")


def _merge(*ds: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for d in ds:
        out.update(d or {})
    return out


def arm_config(claim: Claim, arm: Arm, profile: str, seed: int, out: str, data_root: str = "",
               progress: bool = True):
    """The validated :class:`~operad.experiments.config.Config` of one arm and seed."""
    import dataclasses

    from operad.experiments.config import ConfigError, expand_runs, load_config

    ov = _merge(claim.profiles.get(profile, {}), arm.overrides, arm.profiles.get(profile, {}))
    ov.update(seed=seed, progress=progress)
    table = "cpu" if profile in ("smoke", "cpu") else "gpu"
    if arm.config:
        raw = load_config(arm.config)
        if arm.run and isinstance(raw.get("runs"), list):  # only this run sees the arm's overrides
            picked = [r for r in raw["runs"] if isinstance(r, dict) and r.get("name", r.get("model")) == arm.run]
            if not picked:
                names = [r.get("name", r.get("model")) for r in raw["runs"] if isinstance(r, dict)]
                raise ConfigError(f"claim {claim.name}: config {arm.config!r} has no run {arm.run!r} (runs: {names})")
            raw = {**raw, "runs": picked}
        cfg = expand_runs(raw, ov, table)[0]
    else:
        cfg = expand_runs({"model": arm.model}, ov, table)[0]
    if data_root:
        cfg = dataclasses.replace(cfg, data_root=_data_root(cfg, data_root))
    d = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_HASHED}
    key = hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return dataclasses.replace(cfg, name=f"seed{seed}", experiment=claim.name, claim=claim.claim,
                               out_dir=os.path.join(out, "runs", profile, f"{arm.name}-{key}"))


def _data_root(cfg, root: str) -> str:
    """The data root a run uses when ``operad reproduce --data ROOT`` is given: ROOT itself, except that a
    detection config's relative ``data_root`` (a derived box set such as ``data/camvid_boxes_large``) names
    its folder under ROOT.

    >>> from operad.experiments.config import Config
    >>> _data_root(Config.from_dict({"task": "detection", "data_root": "data/camvid_boxes"}), "/d")
    '/d/camvid_boxes'
    >>> _data_root(Config.from_dict({"model": "resnet20"}), "/d")
    '/d'
    """
    if cfg.task == "detection" and cfg.data_root and not os.path.isabs(cfg.data_root):
        return os.path.join(root, os.path.basename(os.path.normpath(cfg.data_root)))
    return root


def run_arm(cfg) -> Dict[str, Any]:
    """Train one arm and seed (a detection config through the detection engine), or read its finished
    ``summary.json``."""
    path = os.path.join(cfg.out_dir, cfg.name, "summary.json")
    if os.path.isfile(path):
        with open(path) as f:
            s = json.load(f)
        s["reused"] = True
        return s
    if cfg.task == "detection":
        from operad.experiments.detection.engine import train_detection_run

        return train_detection_run(cfg, overwrite=True)
    from operad.experiments.train import train_run

    return train_run(cfg, overwrite=True)


def commit_id(root: Optional[str] = None) -> str:
    """The operad checkout's commit (with ``+dirty`` when its code has uncommitted
    changes; results under ``experiments/results/`` are outputs, not code), or ``unknown``."""
    here = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        c = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)experiments/results"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        if c:
            return c + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        c = ""
    return os.environ.get("OPERAD_COMMIT", "unknown")  # an exported tree (no .git) says its commit here


def device_name(profile: str) -> str:
    """The device a profile runs on, in words."""
    import platform

    import torch

    if profile in ("gpu", "full") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, 1 thread)" if profile in ("smoke", "cpu") else f"CPU ({platform.machine()})"


def _grade_measured(c: Claim, values: List[float]) -> Dict[str, Any]:
    if c.published is not None:
        errs = [abs(v - c.published) / abs(c.published) for v in values]
        ok = all(e <= c.rel_tol for e in errs)
        return {"published": c.published, "rel_tol": c.rel_tol, "rel_error": max(errs),
                "verdict": "reproduced" if ok else "contradicted"}
    g = one_sample(values, c.bound, c.direction, c.margin)
    g["bound"] = c.bound
    return g


def _measure_seeds(c: Claim, profile: str, seeds: int, data_root: str = "", tick=None):
    """A measured claim's value per seed, and the details of measures that return a dict (``value`` + details).

    >>> c = Claim("d", "p", "s", "c", metric="m", measure=lambda s, p: {"value": s + 0.5, "seed": s}, bound=0.0)
    >>> _measure_seeds(c, "smoke", 2)
    ([0.5, 1.5], [{'value': 0.5, 'seed': 0}, {'value': 1.5, 'seed': 1}])
    """
    values: List[float] = []
    details: List[Dict[str, Any]] = []
    for s in range(seeds):
        v = c.measure(s, profile, data_root) if c.needs_data else c.measure(s, profile)
        if isinstance(v, dict):
            if "value" not in v:
                raise ValueError(f"claim {c.name}: a measure that returns a dict must give its figure as 'value'")
            details.append(v)
            v = v["value"]
        values.append(float(v))
        if tick:
            tick(f"{c.name} seed {s}")
    return values, details


class OutOfTime(RuntimeError):
    """A claim could not start its next run before the deadline."""


def _at_chance(arms: Dict[str, Any], chance: float = 0.15) -> bool:
    """Every arm's mean top-1 is near chance (CIFAR-10: 10%), so no comparison means anything.

    >>> _at_chance({"a": {"top1": [0.1, 0.11]}, "b": {"top1": [0.12, 0.1]}})
    True
    """
    means = [sum(a["top1"]) / len(a["top1"]) for a in arms.values() if a["top1"] and None not in a["top1"]]
    return bool(means) and len(means) == len(arms) and all(m < chance for m in means)


def _grade_floor(res: Dict[str, Any], c: Claim, subject: List[float], floor: List[float]) -> None:
    """Grade the subject arm against its runs' ``c.floor`` (a trivial baseline), paired by seed, into
    ``res["floor"]``; a claim reproduced against its baseline arm but not clearly above the floor is
    inconclusive, with the reason."""
    g = paired(subject, floor, "greater")
    res["floor"] = {"metric": c.floor, "values": floor, **interval(floor), "grade": g}
    if res["grade"]["verdict"] == "reproduced" and g["verdict"] != "reproduced":
        res["grade"].update(verdict="inconclusive", reason=f"not clearly above {c.floor} "
                            f"({sum(subject) / len(subject):.4g} vs {sum(floor) / len(floor):.4g})")


def run_claim(c: Claim, profile: str, seeds: int, out: str, data_root: str = "", progress: bool = True,
              tick=None, deadline: Optional[float] = None, commit: str = "") -> Dict[str, Any]:
    """Run (or reuse) every arm and seed of one claim, grade it, write its JSON and PNG. ``commit``: the
    checkout's commit as it was when the study started (default: now)."""
    from .report import plot_claim

    t0 = time.time()
    res: Dict[str, Any] = {"claim": c.name, "paper": c.paper, "system": c.system, "sentence": c.claim,
                           "metric": c.metric, "kind": c.kind, "direction": c.direction, "margin": c.margin,
                           "profile": profile, "seeds": seeds, "device": device_name(profile),
                           "commit": commit or commit_id(),
                           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "note": c.note}
    if c.kind == "measured":
        values, details = _measure_seeds(c, profile, seeds, data_root, tick)
        res["values"] = values
        if details:
            res["details"] = details
        res["summary"] = mean_std(values)
        res["grade"] = c.grade(values, details, profile) if c.grade else _grade_measured(c, values)
    else:
        arms: Dict[str, Any] = {}
        floor: List[float] = []
        for arm in c.arms:
            vals, top1, dirs, secs = [], [], [], []
            for s in range(seeds):
                if deadline is not None and time.time() > deadline:
                    raise OutOfTime(f"{c.name}: the deadline passed before {arm.name} seed {s}")
                cfg = arm_config(c, arm, profile, s, out, data_root, progress)
                summ = run_arm(cfg)
                vals.append(metric_value(c.metric, summ))
                if c.floor and arm is c.arms[0]:
                    floor.append(metric_value(c.floor, summ))
                top1.append(summ.get("top1", summ.get("mean_iou", (summ.get("val") or {}).get("map50"))))
                secs.append(summ.get("train_time_s"))
                dirs.append(os.path.relpath(os.path.join(cfg.out_dir, cfg.name), out))
                if tick:
                    tick(f"{c.name} {arm.name} seed {s}")
            arms[arm.name] = {"values": vals, **interval(vals), "top1": top1, "train_time_s": secs, "runs": dirs,
                              "config": arm.config, "run": arm.run or arm.model}
        res["arms"] = arms
        a, b = (arms[x.name]["values"] for x in c.arms)
        res["grade"] = paired(a, b, c.direction, c.margin)
        if c.dataset_classes == 10 and _at_chance(arms):
            res["grade"].update(verdict="inconclusive", reason="every arm is at chance top-1 (< 15%)")
        if c.floor:
            _grade_floor(res, c, a, floor)
    res["verdict"] = res["grade"]["verdict"]
    res["wall_s"] = round(time.time() - t0, 1)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{c.name}.json"), "w") as f:
        json.dump(res, f, indent=2, default=str)
    try:
        (c.plot or plot_claim)(res, os.path.join(out, f"{c.name}.png"))
    except Exception as e:  # a plot must never lose a measured result
        res["plot_error"] = repr(e)
    return res


def _units(c: Claim, seeds: int) -> int:
    return seeds * (len(c.arms) if c.kind == "trained" else 1)


def reproduce(names: Optional[Sequence[str]], profile: str = "cpu", seeds: int = 3, out: str = "claims",
              data_root: str = "", progress: bool = True, deadline: Optional[float] = None) -> List[Dict[str, Any]]:
    """Run, grade and report claims (all when ``names`` is empty); returns one result per claim.
    ``deadline`` (a ``time.time()`` value) stops before starting a claim past it."""
    from tqdm.auto import tqdm

    from .report import write_results

    if profile not in ("smoke", "cpu", "gpu", "full"):
        raise ValueError(f"profile must be smoke, cpu, gpu or full, got {profile!r}")
    claims = get_claims(names)
    bar = tqdm(total=sum(_units(c, seeds) for c in claims), unit="run", desc=f"reproduce ({profile})",
               disable=not progress, dynamic_ncols=True)
    results = []
    commit = commit_id()  # once, before this study writes into a tracked results folder and dirties the tree
    try:
        for c in claims:
            if deadline is not None and time.time() > deadline:
                break
            bar.set_postfix_str(c.name)
            try:
                r = run_claim(c, profile, seeds, out, data_root, progress, tick=lambda msg: bar.update(1),
                              deadline=deadline, commit=commit)
            except OutOfTime as e:
                bar.write(str(e))
                break
            results.append(r)
            write_results(out)
            bar.write(f"{c.name}: {r['verdict']}")
    finally:
        bar.close()
    return results
