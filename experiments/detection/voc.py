"""The Pascal VOC layout: ``Annotations/<id>.xml``, ``JPEGImages/<file>``, ``ImageSets/Main/<split>.txt``.

Annotation files are read with :mod:`xml.etree.ElementTree`; a file holding a
DTD or entity declaration is refused (nothing read from a file may expand or
execute anything). Boxes are VOC's 1-based inclusive pixel corners, returned as
0-based ``(x1, y1, x2, y2)`` floats: ``x1 = xmin - 1``, ``x2 = xmax``. Errors name
the file and the field.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> p = write_annotation(os.path.join(d, "a.xml"), "a.jpg", (40, 30), [("car", (1, 2, 10, 20), 0)])
>>> parse_annotation(p)["objects"]
[{'name': 'car', 'bbox': (0.0, 1.0, 10.0, 20.0), 'difficult': False}]
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data import DataError

__all__ = ["parse_annotation", "write_annotation", "VOCDetection", "read_image"]

_FORBIDDEN = ("<!DOCTYPE", "<!ENTITY")


def _text(node, field: str, path: str, parent: str = "") -> str:
    el = node.find(field)
    name = f"{parent}/{field}" if parent else field
    if el is None or el.text is None or not el.text.strip():
        raise DataError(f"{path}: missing field {name!r}")
    return el.text.strip()


def _num(node, field: str, path: str, parent: str) -> float:
    v = _text(node, field, path, parent)
    try:
        return float(v)
    except ValueError:
        raise DataError(f"{path}: field {parent}/{field} is not a number: {v!r}") from None


def parse_annotation(path: str) -> Dict:
    """``{"filename", "width", "height", "objects": [{"name", "bbox", "difficult"}]}`` of one VOC XML file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the annotation ({e.strerror})") from None
    head = raw.decode("utf-8", errors="replace").upper()
    if any(tok in head for tok in _FORBIDDEN):
        raise DataError(f"{path}: refusing an annotation with a DTD or entity declaration")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        raise DataError(f"{path}: not well-formed XML ({e})") from None
    if root.tag != "annotation":
        raise DataError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise DataError(f"{path}: missing field 'size'")
    w, h = int(_num(size, "width", path, "size")), int(_num(size, "height", path, "size"))
    objects = []
    for i, ob in enumerate(root.findall("object")):
        where = f"object[{i}]"
        name = _text(ob, "name", path, where)
        bb = ob.find("bndbox")
        if bb is None:
            raise DataError(f"{path}: missing field '{where}/bndbox'")
        x1, y1, x2, y2 = (_num(bb, k, path, f"{where}/bndbox") for k in ("xmin", "ymin", "xmax", "ymax"))
        if not (x1 <= x2 and y1 <= y2):
            raise DataError(f"{path}: field {where}/bndbox has xmin > xmax or ymin > ymax: {(x1, y1, x2, y2)}")
        diff = ob.find("difficult")
        objects.append({"name": name, "bbox": (x1 - 1.0, y1 - 1.0, x2, y2),
                        "difficult": diff is not None and (diff.text or "0").strip() == "1"})
    fn = root.find("filename")
    filename = fn.text.strip() if fn is not None and fn.text else None
    return {"filename": filename, "width": w, "height": h, "objects": objects}


def write_annotation(path: str, filename: str, size: Tuple[int, int], objects: Sequence[Tuple[str, Tuple, int]],
                     source: str = "") -> str:
    """Write a VOC XML file; ``size`` is ``(width, height)``; objects ``(name, (xmin, ymin, xmax, ymax)
    1-based inclusive, difficult)``."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    if source:
        ET.SubElement(ET.SubElement(root, "source"), "database").text = source
    sz = ET.SubElement(root, "size")
    for k, v in zip(("width", "height", "depth"), (size[0], size[1], 3)):
        ET.SubElement(sz, k).text = str(int(v))
    for name, box, diff in objects:
        ob = ET.SubElement(root, "object")
        ET.SubElement(ob, "name").text = name
        ET.SubElement(ob, "difficult").text = str(int(diff))
        bb = ET.SubElement(ob, "bndbox")
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, k).text = str(int(v))
    ET.ElementTree(root).write(path, encoding="utf-8")
    return path


def read_image(path: str) -> np.ndarray:
    """An RGB image as a ``(H, W, 3)`` uint8 array (errors name the file)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the image ({e})") from None


class VOCDetection:
    """A VOC-layout split: ``ds[i]`` is ``(image (3, H, W) uint8 tensor, {"boxes" (G, 4) pixel xyxy,
    "labels" (G,) in 1..C, "difficult" (G,) bool})``. ``classes`` fixes the label order (default:
    sorted names found in the split); a name outside it is an error naming the file."""

    def __init__(self, root: str, split: str = "train", classes: Optional[Sequence[str]] = None,
                 subset: Optional[int] = None):
        self.root, self.split = root, split
        lst = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(lst):
            raise DataError(f"{lst}: missing split list (VOC layout: ImageSets/Main/{split}.txt)")
        with open(lst) as f:
            self.ids = [ln.split()[0] for ln in f if ln.strip()]
        if subset:
            self.ids = self.ids[:subset]
        self.annotations = [parse_annotation(os.path.join(root, "Annotations", f"{i}.xml")) for i in self.ids]
        names = sorted({o["name"] for a in self.annotations for o in a["objects"]})
        self.classes = list(classes) if classes is not None else names
        index = {c: k + 1 for k, c in enumerate(self.classes)}
        self.targets = []
        for i, a in zip(self.ids, self.annotations):
            labels = []
            for j, o in enumerate(a["objects"]):
                if o["name"] not in index:
                    raise DataError(f"{os.path.join(root, 'Annotations', i + '.xml')}: object[{j}]/name "
                                    f"{o['name']!r} is not one of the classes {self.classes}")
                labels.append(index[o["name"]])
            self.targets.append({
                "boxes": torch.tensor([o["bbox"] for o in a["objects"]], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.long),
                "difficult": torch.tensor([o["difficult"] for o in a["objects"]], dtype=torch.bool)})

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> str:
        fn = self.annotations[i]["filename"] or f"{self.ids[i]}.jpg"
        return os.path.join(self.root, "JPEGImages", fn)

    def __getitem__(self, i: int):
        img = torch.from_numpy(read_image(self.image_path(i)).copy()).permute(2, 0, 1)
        return img, self.targets[i]
