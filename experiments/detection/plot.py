"""A PNG of predicted boxes on a few frames (``boxes-val.png`` of a detection run).

>>> import tempfile, os, torch
>>> from operad.experiments.detection.augment import DetectionBatches
>>> frames = [(torch.zeros(3, 24, 32, dtype=torch.uint8), {"boxes": torch.tensor([[2., 3, 12, 20]]),
...                                                         "labels": torch.tensor([1])})]
>>> dets = [{"boxes": torch.tensor([[0.1, 0.1, 0.4, 0.8]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
>>> p = plot_detections(DetectionBatches(frames, 1, (24, 32)), dets, ["car"], os.path.join(tempfile.mkdtemp(), "b.png"))
>>> os.path.getsize(p) > 0
True
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from .augment import DetectionBatches

__all__ = ["plot_detections"]


def plot_detections(batches: DetectionBatches, dets: Sequence[Dict], classes: Sequence[str], path: str,
                    n: int = 4, min_score: float = 0.0, max_boxes: int = 3) -> str:
    """A PNG of ``n`` val frames with ground truth (dashed white) and each frame's ``max_boxes`` best
    predictions above ``min_score``, with their scores (a detector trained with 3:1 hard-negative
    mining scores background near 1/4 and objects not far above, so a fixed score cut would show
    nothing on one run and clutter on another; mAP depends only on the ranking)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    idx = list(range(0, len(batches.items), max(1, len(batches.items) // n)))[:n]
    fig, axes = plt.subplots(1, len(idx), figsize=(4.5 * len(idx), 3.6), squeeze=False)
    colours = plt.cm.tab10.colors
    for ax, i in zip(axes[0], idx):
        img, tgt = batches.items[i]
        h, w = img.shape[-2:]
        ax.imshow(img.permute(1, 2, 0).numpy())
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        for b in tgt["boxes"]:
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="white", ls="--", lw=1))
        d = dets[i]
        best = d["scores"].argsort(descending=True)[:max_boxes]
        for b, s, l in zip(d["boxes"][best] * scale, d["scores"][best], d["labels"][best]):
            if s < min_score:
                continue
            c = colours[int(l) % len(colours)]
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec=c, lw=1.5))
            ax.text(b[0], b[1], f"{classes[int(l) - 1]} {float(s):.2f}", color="white", fontsize=6,
                    bbox=dict(fc=c, ec="none", pad=0.5))
        ax.set_axis_off()
    above = f" with score >= {min_score:g}" if min_score > 0 else ""
    fig.suptitle(f"the best {max_boxes} predicted boxes per frame{above}; ground truth dashed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
