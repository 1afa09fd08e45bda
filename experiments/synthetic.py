"""Small synthetic data sets written in the standard on-disk layouts (CIFAR
pickle batches, CIFAR image folders, CamVid SegNet lists), for smoke tests
and for trying the engine without the real data. Each class has its own
mean colour, so a model can learn something in a few steps.

    >>> import tempfile
    >>> from operad.experiments.data import load_dataset
    >>> root = tempfile.mkdtemp()
    >>> _ = write_cifar_pickle(root, per_class=4, test_per_class=2)
    >>> load_dataset("cifar10", "train", root, use_cache=False).images.shape
    (40, 32, 32, 3)
"""
from __future__ import annotations

import os
import pickle
from typing import Dict, Tuple

import numpy as np

from operad.experiments.data import CIFAR10_CLASSES

__all__ = ["class_images", "write_cifar_pickle", "write_cifar100_pickle", "write_cifar_folder", "write_camvid"]


def class_images(labels: np.ndarray, size: Tuple[int, int] = (32, 32), seed: int = 0, noise: float = 60.0) -> np.ndarray:
    """uint8 (N, H, W, 3) images: a class colour plus a class-dependent stripe plus noise."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    palette = np.random.default_rng(1234).integers(30, 226, (max(int(labels.max()) + 1, 1), 3))
    x = palette[labels][:, None, None, :].astype(np.float32) + rng.normal(0, noise, (n,) + tuple(size) + (3,))
    H = size[0]
    for i, c in enumerate(labels):
        r = (int(c) * 3) % H
        x[i, r:r + 3] = 255 - x[i, r:r + 3]
    return np.clip(x, 0, 255).astype(np.uint8)


def _labels(classes: int, per_class: int, seed: int) -> np.ndarray:
    lab = np.repeat(np.arange(classes), per_class)
    return np.random.default_rng(seed).permutation(lab)


def write_cifar_pickle(root: str, per_class: int = 10, test_per_class: int = 5, seed: int = 0) -> str:
    """``root/cifar-10-batches-py`` with 5 training batches, a test batch and
    the meta file, in the exact format of the official archive."""
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    y = _labels(10, per_class, seed)
    x = class_images(y, seed=seed)
    parts = np.array_split(np.arange(len(y)), 5)
    for i, idx in enumerate(parts, 1):
        with open(os.path.join(d, f"data_batch_{i}"), "wb") as f:
            pickle.dump({b"batch_label": f"training batch {i} of 5".encode(), b"labels": y[idx].tolist(),
                         b"data": x[idx].transpose(0, 3, 1, 2).reshape(len(idx), -1),
                         b"filenames": [f"img{j}.png".encode() for j in idx]}, f)
    yt = _labels(10, test_per_class, seed + 1)
    xt = class_images(yt, seed=seed + 1)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"labels": yt.tolist(),
                     b"data": xt.transpose(0, 3, 1, 2).reshape(len(yt), -1)}, f)
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": len(parts[0]),
                     b"num_vis": 3072}, f)
    return d


def write_cifar100_pickle(root: str, per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> str:
    """``root/cifar-100-python`` with ``train``, ``test`` and ``meta``."""
    d = os.path.join(root, "cifar-100-python")
    os.makedirs(d, exist_ok=True)
    for split, n, s in (("train", per_class, seed), ("test", test_per_class, seed + 1)):
        y = _labels(100, n, s)
        x = class_images(y, seed=s)
        with open(os.path.join(d, split), "wb") as f:
            pickle.dump({b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist(),
                         b"data": x.transpose(0, 3, 1, 2).reshape(len(y), -1)}, f)
    with open(os.path.join(d, "meta"), "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{i:02d}".encode() for i in range(100)],
                     b"coarse_label_names": [f"super{i:02d}".encode() for i in range(20)]}, f)
    return d


def write_cifar_folder(root: str, per_class: int = 4, test_per_class: int = 2, ext: str = "png",
                       seed: int = 0, name: str = "cifar10") -> Dict[str, np.ndarray]:
    """``root/<name>/{train,test}/<class>/NNNN.<ext>``; returns the arrays written
    (exact for PNG, before compression for JPEG)."""
    from PIL import Image

    out = {}
    for split, n, s in (("train", per_class, seed), ("test", test_per_class, seed + 1)):
        y = np.repeat(np.arange(10), n)
        x = class_images(y, seed=s)
        for i, (img, c) in enumerate(zip(x, y)):
            d = os.path.join(root, name, split, CIFAR10_CLASSES[c])
            os.makedirs(d, exist_ok=True)
            Image.fromarray(img).save(os.path.join(d, f"{i % n:04d}.{ext}"), quality=95)
        out[split] = x
        out[split + "_labels"] = y
    return out


def write_camvid(root: str, n_train: int = 3, n_val: int = 2, size: Tuple[int, int] = (24, 32), seed: int = 0,
                 segnet_paths: bool = False) -> str:
    """``root/camvid`` in the SegNet layout: ``train/``, ``trainannot/``,
    ``val/``, ``valannot/`` PNGs and ``train.txt`` / ``val.txt`` lists (with
    ``/SegNet/CamVid/...`` prefixes if ``segnet_paths``). Labels are 0..10
    in vertical bands with a void (11) border; the image colour follows the label."""
    from PIL import Image

    d = os.path.join(root, "camvid")
    rng = np.random.default_rng(seed)
    H, W = size
    for split, n in (("train", n_train), ("val", n_val)):
        os.makedirs(os.path.join(d, split), exist_ok=True)
        os.makedirs(os.path.join(d, split + "annot"), exist_ok=True)
        lines = []
        for i in range(n):
            lab = ((np.arange(W)[None, :] * 11 // W + i) % 11).repeat(H, 0).astype(np.uint8)
            lab[0, :] = 11
            img = class_images(lab.reshape(-1), (1, 1), seed=int(rng.integers(1 << 30)), noise=10).reshape(H, W, 3)
            name = f"{split}{i:04d}.png"
            Image.fromarray(img).save(os.path.join(d, split, name))
            Image.fromarray(lab).save(os.path.join(d, split + "annot", name))
            pre = "/SegNet/CamVid/" if segnet_paths else ""
            lines.append(f"{pre}{split}/{name} {pre}{split}annot/{name}")
        with open(os.path.join(d, f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return d
