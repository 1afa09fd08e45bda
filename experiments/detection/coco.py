"""The COCO JSON layout: ``{"images": [{"id", "file_name", "width", "height"}],
"annotations": [{"image_id", "category_id", "bbox": [x, y, w, h], "iscrowd"?}],
"categories": [{"id", "name"}]}``, read with :mod:`json` (no code runs).

Labels are 1..C in the order of ``categories`` sorted by id; boxes become pixel
``(x1, y1, x2, y2)``; crowd boxes are kept as ``difficult`` (ignored by
:func:`operad.experiments.detection.metrics.mean_ap`). Errors name the file and
the field, e.g. ``annotations[3].bbox``.

>>> import json, tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "a.json")
>>> _ = open(p, "w").write(json.dumps({"images": [{"id": 7, "file_name": "x.jpg", "width": 9, "height": 9}],
...     "annotations": [{"image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4]}],
...     "categories": [{"id": 3, "name": "car"}]}))
>>> d = load_coco(p)
>>> d["classes"], d["targets"][0]["boxes"].tolist()
(['car'], [[1.0, 2.0, 4.0, 6.0]])
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import torch

from ..data import DataError
from .voc import read_image

__all__ = ["load_coco", "COCODetection"]


def _field(obj, key: str, where: str, path: str, kind=None):
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{path}: missing field {where}.{key}" if where else f"{path}: missing field {key!r}")
    v = obj[key]
    if kind is not None and (not isinstance(v, kind) or isinstance(v, bool)):
        raise DataError(f"{path}: field {where + '.' if where else ''}{key} must be {getattr(kind, '__name__', kind)}; "
                        f"got {v!r}")
    return v


def load_coco(path: str) -> Dict:
    """``{"images": [...], "classes": [names], "targets": [per image {"boxes", "labels", "difficult"}]}``."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    images = _field(raw, "images", "", path, list)
    anns = _field(raw, "annotations", "", path, list)
    cats = _field(raw, "categories", "", path, list)
    cat_ids = sorted(_field(c, "id", f"categories[{i}]", path, int) for i, c in enumerate(cats))
    names = {c["id"]: _field(c, "name", f"categories[{i}]", path, str) for i, c in enumerate(cats)}
    label = {cid: k + 1 for k, cid in enumerate(cat_ids)}
    pos, imgs = {}, []
    for i, im in enumerate(images):
        iid = _field(im, "id", f"images[{i}]", path, int)
        imgs.append({"id": iid, "file_name": _field(im, "file_name", f"images[{i}]", path, str)})
        pos[iid] = i
    per = [([], [], []) for _ in imgs]
    for i, a in enumerate(anns):
        where = f"annotations[{i}]"
        iid = _field(a, "image_id", where, path, int)
        cid = _field(a, "category_id", where, path, int)
        bbox = _field(a, "bbox", where, path, list)
        if iid not in pos:
            raise DataError(f"{path}: field {where}.image_id = {iid} names no image")
        if cid not in label:
            raise DataError(f"{path}: field {where}.category_id = {cid} names no category")
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox) \
                or bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"{path}: field {where}.bbox must be [x, y, w, h] with w, h >= 0; got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        b, l, d = per[pos[iid]]
        b.append((x, y, x + w, y + h))
        l.append(label[cid])
        d.append(bool(a.get("iscrowd", 0)))
    targets = [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(l, dtype=torch.long),
                "difficult": torch.tensor(d, dtype=torch.bool)} for b, l, d in per]
    return {"images": imgs, "classes": [names[c] for c in cat_ids], "targets": targets}


class COCODetection:
    """A COCO-layout split: annotation JSON plus an image folder; items as :class:`VOCDetection`'s."""

    def __init__(self, annotation_file: str, image_dir: str, subset: Optional[int] = None):
        d = load_coco(annotation_file)
        self.image_dir = image_dir
        self.images, self.classes, self.targets = d["images"], d["classes"], d["targets"]
        if subset:
            self.images, self.targets = self.images[:subset], self.targets[:subset]

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> str:
        return os.path.join(self.image_dir, self.images[i]["file_name"])

    def __getitem__(self, i: int):
        img = torch.from_numpy(read_image(self.image_path(i)).copy()).permute(2, 0, 1)
        return img, self.targets[i]
