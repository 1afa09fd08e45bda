"""A short CPU comparison: a PIDE network (one nonlocal block per unit) against its local
baseline at the same parameter budget, on a CIFAR-10 subset.

    python -m operad.experiments.studies.pide --data ../shared/data --per-class 500 --epochs 4 \
        --nonlocal fractional,grid --seeds 0,1

Both networks are ``operad.models.pide.pide_classifier`` with the same widths and blocks;
only the block after each unit differs (``nonlocal_block`` vs ``local_block``). Same data
order, augmentation (random crop with 4-pixel padding and horizontal flips), SGD with
momentum and a cosine schedule. Prints test accuracy on ``--test-per-class`` images per
class, per seed and averaged (the local baseline is trained once per seed and shared by
every nonlocal operator compared).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

import operad
from operad import Field
from operad.experiments.data import load_dataset
from operad.models.pide import pide_classifier

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def _tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    pad = F.pad(x, (4, 4, 4, 4), mode="reflect")
    i, j = torch.randint(0, 9, (2,), generator=gen).tolist()
    x = pad[..., i:i + 32, j:j + 32]
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def train_eval(model, xtr, ytr, xte, yte, epochs, batch, lr, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * math.ceil(len(xtr) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    from tqdm.auto import tqdm
    bar = tqdm(total=epochs * len(xtr), unit="img", unit_scale=True, leave=False, mininterval=2)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot, n = 0.0, 0
        for k in range(0, len(xtr), batch):
            idx = perm[k:k + batch]
            xb = _augment(xtr[idx], gen)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
            bar.update(len(idx))
        bar.write(f"  epoch {ep + 1}: train loss {tot / n:.3f} ({time.time() - t0:.0f} s)")
    bar.close()
    model.eval()
    correct = 0
    with torch.no_grad():
        for k in range(0, len(xte), 500):
            correct += int((model(xte[k:k + 500]).argmax(1) == yte[k:k + 500]).sum())
    return correct / len(xte), time.time() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data")
    ap.add_argument("--per-class", type=int, default=500, help="training images per class")
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--widths", default="16,32,56")
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--nonlocal", dest="kinds", default="fractional",
                    help="comma-separated nonlocal operators, each trained against the one local baseline: "
                         "fractional | weighted | inverse | grid | grid_inverse")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (initialisation and data order)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    known = ("fractional", "weighted", "inverse", "grid", "grid_inverse")
    bad = [k for k in kinds if k not in known]
    if bad or not kinds:
        ap.error(f"--nonlocal {args.kinds!r}: choose from {', '.join(known)} (comma-separated)")
    seeds = [int(v) for v in args.seeds.split(",")]
    tr = load_dataset("cifar10", "train", root=args.data, subset=args.per_class)
    te = load_dataset("cifar10", "test", root=args.data, subset=args.test_per_class)
    xtr, ytr = _tensor(tr.images), torch.from_numpy(np.asarray(tr.labels)).long()
    xte, yte = _tensor(te.images), torch.from_numpy(np.asarray(te.labels)).long()
    print(f"CIFAR-10 subset: {len(xtr)} train, {len(xte)} test images; seeds {seeds}")
    widths = tuple(int(v) for v in args.widths.split(","))
    results = {}
    for name, kind in [(f"nonlocal ({k})", k) for k in kinds] + [("local baseline", None)]:
        for seed in seeds:
            torch.manual_seed(seed)
            term = pide_classifier(10, 3, widths, args.blocks, kind)
            model = term.bind(Field(3))
            c = operad.cost(model, size=(32, 32))
            print(f"{name}, seed {seed}: {c.params:,} params, {c.macs:,} MACs/image", flush=True)
            acc, secs = train_eval(model, xtr, ytr, xte, yte, args.epochs, args.batch, args.lr, seed)
            results.setdefault(name, []).append((acc, secs, c.params))
            print(f"{name}, seed {seed}: test accuracy {100 * acc:.2f}% ({secs:.0f} s)", flush=True)
    print("\n| network | params | test acc (per seed) | mean ± std | train+eval s |\n|---|---|---|---|---|")
    for name, runs in results.items():
        accs = np.array([100 * a for a, _, _ in runs])
        std = f" ± {accs.std(ddof=1):.2f}" if len(accs) > 1 else ""
        print(f"| {name} | {runs[0][2]:,} | {' / '.join(f'{a:.2f}' for a in accs)} | "
              f"{accs.mean():.2f}%{std} | {sum(r[1] for r in runs) / len(runs):.0f} |")
    return results


if __name__ == "__main__":
    main()
