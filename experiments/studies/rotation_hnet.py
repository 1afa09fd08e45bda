"""Accuracy against test rotation angle: an H-Net and a CNN of similar size,
both trained on upright digits only.

Data: scikit-learn's bundled digits (1797 images of 8 x 8, shipped inside the
package: nothing is downloaded), padded to 10 x 10 and up-sampled to 20 x 20 so
that a rotation keeps the digit inside the frame. A fixed 75/25 split; the test
images are rotated by every angle of a sweep (bilinear, counter-clockwise).

    .venv/bin/python -m operad.experiments.studies.rotation_hnet --out runs/rotation_hnet

writes ``rotation_hnet.png`` (accuracy against angle) and ``rotation_hnet.json``
(per-angle accuracies, parameters, MACs, training time).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from ... import cost, ops
from ...models import create_model
from ...operators.algebra.field import Field
from ...theory.transforms import rotate

__all__ = ["load_digits_20", "cnn_small", "train", "accuracy_vs_angle", "main"]


def load_digits_20(seed: int = 0, test_fraction: float = 0.25):
    """(x_train, y_train, x_test, y_test): digits as (N, 1, 20, 20) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("rotation_hnet reads scikit-learn's bundled digits: pip install -e \".[experiments]\" "
                         "(or pip install scikit-learn)") from None
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    x = F.interpolate(F.pad(x, (1, 1, 1, 1)), size=(20, 20), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_test = int(len(x) * test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def cnn_small(num_classes: int = 10, widths=(12, 24, 48)):
    """A plain CNN of about the H-Net's size: two 3x3 conv-BN-ReLU per width,
    average pooling between widths, global average pooling, a linear head."""
    net = None
    for i, w in enumerate(widths):
        stage = (ops.conv(w, k=3) >> ops.bn() >> ops.relu()) * 2
        if i < len(widths) - 1:
            stage = stage >> ops.avg_pool(2)
        net = stage if net is None else net >> stage
    return net >> ops.global_pool() >> ops.linear(num_classes)


def train(model, x, y, epochs: int, lr: float, batch: int = 64, seed: int = 0, log=print):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(x))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
            total += len(idx)
        log(f"  epoch {ep + 1}/{epochs}: loss {loss_sum / total:.4f}, train acc {correct / total:.4f}")
    model.eval()
    return model


@torch.no_grad()
def accuracy_vs_angle(model, x, y, angles_deg):
    model.eval()
    accs = []
    for a in angles_deg:
        xr = rotate(x, math.radians(a)) if a % 360 else x
        pred = torch.cat([model(xr[i:i + 256]).argmax(1) for i in range(0, len(xr), 256)])
        accs.append(float((pred == y).float().mean()))
    return accs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/rotation_hnet")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--cnn-epochs", type=int, default=6)
    p.add_argument("--step", type=int, default=30, help="angle step in degrees")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    xtr, ytr, xte, yte = load_digits_20(a.seed)
    angles = list(range(0, 361, a.step))
    results = {"data": "sklearn digits, 8x8 padded to 10x10, bilinear up-sampled to 20x20",
               "train": int(len(xtr)), "test": int(len(xte)), "angles_deg": angles, "models": {}}
    specs = {
        "hnet_digits": (lambda: create_model("hnet_digits", num_classes=10, in_chans=1), a.epochs, 1e-2),
        "cnn": (lambda: cnn_small(10).bind(Field(1)), a.cnn_epochs, 3e-3),
    }
    for name, (make, epochs, lr) in specs.items():
        torch.manual_seed(a.seed)
        model = make()
        c = cost(model, size=(20, 20))
        print(f"{name}: {c.params} params, {c.macs} MACs per image; training {epochs} epochs")
        t0 = time.perf_counter()
        train(model, xtr, ytr, epochs, lr, seed=a.seed)
        t_train = time.perf_counter() - t0
        accs = accuracy_vs_angle(model, xte, yte, angles)
        results["models"][name] = {"params": int(c.params), "macs": int(c.macs), "epochs": epochs,
                                   "train_seconds": round(t_train, 1), "accuracy": [round(v, 4) for v in accs]}
        print(f"{name}: " + ", ".join(f"{ang}:{acc:.3f}" for ang, acc in zip(angles, accs)))
    for name, r in results["models"].items():
        acc = r["accuracy"]
        r["accuracy_upright"] = acc[0]
        r["accuracy_min"] = min(acc)
        r["accuracy_mean_rotated"] = round(sum(acc[1:-1]) / max(1, len(acc) - 2), 4)
    with open(os.path.join(a.out, "rotation_hnet.json"), "w") as f:
        json.dump(results, f, indent=2)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in results["models"].items():
        ax.plot(angles, r["accuracy"], marker="o", ms=3,
                label=f"{name} ({r['params'] / 1000:.1f}k params)")
    ax.set_xlabel("test rotation angle (degrees, counter-clockwise)")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(range(0, 361, 45))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Digits: trained upright, tested rotated")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "rotation_hnet.png"), dpi=120)
    print(f"wrote {os.path.join(a.out, 'rotation_hnet.png')} and rotation_hnet.json")
    return results


if __name__ == "__main__":
    main()
