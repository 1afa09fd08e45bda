"""The claim record: a seed paper's claim, the arms that test it, the metric,
the direction and the profiles (smoke / cpu / gpu / full).

A *trained* claim compares a subject arm with a baseline arm over paired
seeds; a *measured* claim computes a figure (a parameter count, a MAC count, a
rewrite's output change, a latency ratio) with ``measure(seed, profile)`` and
grades it against the paper's figure or a bound.

>>> c = Claim("demo", "He et al. 2016", "ResNet", "ResNet-20 has 0.27M parameters",
...           metric="params", measure=lambda seed, profile: 269722, published=0.27e6, rel_tol=0.02)
>>> c.kind
'measured'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

__all__ = ["Arm", "Claim", "PROFILES", "METRICS", "metric_value", "cifar_profiles", "CLAIMS", "register"]

PROFILES = ("smoke", "cpu", "gpu", "full")


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a bundled config (and one of its ``[[runs]]``)
    or a registered model, with config overrides (per profile in ``profiles``).

    >>> Arm("resnet20", model="resnet20").label
    'resnet20'
    """

    name: str
    config: str = ""          # a bundled config name (experiments/configs/NAME.toml)
    run: str = ""             # the [[runs]] entry of that config
    model: str = ""           # or a registered model (with no config)
    overrides: Dict[str, Any] = field(default_factory=dict)
    profiles: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name


def _jpeg_drop(s: Dict[str, Any]) -> float:
    return s["jpeg"]["clean"] - s["jpeg"]["mean_corrupted"]


def _rotation_retention(s: Dict[str, Any]) -> float:
    ang = s["rotation"]["angle"]
    rotated = [v for k, v in ang.items() if float(k) != 0.0]
    return (sum(rotated) / len(rotated)) / max(ang.get("0", s["top1"]), 1e-9)


# metric name -> (function of a run's summary.json, unit label)
METRICS: Dict[str, tuple] = {
    "top1": (lambda s: s["top1"], "top-1"),
    "jpeg_top1": (lambda s: s["jpeg"]["mean_corrupted"], "top-1 under JPEG q80..40"),
    "jpeg_drop": (_jpeg_drop, "top-1 lost to JPEG (q75 - mean q80..40)"),
    "shift_consistency": (lambda s: s["shift"]["consistency"], "shift consistency"),
    "rotation_top1": (lambda s: s["rotation"]["mean"], "mean top-1 over test rotations"),
    "rotation_retention": (_rotation_retention, "rotated / upright top-1"),
    "miou": (lambda s: s["mean_iou"], "val mIoU"),
    "map50": (lambda s: s["val"]["map50"], "val mAP@0.5 (detection, PASCAL all-point)"),
    "map50_prior_boxes": (lambda s: s["baseline"]["prior_box_map50"],
                          "val mAP@0.5 of the prior-box detector (training boxes, sees no pixels)"),
    "params": (lambda s: s["params"], "parameters"),
    "infer_img_per_s": (lambda s: s["infer_img_per_s"], "inference images/s"),
    "deploy_speedup": (lambda s: s["deploy"]["speedup"], "deployed / original throughput"),
}


def metric_value(metric: str, summary: Dict[str, Any]) -> float:
    """Read ``metric`` from a run summary.

    >>> metric_value("top1", {"top1": 0.5})
    0.5
    >>> metric_value("map50", {"task": "detection", "val": {"map50": 0.25}})   # a detection summary
    0.25
    """
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return float(METRICS[metric][0](summary))


def cifar_profiles(cpu_subset: int, cpu_epochs: int, cpu_batch: int = 64, cpu_lr: float = 0.05,
                   gpu_epochs: int = 8, **cpu_extra: Any) -> Dict[str, Dict[str, Any]]:
    """Standard CIFAR-10 profiles: ``smoke`` (seconds), ``cpu`` (``cpu_subset``
    images per class for ``cpu_epochs`` epochs, one thread, 100 test images per
    class), ``gpu`` (the full set for ``gpu_epochs``: every arm and seed within a few
    minutes of the GPU suite) and ``full`` (the config's
    own paper schedule).

    >>> cifar_profiles(200, 4)["cpu"]["epochs"]
    4
    """
    cpu = {"subset": cpu_subset, "val_subset": 100, "epochs": cpu_epochs, "batch_size": cpu_batch, "lr": cpu_lr,
           "warmup_epochs": 0, "eval_every": cpu_epochs, "threads": 1, "device": "cpu", "measure_speed": False,
           "plot_every": 0, "checkpoint_every": 0, **cpu_extra}
    smoke = {"subset": 3, "val_subset": 3, "epochs": 1, "batch_size": 10, "eval_batch_size": 32, "warmup_epochs": 0,
             "eval_every": 1, "threads": 1, "device": "cpu", "measure_speed": False, "plot_every": 0,
             "checkpoint_every": 0, "lr": 0.05}
    gpu = {"subset": 0, "val_subset": 0, "epochs": gpu_epochs, "batch_size": 256, "eval_every": gpu_epochs,
           "warmup_epochs": 1, "measure_speed": False, "plot_every": 0, "checkpoint_every": 0, "amp": "auto"}
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu, "full": {}}


@dataclass
class Claim:
    """One graded claim of a seed paper.

    Trained claims: ``arms = [subject, baseline]``; the verdict comes from the
    paired per-seed difference (subject - baseline) of ``metric`` with its 95%
    t-interval, judged by ``direction`` (``greater``, ``less``, ``match`` within
    ``margin``, ``noninferior`` within ``margin``). Measured claims:
    ``measure(seed, profile) -> float`` against ``published`` (within
    ``rel_tol``) or against ``bound`` in ``direction`` (``less``: value < bound).
    A measure may return a dict instead: its ``value`` is graded and the dict is
    kept per seed as ``details`` in the result; ``grade(values, details, profile)``
    then replaces the default grading and ``plot(result, path)`` the default plot.
    ``needs_data``: the measure trains or evaluates on a data set and takes the
    data root as a third argument (``operad reproduce --data``).
    ``floor``: a trained claim's subject must also beat this metric of its own
    runs (a trivial baseline's score, such as ``map50_prior_boxes``), graded
    the same way, or the verdict is at best inconclusive.
    ``gpu_priority``: lower runs earlier in the GPU suite (0 = never there)."""

    name: str
    paper: str
    system: str
    claim: str
    metric: str
    arms: List[Arm] = field(default_factory=list)
    direction: str = "greater"
    margin: float = 0.0
    profiles: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    measure: Optional[Callable[[int, str], float]] = None
    published: Optional[float] = None
    rel_tol: float = 0.0
    bound: Optional[float] = None
    gpu_priority: int = 0
    dataset_classes: int = 10  # 10 for CIFAR-10 (a chance-level guard); 0 where it does not apply
    floor: str = ""  # trained claims: a metric of the subject's runs it must also beat (a trivial baseline)
    note: str = ""  # what the CPU scale can and cannot show
    grade: Optional[Callable[[List[float], List[Dict[str, Any]], str], Dict[str, Any]]] = None
    plot: Optional[Callable[[Dict[str, Any], str], Any]] = None
    needs_data: bool = False

    @property
    def kind(self) -> str:
        return "measured" if self.measure is not None else "trained"

    def __post_init__(self) -> None:
        from .stats import DIRECTIONS

        if self.direction not in DIRECTIONS:
            raise ValueError(f"claim {self.name}: direction {self.direction!r} is not one of {DIRECTIONS}")
        if self.measure is None:
            if len(self.arms) != 2:
                raise ValueError(f"claim {self.name}: a trained claim needs [subject, baseline] arms")
            if self.metric not in METRICS:
                raise ValueError(f"claim {self.name}: unknown metric {self.metric!r}")
            if self.floor and self.floor not in METRICS:
                raise ValueError(f"claim {self.name}: unknown floor metric {self.floor!r}")
        elif self.published is None and self.bound is None:
            raise ValueError(f"claim {self.name}: a measured claim needs published= or bound=")


CLAIMS: Dict[str, Claim] = {}


def register(*claims: Claim) -> None:
    """Add claims to the registry (a name may be registered once)."""
    for c in claims:
        if c.name in CLAIMS:
            raise ValueError(f"claim {c.name!r} is registered twice")
        CLAIMS[c.name] = c
