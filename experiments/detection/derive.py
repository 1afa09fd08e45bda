"""A detection set derived from CamVid's label maps (``operad derive-boxes``).

CamVid (Brostow et al. 2008) has no boxes; this derives them: for each of the
classes Car, Pedestrian, Bicyclist and SignSymbol, the connected components of
its pixels in a frame's label map (4-connectivity), each with at least
``min_area`` pixels, become one box (the component's bounding rectangle). Two
touching cars become one box and an occluded car split in two becomes two, so
these are *derived* boxes, not human box annotations; numbers measured on them
are not comparable with any published CamVid detection figure.

Written in the Pascal VOC layout (``Annotations/``, ``JPEGImages/`` holding the
original PNG frames, hard-linked where possible, ``ImageSets/Main/{train,val}.txt``)
with a README saying where it came from.

>>> import numpy as np
>>> m = np.zeros((5, 6), bool); m[0, 0:2] = m[1, 1] = True; m[3:5, 4:6] = True
>>> components(m)   # (x1, y1, x2, y2) inclusive, area
[(0, 0, 1, 1, 3), (4, 3, 5, 4, 4)]
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data import DataError
from .voc import write_annotation

__all__ = ["components", "frame_boxes", "derive_camvid_boxes", "select_classes", "CAMVID_BOX_CLASSES"]

#: CamVid class index -> box class name
CAMVID_BOX_CLASSES: Dict[int, str] = {8: "Car", 9: "Pedestrian", 10: "Bicyclist", 6: "SignSymbol"}


def _runs(row: np.ndarray) -> List[Tuple[int, int]]:
    d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def components(mask: np.ndarray) -> List[Tuple[int, int, int, int, int]]:
    """4-connected components of a boolean mask: ``(x1, y1, x2, y2, area)`` (inclusive corners),
    by union-find over horizontal runs, in order of first pixel (row-major)."""
    parent: List[int] = []

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs: List[Tuple[int, int, int]] = []
    prev: List[int] = []
    for y in range(mask.shape[0]):
        cur = []
        j = 0
        for s, e in _runs(mask[y]):
            k = len(runs)
            runs.append((y, s, e))
            parent.append(k)
            while j < len(prev) and runs[prev[j]][2] <= s:
                j += 1
            jj = j
            while jj < len(prev) and runs[prev[jj]][1] < e:  # overlapping columns: 4-connected
                a, b = find(k), find(prev[jj])
                if a != b:
                    parent[max(a, b)] = min(a, b)
                jj += 1
            cur.append(k)
        prev = cur
    boxes: Dict[int, List[int]] = {}
    for k, (y, s, e) in enumerate(runs):
        r = find(k)
        b = boxes.setdefault(r, [s, y, e - 1, y, 0])
        b[0], b[2], b[3] = min(b[0], s), max(b[2], e - 1), max(b[3], y)
        b[4] += e - s
    return [tuple(boxes[r]) for r in sorted(boxes)]


def frame_boxes(label: np.ndarray, min_area: int = 100,
                classes: Dict[int, str] = CAMVID_BOX_CLASSES) -> List[Tuple[str, Tuple[int, int, int, int], int]]:
    """VOC objects ``(name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult=0)`` of one label map."""
    out = []
    for idx, name in classes.items():
        for x1, y1, x2, y2, area in components(label == idx):
            if area >= min_area:
                out.append((name, (x1 + 1, y1 + 1, x2 + 1, y2 + 1), 0))
    return out


def _place(src: str, dst: str) -> None:
    if os.path.exists(dst):
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def select_classes(names: Optional[Sequence[str]] = None) -> Dict[int, str]:
    """The CamVid class indices of box class ``names`` (all four when None); an unknown name is an error.

    >>> select_classes(["Car"])
    {8: 'Car'}
    """
    if not names:
        return dict(CAMVID_BOX_CLASSES)
    known = {v: k for k, v in CAMVID_BOX_CLASSES.items()}
    bad = [n for n in names if n not in known]
    if bad:
        raise DataError(f"box classes {bad} are not CamVid box classes; choose from {sorted(known)}")
    return {known[n]: n for n in names}


def derive_camvid_boxes(camvid_root: str, out: str, min_area: int = 100, splits: Sequence[str] = ("train", "val"),
                        classes: Optional[Sequence[str]] = None) -> Dict:
    """Write the VOC-layout box set derived from CamVid at ``camvid_root`` into ``out`` (boxes of
    ``classes``, default all four); returns ``{split: {"frames", "boxes", per class counts}}``."""
    from PIL import Image
    chosen = select_classes(classes)
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    stats = {}
    for split in splits:
        lst = os.path.join(camvid_root, f"{split}.txt")
        if not os.path.isfile(lst):
            raise DataError(f"{lst}: missing CamVid split list (SegNet layout: {split}.txt with 'image annotation' lines)")
        ids, counts = [], {n: 0 for n in chosen.values()}
        with open(lst) as f:
            pairs = [ln.split() for ln in f if ln.strip()]
        for n, pair in enumerate(pairs):
            if len(pair) != 2:
                raise DataError(f"{lst}: line {n + 1} must be 'image annotation'; got {' '.join(pair)!r}")
            img, ann = (os.path.join(camvid_root, p) for p in pair)
            try:
                with Image.open(ann) as im:
                    label = np.asarray(im)
            except OSError as e:
                raise DataError(f"{ann}: cannot read the label map ({e})") from None
            if label.ndim != 2:
                raise DataError(f"{ann}: a label map must have one channel; got shape {label.shape}")
            stem = os.path.splitext(os.path.basename(img))[0]
            objs = frame_boxes(label, min_area, chosen)
            fn = os.path.basename(img)
            _place(img, os.path.join(out, "JPEGImages", fn))
            write_annotation(os.path.join(out, "Annotations", f"{stem}.xml"), fn, (label.shape[1], label.shape[0]),
                             objs, source=f"derived from CamVid label map {pair[1]} (min_area={min_area})")
            ids.append(stem)
            for o in objs:
                counts[o[0]] += 1
        with open(os.path.join(out, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
        stats[split] = {"frames": len(ids), "boxes": sum(counts.values()), **counts}
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("# Boxes derived from CamVid\n\nWritten by `operad derive-boxes` from the CamVid label maps "
                f"(Brostow et al. 2008, SegNet layout) at {os.path.abspath(camvid_root)}: one box per 4-connected "
                f"component of {', '.join(chosen.values())} pixels with at least {min_area} pixels. "
                "Derived, not human-drawn boxes (touching objects merge, occluded ones split); frames are the "
                "original PNG files.\n\n"
                + "\n".join(f"- {s}: {v}" for s, v in stats.items()) + "\n")
    return stats
