"""The CIFAR-10 speed recipe: train ``cifar10_speedrun`` to a target accuracy fast.

Every piece follows facts published with the speed-record work (Keller
Jordan's airbench94 and hlb-cifar10), written here in operad's terms:

* the whole split lives on the device as one tensor; each epoch is one
  augmentation of it: *alternating flip* (a fixed random half of the images is
  mirrored on even epochs, the other half on odd epochs, so every image is
  seen both ways every two epochs) and *random translation* by up to 2 pixels
  (reflection padding, then a random crop);
* the frozen patch-whitening layer is fitted to the first 5,000 training
  images (:func:`init_whitening`); its bias trains for the first 3 epochs only;
* Nesterov SGD on a summed, label-smoothed (0.2) loss, with learning rate and
  weight decay stated per 1,024 examples and decoupled from the momentum
  (:func:`make_optimizer`); batch-norm scales stay at 1, their shifts learn 64x
  faster; a triangular schedule (0.2 -> 1 at 23% -> 0.07);
* *lookahead*: from epoch 3, every 5 steps the weights are averaged into an
  EMA whose decay grows as ``0.95^5 * (step / total)^3`` and copied back
  (:class:`Lookahead`);
* test-time augmentation: the mean of the logits of the image, its mirror and
  one-pixel reflected translations (:func:`tta_logits`).

The timer (like the record's) covers normalisation, whitening fit, training
and the final test-time evaluation; optional intermediate evaluations are not
timed. On CUDA the recipe runs in bf16 autocast with channels_last.

    >>> from operad.experiments.speedrun import run
    >>> out = run("/work/shared/data", "cuda", runs=5, target=0.94)     # doctest: +SKIP
    >>> out["time_to_target_mean_s"], out["acc_mean"]                  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operad.experiments.data import ArrayData, load_dataset
from operad.operators.whiten import PatchWhitening

#: tiny settings for smoke tests (seconds on a CPU): ``run(data_root, "cpu", runs=1, **SMOKE)``
SMOKE: Dict[str, Any] = {"subset": 10, "val_subset": 5, "epochs": 1.0, "batch_size": 50, "eval_batch_size": 50,
                         "whiten_images": 100, "model_args": {"widths": [16, 32, 32]}, "target": None}

__all__ = ["SMOKE", "SpeedConfig", "run", "run_config", "config_settings", "train_speedrun", "init_whitening",
           "flip_mask", "alternating_flip", "random_translate", "triangle", "make_optimizer", "Lookahead", "tta_views",
           "tta_logits", "tta_accuracy", "DeviceSplit"]


@dataclass
class SpeedConfig:
    """The recipe's settings; defaults are the published airbench94 values.

    ``lr`` and ``weight_decay`` are per 1,024 examples and decoupled from the
    momentum (see :func:`make_optimizer`); ``epochs`` may be fractional.
    """

    model: str = "cifar10_speedrun"
    model_args: Dict[str, Any] = field(default_factory=dict)
    epochs: float = 9.9
    batch_size: int = 1024
    lr: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_scaler: float = 64.0
    label_smoothing: float = 0.2
    lr_start: float = 0.2
    lr_peak_at: float = 0.23
    lr_end: float = 0.07
    freeze_bn_scale: bool = True
    whiten_images: int = 5000
    whiten_bias_epochs: float = 3.0
    lookahead_start_epochs: float = 3.0
    lookahead_every: int = 5
    lookahead_base: float = 0.95
    lookahead_pow: float = 3.0
    flip: bool = True
    translate: int = 2
    tta_level: int = 2
    eval_batch_size: int = 2000
    eval_every: int = 0  # epochs between untimed intermediate evaluations; 0: only the final one
    seed: int = 0
    amp: str = "auto"  # "auto" (bf16 on CUDA), "bf16" or "off"
    channels_last: bool = True
    compile: bool = False
    progress: bool = False

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SpeedConfig":
        """Validated settings from a mapping; an unknown key names the closest valid one.

        >>> SpeedConfig.from_dict({"epochs": 2}).epochs
        2.0
        """
        names = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for k, v in d.items():
            if k not in names:
                close = difflib.get_close_matches(k, list(names), n=1)
                raise ValueError(f"unknown speedrun setting {k!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            default = getattr(cls(), k)
            kw[k] = float(v) if isinstance(default, float) and isinstance(v, (int, float)) else v
        cfg = cls(**kw)
        if cfg.tta_level not in (0, 1, 2):
            raise ValueError(f"tta_level must be 0 (none), 1 (mirror) or 2 (mirror + translate); got {cfg.tta_level}")
        if cfg.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be auto, bf16 or off; got {cfg.amp!r}")
        if cfg.epochs <= 0 or cfg.batch_size <= 0 or not 0 <= cfg.momentum < 1:
            raise ValueError("epochs and batch_size must be positive and momentum in [0, 1)")
        return cfg


# ----------------------------------------------------------------------------- data on the device

@dataclass
class DeviceSplit:
    """A split as uint8 images (N, C, H, W) and int64 labels on one device."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    num_classes: int

    @classmethod
    def from_array(cls, data: ArrayData, device) -> "DeviceSplit":
        x = torch.from_numpy(np.ascontiguousarray(data.images)).to(device).permute(0, 3, 1, 2).contiguous()
        y = torch.from_numpy(np.asarray(data.labels, np.int64)).to(device)
        return cls(x, y, tuple(data.mean), tuple(data.std), data.num_classes)

    def normalized(self, dtype=torch.float32, n: Optional[int] = None) -> torch.Tensor:
        """The first ``n`` images (all by default) as normalised floats."""
        x = self.images if n is None else self.images[:n]
        m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1) * 255
        s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1) * 255
        return ((x.float() - m) / s).to(dtype)

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ----------------------------------------------------------------------------- augmentation

def flip_mask(n: int, seed: int, device="cpu") -> torch.Tensor:
    """The run's fixed random half: True for the images mirrored on even epochs."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    return (torch.rand(n, generator=g) < 0.5).to(device)


def alternating_flip(images: torch.Tensor, mask: torch.Tensor, epoch: int) -> torch.Tensor:
    """Mirror the images where ``mask`` on even epochs and where ``~mask`` on odd ones.

    >>> x = torch.arange(4.).view(1, 1, 1, 4).repeat(2, 1, 1, 1)
    >>> m = torch.tensor([True, False])
    >>> alternating_flip(x, m, 0)[:, 0, 0, 0].tolist(), alternating_flip(x, m, 1)[:, 0, 0, 0].tolist()
    ([3.0, 0.0], [0.0, 3.0])
    """
    sel = mask if epoch % 2 == 0 else ~mask
    return torch.where(sel.view(-1, 1, 1, 1), images.flip(-1), images)


def random_translate(padded: torch.Tensor, r: int, gen: torch.Generator) -> torch.Tensor:
    """Random crops of size ``(H - 2r, W - 2r)`` from images padded by ``r``:
    a translation by ``-r..r`` pixels in each axis, drawn per image."""
    if r == 0:
        return padded
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * r, wp - 2 * r
    dev = padded.device
    oy = torch.randint(0, 2 * r + 1, (n,), generator=gen, device=dev)
    ox = torch.randint(0, 2 * r + 1, (n,), generator=gen, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None].expand(n, c, h, wp)
    x = torch.gather(padded, 2, rows)
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :].expand(n, c, h, w)
    return torch.gather(x, 3, cols)


class EpochImages:
    """The training images of each epoch: alternating flip, then a random
    translation from reflection-padded copies (padding commutes with mirroring,
    so one padded copy serves every epoch)."""

    def __init__(self, x: torch.Tensor, flip: bool, translate: int, seed: int):
        mask = flip_mask(x.shape[0], seed, x.device) if flip else None
        base = alternating_flip(x, mask, 0) if flip else x
        self.flip, self.r = flip, translate
        self.padded = F.pad(base, (translate,) * 4, mode="reflect") if translate else base

    def epoch(self, epoch: int, gen: torch.Generator) -> torch.Tensor:
        p = self.padded.flip(-1) if self.flip and epoch % 2 else self.padded
        return random_translate(p, self.r, gen)


# ----------------------------------------------------------------------------- whitening

class _Reached(Exception):
    pass


@torch.no_grad()
def init_whitening(model: nn.Module, images: torch.Tensor) -> int:
    """Fit every :class:`PatchWhitening` layer of ``model`` (in forward order) to
    the inputs it sees when ``images`` go through the model in eval mode;
    returns how many were fitted.

    >>> from operad import ops, Field
    >>> m = (ops.patch_whiten(k=2) >> ops.relu()).bind(Field(3))
    >>> init_whitening(m, torch.randn(16, 3, 8, 8))
    1
    """
    layers = [m for m in model.modules() if isinstance(m, PatchWhitening)]
    was = model.training
    model.eval()
    try:
        for layer in layers:
            seen: Dict[str, torch.Tensor] = {}

            def grab(mod, args):
                seen["x"] = args[0]
                raise _Reached

            hook = layer.register_forward_pre_hook(grab)
            try:
                model(images)
            except _Reached:
                pass
            finally:
                hook.remove()
            layer.fit(seen["x"])
    finally:
        model.train(was)
    return len(layers)


# ----------------------------------------------------------------------------- optimisation

def triangle(step: int, total: int, start: float, peak_at: float, end: float) -> float:
    """Piecewise-linear learning-rate factor: ``start`` at step 0, 1 at
    ``peak_at * total``, ``end`` at ``total``.

    >>> [round(triangle(s, 100, 0.2, 0.25, 0.0), 2) for s in (0, 25, 100)]
    [0.2, 1.0, 0.0]
    """
    peak = int(peak_at * total)
    if step < peak:
        return start + (1 - start) * step / peak
    return 1 + (end - 1) * min(1.0, (step - peak) / max(1, total - peak))


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def make_optimizer(model: nn.Module, cfg: SpeedConfig) -> torch.optim.SGD:
    """Nesterov SGD for a summed loss, with the step size decoupled from the
    momentum and batch size: a step moves ``lr / (1024 (1 + 1/(1 - momentum)))``
    per unit gradient, weight decay shrinks weights by ``weight_decay * batch /
    (1024 (1 + 1/(1 - momentum)))`` per step at the schedule's peak, batch-norm
    shifts get ``bias_scaler`` times the learning rate (same decay) and
    batch-norm scales are frozen at 1 when ``freeze_bn_scale``. Each group's
    ``base_lr`` is what the schedule multiplies."""
    scale = 1024 * (1 + 1 / (1 - cfg.momentum))
    lr, wd = cfg.lr / scale, cfg.weight_decay * cfg.batch_size / scale
    norm_ids = set()
    for m in model.modules():
        if _is_norm(m):
            if m.weight is not None and cfg.freeze_bn_scale:
                m.weight.requires_grad_(False)
            if m.bias is not None:
                norm_ids.add(id(m.bias))
    params = [p for p in model.parameters() if p.requires_grad]
    norm = [p for p in params if id(p) in norm_ids]
    other = [p for p in params if id(p) not in norm_ids]
    lr_b = lr * cfg.bias_scaler
    groups = [dict(params=norm, lr=lr_b, base_lr=lr_b, weight_decay=wd / lr_b),
              dict(params=other, lr=lr, base_lr=lr, weight_decay=wd / lr)]
    return torch.optim.SGD([g for g in groups if g["params"]], momentum=cfg.momentum, nesterov=cfg.momentum > 0)


class Lookahead:
    """Lookahead with an EMA: ``update(model, decay)`` moves the average of every
    floating-point state tensor (weights and norm statistics) towards the
    model, ``avg <- decay * avg + (1 - decay) * model``, and copies it back.

    >>> m = nn.Linear(1, 1, bias=False); _ = m.weight.data.zero_(); la = Lookahead(m)
    >>> _ = m.weight.data.fill_(1.0); la.update(m, 0.75); float(m.weight.detach())
    0.25
    """

    def __init__(self, model: nn.Module):
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        state = model.state_dict()
        avg = list(self.avg.values())
        cur = [state[k] for k in self.avg]
        torch._foreach_lerp_(avg, cur, 1 - decay)
        torch._foreach_copy_(cur, avg)


# ----------------------------------------------------------------------------- evaluation

def _translate_reflect(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift content by (dy, dx) in {-1, 0, 1}, filling the border by reflection."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return p[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def tta_views(x: torch.Tensor, level: int) -> List[Tuple[float, torch.Tensor]]:
    """The weighted views of test-time augmentation: level 0 the image; level 1
    the image and its mirror (1/2 each); level 2 those (1/4 each) and the mirror
    pairs of the one-pixel reflected translations down-right and up-left (1/8 each).

    >>> [w for w, _ in tta_views(torch.zeros(1, 3, 8, 8), 2)]
    [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    """
    if level == 0:
        return [(1.0, x)]
    if level == 1:
        return [(0.5, x), (0.5, x.flip(-1))]
    views = [(0.25, x), (0.25, x.flip(-1))]
    for d in (1, -1):
        t = _translate_reflect(x, d, d)
        views += [(0.125, t), (0.125, t.flip(-1))]
    return views


@torch.no_grad()
def tta_logits(model: nn.Module, x: torch.Tensor, level: int = 2, batch_size: int = 2000) -> torch.Tensor:
    """Weighted mean of the model's logits over :func:`tta_views`, in chunks (float32)."""
    out = []
    for xb in x.split(batch_size):
        acc = None
        for w, v in tta_views(xb, level):
            y = model(v).float() * w
            acc = y if acc is None else acc + y
        out.append(acc)
    return torch.cat(out)


def tta_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, level: int = 2, batch_size: int = 2000,
                 amp_dtype: Optional[torch.dtype] = None) -> float:
    """Top-1 accuracy of :func:`tta_logits` in eval mode."""
    was = model.training
    model.eval()
    try:
        with _autocast(x.device, amp_dtype):
            pred = tta_logits(model, x, level, batch_size).argmax(1)
    finally:
        model.train(was)
    return float((pred == y).float().mean())


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# ----------------------------------------------------------------------------- training

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Sums timed sections, synchronising the device at both edges."""

    def __init__(self, device: torch.device):
        self.device, self.total, self._t0 = device, 0.0, 0.0

    def start(self) -> None:
        _sync(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        _sync(self.device)
        dt = time.perf_counter() - self._t0
        self.total += dt
        return dt


def _amp_dtype(cfg: SpeedConfig, device: torch.device) -> Optional[torch.dtype]:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def _build(cfg: SpeedConfig, num_classes: int, in_chans: int, device: torch.device) -> nn.Module:
    from operad.models import create_model

    model = create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, **cfg.model_args).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass
class _Loop:
    """What one run's epochs share."""

    cfg: SpeedConfig
    model: nn.Module
    net: nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    amp: Optional[torch.dtype]
    batch: int
    spe: int
    total: int
    step: int = 0
    lookahead: Optional[Lookahead] = None


def _train_epoch(lp: _Loop, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One pass over the epoch's images ``x``; returns the summed loss (on the device)."""
    cfg, dev = lp.cfg, x.device
    perm = torch.randperm(x.shape[0], generator=lp.gen, device=dev)
    la_from = cfg.lookahead_start_epochs * lp.spe
    loss_sum = torch.zeros((), device=dev)
    cl = dev.type == "cuda" and cfg.channels_last
    for i in range(lp.spe):
        if lp.step >= lp.total:
            break
        idx = perm[i * lp.batch:(i + 1) * lp.batch]
        xb, yb = x[idx], y[idx]
        if cl:
            xb = xb.contiguous(memory_format=torch.channels_last)
        f = triangle(lp.step, lp.total, cfg.lr_start, cfg.lr_peak_at, cfg.lr_end)
        for g in lp.opt.param_groups:
            g["lr"] = g["base_lr"] * f
        with _autocast(dev, lp.amp):
            out = lp.net(xb)
        loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing, reduction="sum")
        lp.opt.zero_grad(set_to_none=True)
        loss.backward()
        lp.opt.step()
        lp.step += 1
        loss_sum += loss.detach()
        if lp.step > la_from and lp.step % cfg.lookahead_every == 0:  # the step just taken lies past the start
            if lp.lookahead is None:
                lp.lookahead = Lookahead(lp.model)
            else:
                rho = cfg.lookahead_base ** cfg.lookahead_every * (lp.step / lp.total) ** cfg.lookahead_pow
                lp.lookahead.update(lp.model, rho)
    if lp.lookahead is not None:
        lp.lookahead.update(lp.model, 1.0)  # end the epoch on the averaged weights
    return loss_sum


def _start(cfg: SpeedConfig, train: DeviceSplit, device: torch.device, seed: int) -> _Loop:
    torch.manual_seed(seed)
    model = _build(cfg, train.num_classes, train.images.shape[1], device)
    net = torch.compile(model) if cfg.compile else model
    batch = min(cfg.batch_size, len(train))
    spe = len(train) // batch
    gen = torch.Generator(device=device).manual_seed(seed)
    return _Loop(cfg, model, net, make_optimizer(model, cfg), gen, _amp_dtype(cfg, device), batch, spe,
                 math.ceil(spe * cfg.epochs))


def train_speedrun(cfg: SpeedConfig, train: DeviceSplit, test: DeviceSplit, device="cpu", seed: Optional[int] = None,
                   deadline: Optional[float] = None, target: Optional[float] = None) -> Dict[str, Any]:
    """One timed run of the recipe; returns its accuracies (with and without
    test-time augmentation), timed seconds, time to ``target`` (None if not
    reached), training images/s and the loss per epoch. A run still going at
    ``deadline`` (a ``time.perf_counter()`` value) stops with ``completed: False``."""
    device = torch.device(device)
    seed = cfg.seed if seed is None else seed
    lp = _start(cfg, train, device, seed)
    clock = _Clock(device)
    dtype = lp.amp or torch.float32
    clock.start()
    x_train, x_test = train.normalized(dtype), test.normalized(dtype)
    with _autocast(device, lp.amp):
        init_whitening(lp.model, x_train[:cfg.whiten_images])
    images = EpochImages(x_train, cfg.flip, cfg.translate, seed)
    clock.stop()
    whiten_bias = [m.bias for m in lp.model.modules() if isinstance(m, PatchWhitening) and m.bias is not None]
    rec: Dict[str, Any] = {"seed": seed, "completed": True, "epoch_loss": [], "epoch_s": [], "evals": []}
    train_s, hit = 0.0, None
    for epoch in range(math.ceil(cfg.epochs)):
        if lp.step >= lp.total:
            break
        if deadline is not None and time.perf_counter() > deadline:
            rec["completed"] = False
            break
        for b in whiten_bias:
            b.requires_grad_(epoch < cfg.whiten_bias_epochs)
        clock.start()
        loss = _train_epoch(lp, images.epoch(epoch, lp.gen), train.labels)
        rec["epoch_s"].append(clock.stop())
        train_s += rec["epoch_s"][-1]
        rec["epoch_loss"].append(float(loss) / (lp.batch * lp.spe))
        if not math.isfinite(rec["epoch_loss"][-1]):
            raise RuntimeError(f"speedrun diverged in epoch {epoch} (loss {rec['epoch_loss'][-1]}); lower lr")
        if cfg.progress:
            print(f"[speedrun seed {seed}] epoch {epoch + 1}: loss {rec['epoch_loss'][-1]:.4f}, "
                  f"{clock.total:.2f} s", flush=True)
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and lp.step < lp.total:
            acc = tta_accuracy(lp.model, x_test, test.labels, cfg.tta_level, cfg.eval_batch_size, lp.amp)
            _sync(device)
            rec["evals"].append({"epoch": epoch + 1, "tta_acc": acc, "time_s": clock.total})
            if target is not None and hit is None and acc >= target:
                hit = clock.total  # the training time that made a model reaching the target (as time_s, evals excluded)
    clock.start()
    acc = tta_accuracy(lp.model, x_test, test.labels, cfg.tta_level, cfg.eval_batch_size, lp.amp)
    clock.stop()
    if hit is None and target is not None and acc >= target and rec["completed"]:
        hit = clock.total
    plain = tta_accuracy(lp.model, x_test, test.labels, 0, cfg.eval_batch_size, lp.amp)
    rec.update(tta_acc=acc, acc=plain, time_s=clock.total, train_s=train_s, time_to_target_s=hit,
               steps=lp.step, epochs_done=lp.step / max(1, lp.spe), epochs_run=len(rec["epoch_loss"]),
               train_img_per_s=lp.step * lp.batch / train_s if train_s else None)
    rec["model"] = lp.model
    return rec


# ----------------------------------------------------------------------------- many runs

def _device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _summarize(results: List[Dict[str, Any]], runs: int, target: Optional[float]) -> Dict[str, Any]:
    done = [r for r in results if r["completed"]]
    accs = [r["tta_acc"] for r in done]
    times = [r["time_s"] for r in done]
    reached = [r["time_to_target_s"] for r in done if r["time_to_target_s"] is not None]
    all_reached = target is not None and len(done) == runs and len(reached) == runs
    ips = [r["train_img_per_s"] for r in done if r["train_img_per_s"]]

    def mean(v):
        return statistics.fmean(v) if v else None

    def std(v):
        return statistics.stdev(v) if len(v) > 1 else (0.0 if v else None)

    return {"runs_done": len(done), "runs_asked": runs, "target": target, "accs": accs, "acc_mean": mean(accs),
            "acc_std": std(accs), "accs_no_tta": [r["acc"] for r in done],
            "acc_no_tta_mean": mean([r["acc"] for r in done]), "times_s": times, "time_mean_s": mean(times),
            "time_std_s": std(times), "times_to_target_s": [r["time_to_target_s"] for r in done],
            "reached": len(reached), "all_reached": all_reached,
            "time_to_target_mean_s": mean(reached) if all_reached else None,
            "train_img_per_s": mean(ips), "runs": results}


def run(data_root: Optional[str] = None, device="auto", runs: int = 5, target: Optional[float] = 0.94,
        epochs: Optional[float] = None, budget_s: Optional[float] = None, subset: int = 0, val_subset: int = 0,
        dataset: str = "cifar10", train_data: Optional[ArrayData] = None, val_data: Optional[ArrayData] = None,
        warmup: Optional[bool] = None, out: Optional[str] = None, **settings) -> Dict[str, Any]:
    """Run the recipe ``runs`` times (seeds ``seed .. seed + runs - 1``) on one
    device with the data resident there; returns per-run figures and their
    summary: accuracies, timed seconds, time to ``target`` (its mean only when
    every run reached it), training images/s. ``budget_s`` bounds the whole
    call (runs not started in time are skipped, a run past it stops early and
    is reported as not completed). ``settings`` are :class:`SpeedConfig` keys;
    ``subset``/``val_subset`` take the first images of each class. On CUDA an
    untimed one-epoch warm-up run comes first (cuDNN autotuning, compilation).
    ``out`` names a JSON file to write the result to.

    Keys of the result: ``accs`` (test accuracy with TTA per finished run),
    ``acc_mean``/``acc_std``, ``accs_no_tta``, ``times_s`` (timed seconds per
    run), ``times_to_target_s`` (None where a run missed ``target``),
    ``all_reached``, ``time_to_target_mean_s`` (None unless all reached),
    ``train_img_per_s``, ``runs`` (everything per run, with the loss per epoch),
    ``cut_short``, ``device``/``gpu``/``torch``, ``config`` (the settings).

    >>> from operad.experiments.synthetic import class_images                       # doctest: +SKIP
    >>> run(train_data=..., val_data=..., runs=1, epochs=2, target=None)["acc_mean"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    deadline = t0 + budget_s if budget_s else None
    dev = _device(device)
    cfg = SpeedConfig.from_dict({**settings, **({"epochs": epochs} if epochs else {})})
    if train_data is None:
        train_data = load_dataset(dataset, "train", data_root, subset or None)
    if val_data is None:
        val_data = load_dataset(dataset, "test", data_root, val_subset or None)
    train, test = DeviceSplit.from_array(train_data, dev), DeviceSplit.from_array(val_data, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels (during the warm-up)
    if warmup if warmup is not None else dev.type == "cuda":
        train_speedrun(dataclasses.replace(cfg, epochs=min(cfg.epochs, 1.0), eval_every=0, progress=False),
                       train, test, dev, seed=cfg.seed + 100_000)
    results = []
    for r in range(runs):
        if deadline is not None and time.perf_counter() > deadline:
            break
        res = train_speedrun(cfg, train, test, dev, seed=cfg.seed + r, deadline=deadline, target=target)
        res.pop("model")
        results.append(res)
        if not res["completed"]:
            break
    summary = _summarize(results, runs, target)
    summary.update(recipe="speedrun", model=cfg.model, dataset=train_data.name, train_size=len(train),
                   test_size=len(test), device=str(dev), torch=torch.__version__, threads=torch.get_num_threads(),
                   gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, budget_s=budget_s,
                   cut_short=len(results) < runs or not all(r["completed"] for r in results),
                   wall_s=time.perf_counter() - t0, config=dataclasses.asdict(cfg))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def config_settings(cfg) -> Tuple[Dict[str, Any], int, Optional[float]]:
    """The recipe's :class:`SpeedConfig` settings, ``runs`` and ``target`` for an engine
    :class:`~operad.experiments.config.Config` with ``recipe = "speedrun"``: model,
    seed, batch size, momentum, label smoothing, flip, ``crop_padding`` (the
    translation), amp and ``epochs`` come from the config; the recipe's own settings
    (``lr`` and ``weight_decay`` per 1,024 examples, ``bias_scaler``, lookahead,
    ``tta_level``, fractional ``epochs``, and ``runs``/``target``) from ``[recipe_args]``."""
    args = dict(cfg.recipe_args)
    runs, target = int(args.pop("runs", 1)), args.pop("target", None)
    settings = dict(model=cfg.model or "cifar10_speedrun", model_args=dict(cfg.model_args), epochs=float(cfg.epochs),
                    batch_size=cfg.batch_size, momentum=cfg.momentum, label_smoothing=cfg.label_smoothing,
                    translate=cfg.crop_padding, flip=cfg.flip, seed=cfg.seed, channels_last=cfg.channels_last,
                    compile=cfg.compile, amp="off" if cfg.amp == "off" else ("auto" if cfg.amp == "auto" else "bf16"),
                    eval_batch_size=cfg.eval_batch_size, progress=cfg.progress)
    settings.update(args)
    return settings, runs, target


def run_config(cfg) -> Dict[str, Any]:
    """The recipe for an engine :class:`~operad.experiments.config.Config` with
    ``recipe = "speedrun"`` (what ``operad train`` calls; settings from
    :func:`config_settings`). Writes ``speedrun.json`` and ``summary.json`` to
    ``out_dir/name``."""
    settings, runs, target = config_settings(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = os.path.abspath(os.path.join(cfg.out_dir, cfg.name))
    res = run(cfg.data_root or None, cfg.device, runs, target, subset=cfg.subset, val_subset=cfg.val_subset,
              dataset=cfg.dataset, out=os.path.join(run_dir, "speedrun.json"), **settings)
    from operad.models import create_model

    params = sum(p.numel() for p in create_model(res["model"], **dict(cfg.model_args)).parameters())
    summary = {"name": cfg.name, "experiment": cfg.experiment, "claim": cfg.claim, "model": res["model"],
               "params": params, "epochs": res["config"]["epochs"], "top1": res["acc_mean"],
               "train_img_per_s": res["train_img_per_s"], "device": res["device"], "time_mean_s": res["time_mean_s"],
               "time_to_target_mean_s": res["time_to_target_mean_s"], "run_dir": run_dir}
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
