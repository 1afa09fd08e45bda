"""Training: ``train(config)`` and ``operad train CONFIG.toml key=value ...``.

One code path for CPU and GPU (bf16 autocast, channels_last, optional
``torch.compile`` and data resident on the device on GPU), distributed data
parallel when launched by ``torchrun``, exact resume from atomic checkpoints,
a NaN/inf stop naming the step and the last good checkpoint, EMA of weights,
a JSONL metrics log and PNG curves per run. Example::

    >>> from operad.experiments import train
    >>> result = train({"model_expr": "ops.conv(8) >> ops.relu() >> ops.global_pool() >> ops.linear(10)",
    ...                 "dataset": "cifar10", "subset": 20, "epochs": 1, "batch_size": 32})   # doctest: +SKIP
    >>> result["top1"]                                                                      # doctest: +SKIP
    0.21
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operad.operators.algebra.errors import OperadError
from operad.experiments.augment import Augment, DeviceBatches, SegAugment, mix_batch, mixed_loss, step_generator
from operad.experiments.config import Config, ConfigError, dump_toml, expand_runs, load_config
from operad.experiments.data import ArrayData, load_dataset
from operad.experiments.evaluate import evaluate
from operad.experiments.regularization import augment_options, step_regularization
from operad.experiments.resume import OPTIMIZER_KEYS, SCHEDULE_KEYS, resume_changes
from operad.experiments.run_dir import RunDir, check_run_name
from operad.models.hub import save_safetensors

__all__ = ["train", "train_run", "default_threads", "build_model", "DivergenceError", "CheckpointError", "EMA",
           "make_optimizer", "make_schedule", "load_checkpoint", "save_checkpoint", "load_run_model", "environment"]

CKPT = "checkpoint.pt"


class DivergenceError(OperadError, RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointError(OperadError, OSError):
    """Writing a checkpoint failed; the previous one (if any) is intact."""


# ----------------------------------------------------------------------------- model

def build_model(cfg: Config, num_classes: int, in_chans: int = 3) -> nn.Module:
    """The model of a config: ``create_model(cfg.model, ...)`` or the term
    ``cfg.model_expr`` (parsed by :func:`operad.experiments.expr.parse_expr`,
    never ``eval``) bound to ``Field(in_chans)``.

    >>> from operad.experiments.config import Config
    >>> m = build_model(Config(model_expr="ops.conv(4) >> ops.global_pool() >> ops.linear(num_classes)"), 10)
    >>> m(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 10])
    """
    if cfg.model_expr:
        from operad import Field
        from operad.experiments.expr import parse_expr

        term = parse_expr(cfg.model_expr, num_classes)
        model = term.bind(Field(in_chans))
        model.model_name = "expr"
        return model
    if not cfg.model:
        raise ConfigError("set model (a registered name, see `operad list`) or model_expr (an expression over ops)")
    from operad.models import create_model

    return create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, **cfg.model_args)


# ----------------------------------------------------------------------------- optimisation

def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> List[Dict[str, Any]]:
    """Two groups: weights with decay, and norms/biases (``ndim <= 1``) without."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if decay_all or p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (with Nesterov momentum if set) or AdamW, no decay on norms and biases."""
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(cfg: Config, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up, then cosine,
    step (``milestones`` <= 1 are fractions of training, larger values
    epochs), one-cycle or constant.

    >>> c = Config(schedule="cosine", warmup_epochs=1, warmup_start=0.0)
    >>> [round(lr_factor(c, s, 20, 10), 3) for s in (0, 5, 10, 15, 20)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    min_ratio = cfg.min_lr / cfg.lr if cfg.lr else 0.0
    if cfg.schedule == "onecycle":
        up = max(1, int(round(cfg.onecycle_pct * total)))
        start = 1 / 25
        if step < up:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * step / up))
        p = min(1.0, (step - up) / max(1, total - up))
        end = min_ratio or start / 1e4
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * p))
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return cfg.warmup_start + (1 - cfg.warmup_start) * step / warm
    if cfg.schedule == "cosine":
        p = min(1.0, (step - warm) / max(1, total - warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    if cfg.schedule == "step":
        marks = [m * total if m <= 1 else m * steps_per_epoch for m in cfg.milestones]
        return cfg.gamma ** sum(step >= m for m in marks)
    return 1.0


def make_schedule(cfg: Config, opt: torch.optim.Optimizer, total: int, steps_per_epoch: int):
    """A per-step ``LambdaLR`` of :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, total, steps_per_epoch))


class EMA:
    """Exponential moving average of a model's weights (buffers copied), with
    the usual warm-up ``decay_t = min(decay, (1 + t) / (10 + t))``.

    >>> m = nn.Linear(2, 2); e = EMA(m, 0.9); e.update(m, 0)
    >>> torch.equal(e.module.weight, m.weight)
    True
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ep = [p for p in self.module.parameters()]
        mp = [p.detach() for p in model.parameters()]
        if ep:
            torch._foreach_lerp_(ep, mp, 1 - d)
        for be, bm in zip(self.module.buffers(), model.buffers()):
            be.copy_(bm)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, sd) -> None:
        self.module.load_state_dict(sd)


# ----------------------------------------------------------------------------- checkpoints

def _rng_state() -> Dict[str, Any]:
    st = np.random.get_state()
    py = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": {"keys": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]), "has_gauss": int(st[3]),
                     "cached": float(st[4])},
           "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64)}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(st: Dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"].cpu())
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((st["python"]["version"], tuple(int(v) for v in st["python"]["state"].tolist()), None))
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then
    ``os.replace``: a reader sees the old or the new checkpoint, never half.
    A write that fails (disk full, I/O error) removes its temporary and
    raises :class:`CheckpointError`; the file at ``path`` is left as it was.

    >>> import tempfile; p = os.path.join(tempfile.mkdtemp(), "c.pt")
    >>> save_checkpoint(p, {"step": 3}); load_checkpoint(p)["step"]
    3
    """
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports failed writes as RuntimeError
        with contextlib.suppress(OSError):
            os.remove(tmp)
        prev = f"the previous file at {path} is intact" if os.path.isfile(path) else f"{path} was not written"
        raise CheckpointError(f"writing {path} failed ({type(e).__name__}: {e}); {prev}") from e


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path}: cannot load checkpoint ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------- environment

def environment(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """Git commit of the package, versions, device and host, for the record."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        try:
            return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    env = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "git_commit": git("rev-parse", "HEAD"),
           "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
           "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
           "platform": platform.platform(), "host": socket.gethostname(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "argv": sys.argv,
           "cuda": torch.version.cuda, "device": str(device) if device is not None else None,
           "env": {k: v for k, v in os.environ.items() if k.startswith(("OPERAD_", "CUDA_VISIBLE", "WORLD_SIZE"))}}
    if device is not None and device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


# ----------------------------------------------------------------------------- distributed

def _dist_setup():
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, None
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist


def _pick_device(cfg: Config, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device = 'cuda' but no CUDA device is available; use device='auto' or 'cpu'")
        return torch.device(f"cuda:{local_rank}")
    return torch.device(cfg.device)


def default_threads(processes: int = 1) -> int:
    """CPU threads per process: the cores this process may use, shared among
    the local processes, less the cores other work keeps busy (1-minute load
    average). OpenMP threads on an oversubscribed machine spin and run several
    times slower than fewer threads would, so a busy machine gets fewer.

    >>> 1 <= default_threads() <= (os.cpu_count() or 1)
    True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    per_proc = max(1, cores // max(1, processes))
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    free = int(cores - busy + 0.5)
    return max(1, min(per_proc, free // max(1, processes))) if free < cores else per_proc


def _amp_dtype(cfg: Config, device: torch.device) -> Optional[torch.dtype]:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "fp16":
        return torch.float16
    return torch.bfloat16


# ----------------------------------------------------------------------------- the run, stage by stage
#
# ``_train_run`` reads top to bottom:
#   1. _setup_process   where this process runs: rank, device, threads, seeds
#   2. _open_run_dir    the run directory (never clobbering a run or a user's
#                       file) and, on resume, the checkpoint and what changed
#   3. _build_data      data sets, batch streams, steps per epoch and in all
#   4. _build_model     the model on its device
#   5. _Optimisation    optimiser, LR schedule, EMA, AMP scaler
#   6. _restore         resume from the checkpoint, applying changed keys
#   7. _write_record    the resolved config and env.json
#   8. _Loop            the steps, logging windows, evaluation and checkpoints
#   9. _finish          final evaluation, files and summary

class _Log:
    """The run's ``metrics.jsonl`` (``path`` None on non-main ranks: writes nothing)."""

    def __init__(self, path: Optional[str]):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a killed run may have logged beyond its last checkpoint)."""
        if not self.path or not os.path.isfile(self.path):
            return
        from operad.experiments.plots import read_jsonl

        keep = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for r in keep:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)

    def write(self, rec: Dict[str, Any]) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()


def _print(msg: str, main: bool) -> None:
    if main:
        print(msg, flush=True)


def _val_split(name: str) -> str:
    return "val" if name == "camvid" else "test"


@dataclass
class _Process:
    """Where this process runs: its rank among ``world`` processes, its device,
    and ``torch.distributed`` (None when the run is one process)."""

    rank: int
    world: int
    device: torch.device
    dist: Any

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()


def _setup_process(cfg: Config) -> _Process:
    """Stage 1: join the process group (under torchrun), pick the device, set
    CPU threads and determinism, seed every generator."""
    rank, world, local_rank, dist = _dist_setup()
    device = _pick_device(cfg, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(cfg.threads or default_threads(local_world))
    elif cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2 ** 32))
    random.seed(cfg.seed)
    return _Process(rank, world, device, dist)


@dataclass
class _Data:
    """The training and validation data, their batch streams on the device,
    and the run's length in steps (``spe`` per epoch, ``total`` in all)."""

    train: ArrayData
    val: ArrayData
    seg: bool
    channels_last: bool
    batches: DeviceBatches
    val_batches: DeviceBatches
    spe: int
    total: int

    @property
    def epochs_total(self) -> int:
        return -(-self.total // self.spe)


def _build_data(cfg: Config, proc: _Process, train_data: Optional[ArrayData],
                val_data: Optional[ArrayData]) -> _Data:
    """Stage 2: load the splits (unless given), build the augmenting training
    stream (sharded over ranks; with the config's augmentation policy and
    RandomErasing, :func:`~operad.experiments.regularization.augment_options`)
    and the evaluation stream, count the steps."""
    root = cfg.data_root or None
    if train_data is None:
        train_data = load_dataset(cfg.dataset, "train", root, cfg.subset or None, cfg.download)
    if val_data is None:
        val_data = load_dataset(cfg.dataset, _val_split(train_data.name), root, cfg.val_subset or None, cfg.download)
    task = train_data.task if cfg.task == "auto" else cfg.task
    seg = task == "segmentation"
    channels_last = cfg.channels_last and proc.device.type == "cuda"
    if seg:
        crop = tuple(cfg.crop_size) if cfg.crop_size else None
        aug = SegAugment(tuple(cfg.scale_range), crop, cfg.flip, train_data.ignore_index)
    else:
        aug = Augment(cfg.crop_padding, cfg.flip, cfg.cutout, cfg.rotate, **augment_options(cfg))
    batches = DeviceBatches(train_data, cfg.batch_size, proc.device, shuffle=True, drop_last=True, augment=aug,
                            seed=cfg.seed, rank=proc.rank, world_size=proc.world, channels_last=channels_last)
    val_batches = DeviceBatches(val_data, cfg.eval_batch_size, proc.device, rank=proc.rank, world_size=proc.world,
                                channels_last=channels_last, shard_eval=True)
    spe = len(batches)
    if spe == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(train_data)} training samples")
    total = cfg.max_steps or cfg.epochs * spe
    return _Data(train_data, val_data, seg, channels_last, batches, val_batches, spe, total)


def _build_model(cfg: Config, proc: _Process, data: _Data, model: Optional[nn.Module]) -> nn.Module:
    """Stage 3: the config's model (unless one is given), on the device."""
    if model is None:
        model = build_model(cfg, data.train.num_classes, data.train.images.shape[-1])
    model = model.to(proc.device)
    if data.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


class _Optimisation:
    """Stage 4: the optimiser, the per-step LR schedule, the EMA of the
    weights and the fp16 gradient scaler, saved and restored together."""

    def __init__(self, cfg: Config, model: nn.Module, data: _Data, device: torch.device):
        self.opt = make_optimizer(cfg, model)
        self.sched = make_schedule(cfg, self.opt, data.total, data.spe)
        self.ema = EMA(model, cfg.ema) if cfg.ema else None
        self.amp_dtype = _amp_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.device = device

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, ck: Dict[str, Any]) -> None:
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if self.ema is not None and ck.get("ema") is not None:
            self.ema.load_state_dict(ck["ema"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])


@dataclass
class _Opened:
    """The run directory, and on resume the checkpoint (on the CPU) and the
    config keys that differ from it (``{key: (old, new)}``, all changeable)."""

    run: RunDir
    checkpoint: Optional[Dict[str, Any]] = None
    changes: Dict[str, tuple] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.run.path


def _open_run_dir(cfg: Config, proc: _Process, resume: bool, overwrite: bool) -> _Opened:
    """Stage 2, before any data is read: check ``<out_dir>/<name>`` may take
    the run (:class:`RunDir`), load the checkpoint to resume and compare its
    config with this one (a key that may not change is a :class:`ConfigError`),
    then (main rank) create, mark, overwrite and clean the directory."""
    run = RunDir.open(cfg.out_dir, cfg.name, resume, overwrite)
    opened = _Opened(run)
    ckpt_path = run.file(CKPT)
    if resume and os.path.isfile(ckpt_path):
        opened.checkpoint = load_checkpoint(ckpt_path, "cpu")
        opened.changes = resume_changes(opened.checkpoint.get("config") or {}, cfg)
    proc.barrier()  # every rank has checked before the main rank changes anything
    if proc.main:
        run.prepare()
        for m in run.messages:
            _print(f"[{cfg.name}] {m}", True)
    proc.barrier()
    return opened


@dataclass
class _Start:
    """Where the loop starts: the step, the best evaluation so far, the step
    of the checkpoint resumed from (None for a fresh run), and the logging
    window the checkpoint was in the middle of."""

    step: int = 0
    best: Dict[str, Any] = field(default_factory=dict)
    resumed_from: Optional[int] = None
    window: Optional[Dict[str, Any]] = None


def _restore(cfg: Config, proc: _Process, opened: _Opened, data: _Data, model: nn.Module, optim: _Optimisation,
             log: _Log) -> _Start:
    """Stage 6: from a checkpoint, restore the model, the optimisation state
    and every generator, apply the changed keys (:func:`_apply_changes`) and
    drop log records past it; a fresh run starts an empty log."""
    ck = opened.checkpoint
    if ck is None:
        if proc.main:
            log.truncate_after(0)  # records of an earlier attempt that never reached a checkpoint
        if opened.run.resume:
            _print(f"[{cfg.name}] --resume: no checkpoint in {opened.path}; starting from scratch", proc.main)
        return _Start()
    model.load_state_dict(ck["model"])
    optim.load_state_dict(ck)
    _set_rng_state(ck["rng"])
    step = int(ck["step"])
    if proc.main:
        log.truncate_after(step)
    _print(f"[{cfg.name}] resumed from step {step} ({opened.run.file(CKPT)})", proc.main)
    if opened.changes:
        for line in _apply_changes(cfg, optim, data, step, opened.changes):
            _print(f"[{cfg.name}] {line}", proc.main)
    return _Start(step, dict(ck.get("best", {})), step, ck.get("window"))


def _apply_changes(cfg: Config, optim: _Optimisation, data: _Data, step: int,
                   changes: Dict[str, tuple]) -> List[str]:
    """Make the restored optimiser follow the changed keys: optimiser
    hyper-parameters into its parameter groups; a changed ``lr`` or schedule
    rescales the schedule (its base lr becomes ``cfg.lr``, the current lr
    ``cfg.lr * lr_factor(step)``). Returns the lines to print."""
    lines = ["resume changes " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())]
    groups = optim.opt.param_groups
    if OPTIMIZER_KEYS & set(changes):
        groups[0]["weight_decay"] = cfg.weight_decay  # the other group holds norms and biases, never decayed
        for g in groups:
            if "momentum" in g:
                g["momentum"] = cfg.momentum
                g["nesterov"] = cfg.nesterov and cfg.momentum > 0
            if "betas" in g:
                g["betas"] = tuple(cfg.betas)
    if SCHEDULE_KEYS & set(changes):
        was = groups[0]["lr"]
        f = lr_factor(cfg, step, data.total, data.spe)
        for g in groups:
            g["initial_lr"] = cfg.lr
            g["lr"] = cfg.lr * f
        optim.sched.base_lrs = [cfg.lr] * len(groups)
        optim.sched._last_lr = [g["lr"] for g in groups]
        lines.append(f"the LR schedule is rescaled to lr {cfg.lr:g} over {data.total} steps: step {step} "
                     f"continues at lr {groups[0]['lr']:.6g} (the checkpoint's schedule was at {was:.6g})")
    return lines


def _write_record(cfg: Config, proc: _Process, opened: _Opened, n_params: int, start: _Start) -> None:
    """Stage 7: the resolved config (``config.toml``, or ``config.resolved.toml``
    beside a user's own ``config.toml``) and ``env.json`` (versions, host,
    device, what a resume changed)."""
    if not proc.main:
        return
    with open(opened.run.file(opened.run.config_name), "w") as f:
        f.write(dump_toml(cfg.to_dict(), f"operad run config ({cfg.name}); written {datetime.datetime.now():%c}"))
    env = environment(proc.device)
    env.update(world_size=proc.world, params=n_params, resumed_from=start.resumed_from)
    if opened.changes:
        env["resume_changes"] = {k: list(v) for k, v in opened.changes.items()}
    with open(opened.run.file("env.json"), "w") as f:
        json.dump(env, f, indent=2, default=str)


def _wrap(cfg: Config, proc: _Process, model: nn.Module) -> nn.Module:
    """The module the steps call: the model, in DDP over ranks, compiled if asked."""
    net: nn.Module = model
    if proc.dist is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[proc.device.index] if proc.device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


class _Window:
    """What one logging interval accumulates: loss, correct predictions and
    samples seen as device tensors (read only when the window is logged),
    per-step terms a loop adds (``extra``: logged as their mean per step, e.g.
    the detection loss's box and class parts), steps, images and the time it started."""

    def __init__(self, device: torch.device, extra: Sequence[str] = ()):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.seen = torch.zeros((), device=device)
        self.extra = {k: torch.zeros((), device=device) for k in extra}
        self.reset()

    def reset(self) -> None:
        self.loss.zero_(); self.correct.zero_(); self.seen.zero_()
        for v in self.extra.values():
            v.zero_()
        self.steps = 0
        self.images = 0
        self.restart_clock()

    def restart_clock(self) -> None:
        self.t0 = time.perf_counter()

    def state_dict(self) -> Dict[str, Any]:
        """The accumulated loss, correct and seen counts and steps (not images
        or time: throughput is measured per process)."""
        return {"loss": self.loss.detach().cpu().clone(), "correct": self.correct.detach().cpu().clone(),
                "seen": self.seen.detach().cpu().clone(), "steps": self.steps,
                "extra": {k: v.detach().cpu().clone() for k, v in self.extra.items()}}

    def load_state_dict(self, st: Dict[str, Any]) -> None:
        self.loss.copy_(st["loss"]); self.correct.copy_(st["correct"]); self.seen.copy_(st["seen"])
        for k, v in (st.get("extra") or {}).items():
            self.extra[k].copy_(v)
        self.steps = int(st["steps"])


_METRICS = ("loss", "top1", "top5", "mean_iou", "pixel_accuracy", "map50", "map50_11point", "coco_map")


class _Loop:
    """Stage 8: the training loop. :meth:`run` goes epoch by epoch; each
    epoch runs :meth:`train_step` per batch, logs a window every ``log_every``
    steps (:meth:`log_window`), may checkpoint mid-epoch, then evaluates
    (:meth:`evaluate_epoch`) and checkpoints (:meth:`save`). NaN/inf is caught
    at every log and before every checkpoint (:meth:`check_finite`).
    A subclass changes what a step computes (:meth:`train_step`, ending in
    :meth:`optimizer_step`) and what an evaluation measures (:meth:`evaluate`,
    ``best_key``, ``window_terms``): the detection engine's loop is one."""

    best_key: Optional[str] = None   # the evaluation metric whose best is kept (None: top1 or mean_iou)
    window_terms: Sequence[str] = ()  # per-step terms logged beside the loss (see :class:`_Window`)

    def __init__(self, cfg: Config, proc: _Process, data: _Data, model: nn.Module, net: nn.Module,
                 optim: _Optimisation, log: _Log, run_dir: str, start: _Start):
        """``start``: the step, best result and logging window to continue from."""
        self.cfg, self.proc, self.data, self.model, self.net, self.optim, self.log = \
            cfg, proc, data, model, net, optim, log
        self.run_dir = run_dir
        self.ckpt_path = os.path.join(run_dir, CKPT)
        self.step = start.step
        self.best = start.best
        self.last_good = {"path": self.ckpt_path if start.resumed_from is not None else None,
                          "step": start.resumed_from}
        self.window = _Window(proc.device, self.window_terms)
        self.best_key = self.best_key or ("mean_iou" if data.seg else "top1")
        if start.window is not None:  # the first record after a resume averages the whole window
            self.window.load_state_dict(start.window)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=proc.device)
        self.train_time = 0.0
        self.train_imgs = 0
        self.mixing = (cfg.mixup or cfg.cutmix) and not data.seg
        self.ignore = data.train.ignore_index if data.seg else -100
        self.params = [p for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
        self.bar = None
        self.wall0 = time.perf_counter()

    # -------------------------------------------------------------- the loop
    def run(self) -> None:
        """Train from the start step to ``data.total``."""
        self.wall0 = time.perf_counter()
        try:
            while self.step < self.data.total:
                self.epoch()
        finally:
            self._close_bar()

    def epoch(self) -> None:
        """The rest of the current epoch, then evaluation (every ``eval_every``
        epochs and at the end) and a checkpoint."""
        cfg, spe = self.cfg, self.data.spe
        epoch = self.step // spe
        i0 = self.step % spe
        self._open_bar(epoch, i0)
        self.net.train()
        for xb, yb in self.data.batches.epoch(epoch, start=i0, step_offset=epoch * spe):
            self.train_step(xb, yb)
            end_epoch = self.step % spe == 0 or self.step == self.data.total
            if self.step % cfg.log_every == 0 or end_epoch:
                self.log_window()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not end_epoch:
                self.save()
                self.window.restart_clock()
            if end_epoch:
                break
        self._close_bar()
        ep_done = self.step / spe
        if (math.ceil(ep_done) % cfg.eval_every == 0) or self.step >= self.data.total:
            self.evaluate_epoch(ep_done)
        self.save()
        self.window.restart_clock()

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """One optimiser step on a batch (mixed if mixup/cutmix), then the
        window's accumulators; no host sync. First the step's regularization
        (:func:`~operad.experiments.regularization.step_regularization`):
        DropBlock's scheduled rate, DisturbLabel's labels and TSLA's label
        smoothing, all functions of the config and ``(seed, step)``."""
        cfg, model, o = self.cfg, self.model, self.optim
        yb, smoothing = step_regularization(cfg, model, yb, self.step, self.data.total, self.data.spe,
                                            self.data.train.num_classes)
        if self.mixing:
            rng = np.random.default_rng((cfg.seed, self.step, self.proc.rank))
            xb, ya, yb2, lam = mix_batch(xb, yb, rng, cfg.mixup, cfg.cutmix,
                                         step_generator(cfg.seed + 1, self.step, self.proc.device))
        with o.autocast():
            out = self.net(xb)
            if self.data.seg and out.shape[-2:] != yb.shape[-2:]:
                out = F.interpolate(out, size=yb.shape[-2:], mode="bilinear", align_corners=False)
            if self.mixing:
                loss = mixed_loss(out.float(), ya, yb2, lam, smoothing)
            else:
                loss = F.cross_entropy(out.float(), yb, label_smoothing=smoothing, ignore_index=self.ignore)
        self.optimizer_step(loss)
        w = self.window
        if not self.data.seg:
            pred = out.detach().argmax(1)
            w.correct += ((pred == ya).float() * lam + (pred == yb2).float() * (1 - lam)).sum() \
                if self.mixing else (pred == yb).sum()
            w.seen += yb.shape[0]

    def optimizer_step(self, loss: torch.Tensor, images: Optional[int] = None) -> None:
        """Back-propagate ``loss`` (scaled under fp16), clip, step the optimiser,
        the LR schedule and the EMA, count the step and its ``images`` (default
        ``batch_size``) and add the loss to the window (a NaN/inf loss is
        remembered by step, not added)."""
        cfg, model, o = self.cfg, self.model, self.optim
        o.opt.zero_grad(set_to_none=True)
        if o.scaler is not None:
            o.scaler.scale(loss).backward()
            o.scaler.unscale_(o.opt)
        else:
            loss.backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        if o.scaler is not None:
            o.scaler.step(o.opt)
            o.scaler.update()
        else:
            o.opt.step()
        o.sched.step()
        if o.ema is not None:
            o.ema.update(model, self.step)
        self.step += 1
        w = self.window
        ld = loss.detach()
        self.bad_step = torch.where((self.bad_step < 0) & ~torch.isfinite(ld),
                                    torch.full_like(self.bad_step, self.step), self.bad_step)
        w.loss += torch.nan_to_num(ld, nan=0.0, posinf=0.0, neginf=0.0)
        w.steps += 1
        n = cfg.batch_size if images is None else images
        w.images += n
        if self.bar is not None:
            self.bar.update(n)

    def log_window(self) -> None:
        """Check for NaN/inf, write the window's mean loss, accuracy, lr and
        throughput to the log, and start a new window."""
        self.check_finite()
        w = self.window
        dt = time.perf_counter() - w.t0
        self.train_time += dt
        self.train_imgs += w.images
        rec = {"kind": "train", "step": self.step, "epoch_f": round(self.step / self.data.spe, 4),
               "loss": w.loss.item() / max(1, w.steps), "lr": self.optim.opt.param_groups[0]["lr"],
               "img_per_s": w.images / max(dt, 1e-9), "time": round(time.perf_counter() - self.wall0, 3)}
        if not self.data.seg and w.seen.item():
            rec["acc"] = w.correct.item() / w.seen.item()
        for k, v in w.extra.items():
            rec[k] = v.item() / max(1, w.steps)
        self.log.write(rec)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.3g}")
        w.reset()

    # -------------------------------------------------------------- evaluation
    def evaluate(self) -> tuple:
        """Evaluate the model (and its EMA): ``(log record, full result)``."""
        amp = self.optim.amp_dtype
        r = evaluate(self.model, self.data.val_batches, amp)
        rec = {k: r[k] for k in _METRICS if k in r}
        if self.optim.ema is not None:
            re = evaluate(self.optim.ema.module, self.data.val_batches, amp)
            rec.update({f"ema_{k}": re[k] for k in _METRICS if k in re})
            r["ema"] = re
        return rec, r

    def evaluate_epoch(self, ep_done: float) -> None:
        """Evaluate, keep the best, log and print it, and redraw the curves."""
        cfg, step, total = self.cfg, self.step, self.data.total
        t0 = time.perf_counter()
        rec, _ = self.evaluate()
        rec.update(kind="eval", step=step, epoch_f=round(ep_done, 4), eval_s=round(time.perf_counter() - t0, 3))
        key = self.best_key
        if rec.get(key) is not None and rec[key] >= self.best.get(key, -1):
            self.best = {key: rec[key], "step": step}
        self.log.write(rec)
        msg = ", ".join(f"{k} {rec[k]:.4f}" for k in ("loss", "top1", "top5", "mean_iou", "pixel_accuracy", "map50",
                                                     "ema_top1", "ema_mean_iou", "ema_map50") if k in rec)
        _print(f"[{cfg.name}] epoch {ep_done:.2f} step {step}/{total}: {msg}", self.proc.main)
        if self.proc.main and cfg.plot_every and math.ceil(ep_done) % cfg.plot_every == 0 and step < total:
            from operad.experiments.plots import plot_run

            plot_run(self.run_dir)

    # -------------------------------------------------------------- checkpoints and divergence
    def checkpoint_state(self) -> Dict[str, Any]:
        """Everything a resume needs to continue bit for bit."""
        o = self.optim.state_dict()
        return {"model": self.model.state_dict(), "optimizer": o["optimizer"], "scheduler": o["scheduler"],
                "ema": o["ema"], "scaler": o["scaler"], "rng": _rng_state(), "step": self.step,
                "epoch": self.step / self.data.spe, "best": self.best, "config": self.cfg.to_dict(),
                "window": self.window.state_dict()}

    def save(self) -> None:
        """Write the checkpoint and its ``checkpoint.json`` sidecar (main rank)
        after checking the model is finite. A failed write stops the run with a
        :class:`CheckpointError` that names the intact previous checkpoint."""
        self.check_finite()  # never write a checkpoint of a diverged model
        if self.proc.main:
            try:
                save_checkpoint(self.ckpt_path, self.checkpoint_state())
                side = os.path.join(self.run_dir, "checkpoint.json")
                with open(side + ".tmp", "w") as f:
                    json.dump({"step": self.step, "epoch": self.step / self.data.spe}, f)
                os.replace(side + ".tmp", side)
            except OSError as e:
                cause = e.__cause__ if isinstance(e, CheckpointError) and e.__cause__ is not None else e
                lg = self.last_good
                prev = (f"the previous checkpoint (step {lg['step']}) is intact; resume from it once the disk is "
                        f"writable") if lg["path"] else "no earlier checkpoint exists"
                raise CheckpointError(f"[{self.cfg.name}] the checkpoint of step {self.step} was not written to "
                                      f"{self.ckpt_path} ({type(cause).__name__}: {cause}); {prev}") from cause
        self.last_good.update(path=self.ckpt_path, step=self.step)

    def check_finite(self) -> None:
        """Raise :class:`DivergenceError` (naming the step and the last good
        checkpoint) if a loss, weight or norm statistic is NaN/inf; one host sync."""
        spe, step = self.data.spe, self.step
        b = int(self.bad_step.item())
        what = f"the loss is NaN or inf at step {b} (epoch {(b - 1) // spe})"
        if b < 0:
            if bool(torch.stack([p.detach().isfinite().all() for p in self.params]).all()):
                return
            what = f"the weights or norm statistics are NaN or inf after step {step} (epoch {(step - 1) // spe})"
        lg = self.last_good
        where = (f"the last good checkpoint is {lg['path']} (step {lg['step']}); "
                 f"resume from it with a lower lr, warm-up or clip_grad") if lg["path"] else \
            "no checkpoint was written before it (set checkpoint_every to keep one)"
        raise DivergenceError(f"[{self.cfg.name}] training diverged: {what}; {where}")

    # -------------------------------------------------------------- progress bar
    def _open_bar(self, epoch: int, i0: int) -> None:
        if self.proc.main and self.cfg.progress:
            from tqdm.auto import tqdm

            bs = self.cfg.batch_size
            left = min(self.data.spe, self.data.total - epoch * self.data.spe)
            self.bar = tqdm(total=left * bs, initial=i0 * bs, unit="img", unit_scale=True,
                            desc=f"{self.cfg.name} epoch {epoch + 1}/{self.data.epochs_total}", dynamic_ncols=True,
                            leave=False)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _finish(cfg: Config, proc: _Process, data: _Data, model: nn.Module, loop: _Loop, run_dir: str,
            n_params: int) -> Dict[str, Any]:
    """Stage 9: the final evaluation (of the EMA when kept) and the summary;
    on the main rank ``final.pt``, ``eval.json``, plots, the optional speed,
    deployment and robustness measurements, and ``summary.json``."""
    optim = loop.optim
    final_model = optim.ema.module if optim.ema is not None else model
    rec, full = loop.evaluate()
    train_time, step = loop.train_time, loop.step
    result: Dict[str, Any] = {"name": cfg.name, "experiment": cfg.experiment, "claim": cfg.claim,
                              "model": cfg.model or cfg.model_expr, "dataset": data.train.name,
                              "train_size": len(data.train), "val_size": len(data.val), "params": n_params,
                              "steps": step, "epochs": round(step / data.spe, 3), "world_size": proc.world,
                              "device": str(proc.device), "train_time_s": round(train_time, 3),
                              "train_img_per_s": round(loop.train_imgs / train_time, 2) if train_time else None,
                              "best": loop.best, "run_dir": run_dir}
    src = full.get("ema", full)
    for k in _METRICS:
        if k in src:
            result[k] = src[k]
    result["final"] = rec
    if proc.main:
        _write_final_files(cfg, data, model, optim, run_dir, src)
        result.update(_after_training(cfg, proc, data, final_model, optim.amp_dtype, run_dir))
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(result, f, indent=2)
    proc.barrier()
    return result


def _write_final_files(cfg: Config, data: _Data, model: nn.Module, optim: _Optimisation, run_dir: str,
                       src: Dict[str, Any]) -> None:
    """``final.pt`` (weights, EMA, config, classes), ``final.safetensors``, ``eval.json``, the confusion matrix and curves."""
    final_sd = {"model": model.state_dict(), "ema": optim.ema.state_dict() if optim.ema is not None else None,
                "config": cfg.to_dict(), "classes": list(data.train.classes)}
    save_checkpoint(os.path.join(run_dir, "final.pt"), final_sd)
    save_safetensors(optim.ema.module if optim.ema is not None else model,  # the evaluated weights
                     os.path.join(run_dir, "final.safetensors"))
    from operad.experiments.plots import plot_confusion, plot_run

    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(src, f, indent=2)
    plot_confusion(src["confusion_matrix"], data.train.classes, os.path.join(run_dir, "confusion.png"),
                   f"{cfg.name}: confusion matrix (val)")
    plot_run(run_dir)


def _after_training(cfg: Config, proc: _Process, data: _Data, final_model: nn.Module,
                    amp_dtype: Optional[torch.dtype], run_dir: str) -> Dict[str, Any]:
    """What the config asks after training: inference speed, a deployment
    rewrite, robustness sweeps (files under ``robustness/``)."""
    out: Dict[str, Any] = {}
    device, val_data, cl = proc.device, data.val, data.channels_last
    if cfg.measure_speed:
        from operad.experiments.bench.timing import inference_speed

        out["infer_img_per_s"] = inference_speed(final_model, tuple(val_data.images.shape[1:3]),
                                                 cfg.eval_batch_size, device, amp_dtype, cl)
    if cfg.deploy:
        out["deploy"] = _deploy(final_model, cfg, val_data, device, amp_dtype, cl)
    if cfg.robustness:
        import operad.experiments.evaluate  # noqa: F401
        ev = sys.modules["operad.experiments.evaluate"]

        rob = os.path.join(run_dir, "robustness")
        for r in cfg.robustness:
            if r == "jpeg":
                out["jpeg"] = ev.jpeg_sweep(final_model, val_data, device, cfg.eval_batch_size,
                                            out_dir=rob, label=cfg.name)
            elif r == "shift":
                out["shift"] = ev.shift_consistency(final_model, val_data, device, cfg.eval_batch_size,
                                                    out_dir=rob, label=cfg.name)
            elif r == "rotation":
                out["rotation"] = ev.rotation_sweep(final_model, val_data, device, cfg.eval_batch_size,
                                                    cfg.rotation_angles, out_dir=rob, label=cfg.name)
    return out


def train_run(cfg: Config, resume: bool = False, overwrite: bool = False, model: Optional[nn.Module] = None,
              train_data: Optional[ArrayData] = None, val_data: Optional[ArrayData] = None) -> Dict[str, Any]:
    """Train one validated :class:`Config`; returns the run's summary (also
    written to ``<out_dir>/<name>/summary.json``)."""
    if cfg.recipe == "speedrun":  # a recipe with its own loop (operad.experiments.speedrun)
        from operad.experiments.speedrun import run_config

        return run_config(cfg)
    if cfg.prune:  # checked before any training, so a bad table costs nothing
        from operad.experiments.pruning import prune_rounds, prune_settings

        prune_settings(cfg.prune)
    threads_before = torch.get_num_threads()
    try:
        result = _train_run(cfg, resume, overwrite, model, train_data, val_data)
        if cfg.prune:
            result["prune"] = prune_rounds(cfg, result["run_dir"], resume=resume, overwrite=overwrite)
        return result
    finally:
        torch.set_num_threads(threads_before)


def _train_run(cfg: Config, resume: bool, overwrite: bool, model: Optional[nn.Module],
               train_data: Optional[ArrayData], val_data: Optional[ArrayData]) -> Dict[str, Any]:
    """The stages in order (see the comment above :class:`_Log`)."""
    proc = _setup_process(cfg)
    opened = _open_run_dir(cfg, proc, resume, overwrite)
    data = _build_data(cfg, proc, train_data, val_data)
    model = _build_model(cfg, proc, data, model)
    n_params = sum(p.numel() for p in model.parameters())
    optim = _Optimisation(cfg, model, data, proc.device)
    log = _Log(opened.run.file("metrics.jsonl") if proc.main else None)
    start = _restore(cfg, proc, opened, data, model, optim, log)
    _write_record(cfg, proc, opened, n_params, start)
    loop = _Loop(cfg, proc, data, model, _wrap(cfg, proc, model), optim, log, opened.path, start)
    loop.run()
    return _finish(cfg, proc, data, model, loop, opened.path, n_params)


def _deploy(model: nn.Module, cfg: Config, val_data, device, amp_dtype, channels_last) -> Dict[str, Any]:
    """Apply a deployment rewrite (``fuse`` or ``remove_residuals``) to the trained
    model, measure how far its outputs move on a validation batch, and time both."""
    import copy

    from operad import rewrite
    from operad.experiments.bench.timing import inference_speed

    src = copy.deepcopy(model).float().eval()
    if cfg.deploy == "fuse":
        deployed = rewrite.fuse(src)
    else:
        deployed = rewrite.remove_residuals(src, strict=False)
    hw = tuple(val_data.images.shape[1:3])
    x = torch.randn(16, src.in_type.tensor_channels, *hw, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        diff = (deployed(x) - src(x)).abs().max().item()
    out = {"rewrite": cfg.deploy, "max_abs_diff": diff,
           "params": sum(p.numel() for p in deployed.parameters()),
           "infer_img_per_s": inference_speed(deployed, hw, cfg.eval_batch_size, device, amp_dtype, channels_last),
           "original_infer_img_per_s": inference_speed(src, hw, cfg.eval_batch_size, device, amp_dtype, channels_last)}
    out["speedup"] = out["infer_img_per_s"] / out["original_infer_img_per_s"]
    return out


def train(config: Union[str, os.PathLike, Dict[str, Any], Config], overrides: Union[Sequence[str], Dict[str, Any], None] = None,
          resume: bool = False, overwrite: bool = False, profile: Optional[str] = None,
          only: Optional[Sequence[str]] = None, **kwargs) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
    """Train from a TOML path, a dict or a :class:`Config`, with ``overrides``
    (``["lr=0.05"]`` or a dict). Returns the run's summary, or a list of
    summaries when the config has ``[[runs]]``.

    >>> train({"model": "resnet20", "epochs": 1, "subset": 50}, ["lr=0.05"])   # doctest: +SKIP
    """
    from operad.experiments.config import parse_overrides

    raw = load_config(config)
    ov = parse_overrides(overrides) if isinstance(overrides, (list, tuple)) else dict(overrides or {})
    multi = bool(raw.get("runs")) and len(raw["runs"]) > 1
    cfgs = expand_runs(raw, ov, profile, only)
    for c in cfgs:  # every run's name before the first run trains
        check_run_name(c.name)
    results = [train_run(c, resume=resume, overwrite=overwrite, **kwargs) for c in cfgs]
    return results if multi else results[0]


def load_run_model(run: str, use_ema: bool = True, device="cpu") -> tuple:
    """Rebuild a finished run's model from ``final.pt`` (or ``checkpoint.pt``):
    returns ``(model, config, classes)``."""
    path = run
    if os.path.isdir(run):
        path = os.path.join(run, "final.pt")
        if not os.path.isfile(path):
            path = os.path.join(run, CKPT)
    ck = load_checkpoint(path, device)
    cfg = Config.from_dict(ck["config"])
    classes = ck.get("classes")
    sd = ck["ema"] if use_ema and ck.get("ema") is not None else ck["model"]
    n = len(classes) if classes else _num_classes_from_sd(sd)
    in_chans = 3
    model = build_model(cfg, n, in_chans)
    model.load_state_dict(sd)
    return model.to(device).eval(), cfg, classes


def _num_classes_from_sd(sd: Dict[str, torch.Tensor]) -> int:
    last = [v for k, v in sd.items() if k.endswith("weight")][-1]
    return int(last.shape[0])
