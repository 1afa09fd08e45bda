"""A short side-by-side run of ResNet-20, Min-ResNet-20 and dendritic ResNet-20 on
a CIFAR-10 subset (CPU-sized; raise the numbers on a GPU).

    .venv/bin/python -m operad.experiments.studies.units --data /work/shared/data \\
        --per-class 50 --test-per-class 50 --size 16 --epochs 1

Prints, per model: parameters and MACs at the training size (exact), seconds
per training step (median), test accuracy. ``--size 16`` average-pools the
32x32 images 2x2 first (the dendritic convolution is memory-bound on a CPU:
its C_out x C_in x k^2 x H x W per-connection ReLUs are element-wise work).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import operad
from operad.experiments.data import load_dataset
from operad.models import create_model

MODELS = ("resnet20", "min_resnet20", "dendritic_resnet20")


def _tensors(d, size: int):
    x = torch.from_numpy(d.images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(d.mean).view(1, 3, 1, 1)
    std = torch.tensor(d.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    if size != x.shape[-1]:
        x = F.adaptive_avg_pool2d(x, size)
    return x, torch.from_numpy(d.labels).long()


def run(name: str, xtr, ytr, xte, yte, epochs: int, batch: int, lr: float, seed: int):
    torch.manual_seed(seed)
    model = create_model(name)
    c = operad.cost(model, size=tuple(xtr.shape[-2:]))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_total = epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps_total)
    times = []
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            xb, yb = xtr[idx], ytr[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            times.append(time.perf_counter() - t0)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(xte), 256):
            correct += int((model(xte[i:i + 256]).argmax(1) == yte[i:i + 256]).sum())
    return dict(params=c.params, macs=c.macs, step_s=statistics.median(times), acc=correct / len(xte),
                loss=loss.item())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="data root (default $OPERAD_DATA or ./data)")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--test-per-class", type=int, default=50)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=",".join(MODELS))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    tr = load_dataset("cifar10", "train", root=a.data, subset=a.per_class)
    te = load_dataset("cifar10", "test", root=a.data, subset=a.test_per_class)
    xtr, ytr = _tensors(tr, a.size)
    xte, yte = _tensors(te, a.size)
    print(f"CIFAR-10 subset: {len(xtr)} train / {len(xte)} test images at {a.size}x{a.size}, "
          f"{a.epochs} epoch(s), batch {a.batch}, {a.threads} threads")
    print(f"{'model':<22}{'params':>10}{'MACs':>14}{'s/step':>9}{'test acc':>10}{'last loss':>11}")
    for name in a.models.split(","):
        r = run(name, xtr, ytr, xte, yte, a.epochs, a.batch, a.lr, a.seed)
        print(f"{name:<22}{r['params']:>10}{r['macs']:>14}{r['step_s']:>9.2f}{r['acc']:>10.3f}{r['loss']:>11.3f}",
              flush=True)


if __name__ == "__main__":
    main()
