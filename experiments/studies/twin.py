"""A short CPU comparison: a twin ResNet (CMod), its RMax baseline and the
standard network, trained the same way on a CIFAR-10 subset.

    python -m operad.experiments.studies.twin --data /work/shared/data
    python -m operad.experiments.studies.twin --per-class 300 --epochs 2 --width 16

Each run uses the training engine of :mod:`operad.experiments.train` (same
seed, schedule, augmentation and data), then prints one table: parameters,
top-1 on the test subset, and training speed. A few thousand images and a
couple of epochs only show that the pipelines are equivalent and give a rough
ranking; they are not the paper's ImageNet numbers.
"""
from __future__ import annotations

import argparse
import os
import tempfile

__all__ = ["main"]


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("OPERAD_DATA", "/work/shared/data"))
    p.add_argument("--model", default="twin_resnet18_cifar")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--per-class", type=int, default=300, help="training images per class")
    p.add_argument("--val-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "operad_compare_twin"))
    p.add_argument("--firsts", nargs="+", default=["conv", "cmod", "rmax"])
    a = p.parse_args(argv)
    from ..train import train

    results = []
    for first in a.firsts:
        cfg = {"name": f"{a.model}_{first}", "model": a.model, "model_args": {"width": a.width, "first": first},
               "dataset": "cifar10", "data_root": a.data, "subset": a.per_class, "val_subset": a.val_per_class,
               "epochs": a.epochs, "batch_size": a.batch, "lr": a.lr, "seed": a.seed, "out_dir": a.out,
               "device": "cpu", "amp": "off", "channels_last": False, "log_every": 1000}
        results.append((first, train(cfg, overwrite=True)))
    print(f"\n{a.model} width {a.width}: {a.per_class}/class train, {a.val_per_class}/class test, "
          f"{a.epochs} epochs, batch {a.batch}, lr {a.lr}, seed {a.seed}")
    print(f"{'first layer':<12} {'params':>10} {'top1':>7} {'img/s':>8}")
    for first, r in results:
        print(f"{first:<12} {r['params']:>10} {r['top1']:>7.4f} {r['train_img_per_s'] or 0:>8.1f}")
    return results


if __name__ == "__main__":
    main()
