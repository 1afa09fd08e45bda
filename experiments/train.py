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
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operad.experiments.augment import Augment, DeviceBatches, SegAugment, mix_batch, mixed_loss, step_generator
from operad.experiments.config import Config, ConfigError, dump_toml, expand_runs, load_config
from operad.experiments.data import ArrayData, load_dataset
from operad.experiments.evaluate import evaluate
from operad.experiments.regularization import augment_options, step_regularization

__all__ = ["train", "train_run", "default_threads", "build_model", "DivergenceError", "EMA", "make_optimizer", "make_schedule",
           "load_checkpoint", "save_checkpoint", "load_run_model", "environment"]

CKPT = "checkpoint.pt"


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


# ----------------------------------------------------------------------------- model

def build_model(cfg: Config, num_classes: int, in_chans: int = 3) -> nn.Module:
    """The model of a config: ``create_model(cfg.model, ...)`` or the term
    ``cfg.model_expr`` (evaluated with only ``ops`` and ``num_classes`` in
    scope) bound to ``Field(in_chans)``.

    >>> from operad.experiments.config import Config
    >>> m = build_model(Config(model_expr="ops.conv(4) >> ops.global_pool() >> ops.linear(num_classes)"), 10)
    >>> m(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 10])
    """
    if cfg.model_expr:
        from operad import Field, ops

        try:
            term = eval(f"({cfg.model_expr.strip()})", {"__builtins__": {}}, {"ops": ops, "num_classes": num_classes})  # noqa: S307
        except Exception as e:
            raise ConfigError(f"model_expr {cfg.model_expr!r} failed: {type(e).__name__}: {e}") from None
        if not hasattr(term, "bind"):
            raise ConfigError(f"model_expr must give an operad term (with .bind), got {type(term).__name__}")
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
    ``os.replace``: a reader sees the old or the new checkpoint, never half."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


# ----------------------------------------------------------------------------- the run

class _Log:
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


def train_run(cfg: Config, resume: bool = False, overwrite: bool = False, model: Optional[nn.Module] = None,
              train_data: Optional[ArrayData] = None, val_data: Optional[ArrayData] = None) -> Dict[str, Any]:
    """Train one validated :class:`Config`; returns the run's summary (also
    written to ``<out_dir>/<name>/summary.json``)."""
    threads_before = torch.get_num_threads()
    try:
        return _train_run(cfg, resume, overwrite, model, train_data, val_data)
    finally:
        torch.set_num_threads(threads_before)


def _train_run(cfg: Config, resume: bool, overwrite: bool, model: Optional[nn.Module],
               train_data: Optional[ArrayData], val_data: Optional[ArrayData]) -> Dict[str, Any]:
    rank, world, local_rank, dist = _dist_setup()
    main = rank == 0
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

    # --- data
    root = cfg.data_root or None
    if train_data is None:
        train_data = load_dataset(cfg.dataset, "train", root, cfg.subset or None, cfg.download)
    if val_data is None:
        val_data = load_dataset(cfg.dataset, _val_split(train_data.name), root, cfg.val_subset or None, cfg.download)
    task = train_data.task if cfg.task == "auto" else cfg.task
    seg = task == "segmentation"
    channels_last = cfg.channels_last and device.type == "cuda"
    if seg:
        crop = tuple(cfg.crop_size) if cfg.crop_size else None
        aug = SegAugment(tuple(cfg.scale_range), crop, cfg.flip, train_data.ignore_index)
    else:
        aug = Augment(cfg.crop_padding, cfg.flip, cfg.cutout, cfg.rotate, **augment_options(cfg))
    batches = DeviceBatches(train_data, cfg.batch_size, device, shuffle=True, drop_last=True, augment=aug,
                            seed=cfg.seed, rank=rank, world_size=world, channels_last=channels_last)
    val_batches = DeviceBatches(val_data, cfg.eval_batch_size, device, rank=rank, world_size=world,
                                channels_last=channels_last, shard_eval=True)
    spe = len(batches)
    if spe == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(train_data)} training samples")
    total = cfg.max_steps or cfg.epochs * spe
    epochs_total = -(-total // spe)

    # --- model, optimiser, schedule, EMA
    if model is None:
        model = build_model(cfg, train_data.num_classes, train_data.images.shape[-1])
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(cfg, model)
    sched = make_schedule(cfg, opt, total, spe)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    # --- run directory
    run_dir = os.path.abspath(os.path.join(cfg.out_dir, cfg.name))
    ckpt_path = os.path.join(run_dir, CKPT)
    if main:
        if os.path.exists(ckpt_path) and not resume and not overwrite:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to "
                              f"start again, or choose another name= / out_dir=")
        if overwrite and not resume and os.path.isfile(os.path.join(run_dir, "config.toml")):
            shutil.rmtree(run_dir)
        os.makedirs(run_dir, exist_ok=True)
    if dist is not None:
        dist.barrier()
    log = _Log(os.path.join(run_dir, "metrics.jsonl") if main else None)

    step = 0
    best: Dict[str, Any] = {}
    resumed_from = None
    if resume and os.path.isfile(ckpt_path):
        ck = load_checkpoint(ckpt_path, device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if ema is not None and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        step = int(ck["step"])
        best = dict(ck.get("best", {}))
        resumed_from = step
        if main:
            log.truncate_after(step)
        _print(f"[{cfg.name}] resumed from step {step} ({ckpt_path})", main)
    elif resume:
        _print(f"[{cfg.name}] --resume: no checkpoint in {run_dir}; starting from scratch", main)

    if main:
        with open(os.path.join(run_dir, "config.toml"), "w") as f:
            f.write(dump_toml(cfg.to_dict(), f"operad run config ({cfg.name}); written {datetime.datetime.now():%c}"))
        env = environment(device)
        env.update(world_size=world, params=n_params, resumed_from=resumed_from)
        with open(os.path.join(run_dir, "env.json"), "w") as f:
            json.dump(env, f, indent=2, default=str)

    net: nn.Module = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    def checkpoint_state() -> Dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": _rng_state(), "step": step, "epoch": step / spe, "best": best, "config": cfg.to_dict()}

    last_good = {"path": ckpt_path if resumed_from is not None else None, "step": resumed_from}

    def save() -> None:
        check_finite()  # never write a checkpoint of a diverged model
        if main:
            save_checkpoint(ckpt_path, checkpoint_state())
            with open(os.path.join(run_dir, "checkpoint.json.tmp"), "w") as f:
                json.dump({"step": step, "epoch": step / spe}, f)
            os.replace(os.path.join(run_dir, "checkpoint.json.tmp"), os.path.join(run_dir, "checkpoint.json"))
        last_good.update(path=ckpt_path, step=step)

    # --- accumulators on the device (read only at log intervals)
    loss_acc = torch.zeros((), device=device)
    correct_acc = torch.zeros((), device=device)
    seen_acc = torch.zeros((), device=device)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    n_acc = 0
    t_interval = time.perf_counter()
    imgs_interval = 0
    train_time = 0.0
    train_imgs = 0
    mixing = (cfg.mixup or cfg.cutmix) and not seg
    ignore = train_data.ignore_index if seg else -100

    params = [p for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]

    def check_finite() -> None:
        """Called at log intervals and before every checkpoint (one host sync)."""
        b = int(bad_step.item())
        what = f"the loss is NaN or inf at step {b} (epoch {(b - 1) // spe})"
        if b < 0:
            if bool(torch.stack([p.detach().isfinite().all() for p in params]).all()):
                return
            what = f"the weights or norm statistics are NaN or inf after step {step} (epoch {(step - 1) // spe})"
        where = (f"the last good checkpoint is {last_good['path']} (step {last_good['step']}); "
                 f"resume from it with a lower lr, warm-up or clip_grad") if last_good["path"] else \
            "no checkpoint was written before it (set checkpoint_every to keep one)"
        raise DivergenceError(f"[{cfg.name}] training diverged: {what}; {where}")

    def evaluate_now() -> Dict[str, Any]:
        r = evaluate(model, val_batches, amp_dtype)
        rec = {k: r[k] for k in ("loss", "top1", "top5", "mean_iou", "pixel_accuracy") if k in r}
        if ema is not None:
            re = evaluate(ema.module, val_batches, amp_dtype)
            rec.update({f"ema_{k}": re[k] for k in ("loss", "top1", "top5", "mean_iou", "pixel_accuracy") if k in re})
            r["ema"] = re
        return rec, r

    bar = None
    wall0 = time.perf_counter()
    try:
        while step < total:
            epoch = step // spe
            i0 = step % spe
            if main and cfg.progress:
                from tqdm.auto import tqdm

                left = min(spe, total - epoch * spe)
                bar = tqdm(total=left * cfg.batch_size, initial=i0 * cfg.batch_size, unit="img", unit_scale=True,
                           desc=f"{cfg.name} epoch {epoch + 1}/{epochs_total}", dynamic_ncols=True, leave=False)
            net.train()
            for xb, yb in batches.epoch(epoch, start=i0, step_offset=epoch * spe):
                yb, smoothing = step_regularization(cfg, model, yb, step, total, spe, train_data.num_classes)
                if mixing:
                    rng = np.random.default_rng((cfg.seed, step, rank))
                    xb, ya, yb2, lam = mix_batch(xb, yb, rng, cfg.mixup, cfg.cutmix,
                                                 step_generator(cfg.seed + 1, step, device))
                with autocast():
                    out = net(xb)
                    if seg and out.shape[-2:] != yb.shape[-2:]:
                        out = F.interpolate(out, size=yb.shape[-2:], mode="bilinear", align_corners=False)
                    if mixing:
                        loss = mixed_loss(out.float(), ya, yb2, lam, smoothing)
                    else:
                        loss = F.cross_entropy(out.float(), yb, label_smoothing=smoothing,
                                               ignore_index=ignore)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                if ema is not None:
                    ema.update(model, step)
                step += 1
                ld = loss.detach()
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(ld), torch.full_like(bad_step, step), bad_step)
                loss_acc += torch.nan_to_num(ld, nan=0.0, posinf=0.0, neginf=0.0)
                if not seg:
                    pred = out.detach().argmax(1)
                    correct_acc += ((pred == ya).float() * lam + (pred == yb2).float() * (1 - lam)).sum() \
                        if mixing else (pred == yb).sum()
                    seen_acc += yb.shape[0]
                n_acc += 1
                imgs_interval += cfg.batch_size
                if bar is not None:
                    bar.update(cfg.batch_size)
                end_epoch = step % spe == 0 or step == total
                if step % cfg.log_every == 0 or end_epoch:
                    check_finite()
                    dt = time.perf_counter() - t_interval
                    train_time += dt
                    train_imgs += imgs_interval
                    rec = {"kind": "train", "step": step, "epoch_f": round(step / spe, 4),
                           "loss": loss_acc.item() / max(1, n_acc), "lr": opt.param_groups[0]["lr"],
                           "img_per_s": imgs_interval / max(dt, 1e-9), "time": round(time.perf_counter() - wall0, 3)}
                    if not seg and seen_acc.item():
                        rec["acc"] = correct_acc.item() / seen_acc.item()
                    log.write(rec)
                    if bar is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.3g}")
                    loss_acc.zero_(); correct_acc.zero_(); seen_acc.zero_()
                    n_acc, imgs_interval = 0, 0
                    t_interval = time.perf_counter()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not end_epoch:
                    save()
                    t_interval = time.perf_counter()
                if end_epoch:
                    break
            if bar is not None:
                bar.close()
                bar = None
            ep_done = step / spe
            if (math.ceil(ep_done) % cfg.eval_every == 0) or step >= total:
                t0 = time.perf_counter()
                rec, _ = evaluate_now()
                rec.update(kind="eval", step=step, epoch_f=round(ep_done, 4), eval_s=round(time.perf_counter() - t0, 3))
                key = "mean_iou" if seg else "top1"
                if rec.get(key) is not None and rec[key] >= best.get(key, -1):
                    best = {key: rec[key], "step": step}
                log.write(rec)
                msg = ", ".join(f"{k} {rec[k]:.4f}" for k in ("loss", "top1", "top5", "mean_iou", "pixel_accuracy",
                                                             "ema_top1", "ema_mean_iou") if k in rec)
                _print(f"[{cfg.name}] epoch {ep_done:.2f} step {step}/{total}: {msg}", main)
                if main and cfg.plot_every and math.ceil(ep_done) % cfg.plot_every == 0 and step < total:
                    from operad.experiments.plots import plot_run

                    plot_run(run_dir)
            save()
            t_interval = time.perf_counter()
    finally:
        if bar is not None:
            bar.close()

    # --- final evaluation and summary
    final_model = ema.module if ema is not None else model
    rec, full = evaluate_now()
    result: Dict[str, Any] = {"name": cfg.name, "experiment": cfg.experiment, "claim": cfg.claim,
                              "model": cfg.model or cfg.model_expr, "dataset": train_data.name,
                              "train_size": len(train_data), "val_size": len(val_data), "params": n_params,
                              "steps": step, "epochs": round(step / spe, 3), "world_size": world,
                              "device": str(device), "train_time_s": round(train_time, 3),
                              "train_img_per_s": round(train_imgs / train_time, 2) if train_time else None,
                              "best": best, "run_dir": run_dir}
    src = full.get("ema", full)
    for k in ("loss", "top1", "top5", "mean_iou", "pixel_accuracy"):
        if k in src:
            result[k] = src[k]
    result["final"] = rec
    if main:
        final_sd = {"model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                    "config": cfg.to_dict(), "classes": list(train_data.classes)}
        save_checkpoint(os.path.join(run_dir, "final.pt"), final_sd)
        from operad.experiments.plots import plot_confusion, plot_run

        with open(os.path.join(run_dir, "eval.json"), "w") as f:
            json.dump(src, f, indent=2)
        plot_confusion(src["confusion_matrix"], train_data.classes, os.path.join(run_dir, "confusion.png"),
                       f"{cfg.name}: confusion matrix (val)")
        plot_run(run_dir)
        if cfg.measure_speed:
            from operad.experiments.bench.timing import inference_speed

            result["infer_img_per_s"] = inference_speed(final_model, tuple(val_data.images.shape[1:3]),
                                                        cfg.eval_batch_size, device, amp_dtype, channels_last)
        if cfg.deploy:
            result["deploy"] = _deploy(final_model, cfg, val_data, device, amp_dtype, channels_last)
        if cfg.robustness:
            import operad.experiments.evaluate  # noqa: F401
            ev = sys.modules["operad.experiments.evaluate"]

            rob = os.path.join(run_dir, "robustness")
            for r in cfg.robustness:
                if r == "jpeg":
                    result["jpeg"] = ev.jpeg_sweep(final_model, val_data, device, cfg.eval_batch_size,
                                                   out_dir=rob, label=cfg.name)
                elif r == "shift":
                    result["shift"] = ev.shift_consistency(final_model, val_data, device, cfg.eval_batch_size,
                                                           out_dir=rob, label=cfg.name)
                elif r == "rotation":
                    result["rotation"] = ev.rotation_sweep(final_model, val_data, device, cfg.eval_batch_size,
                                                           cfg.rotation_angles, out_dir=rob, label=cfg.name)
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(result, f, indent=2)
    if dist is not None:
        dist.barrier()
    return result


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
