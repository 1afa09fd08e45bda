"""VOC and COCO loaders on small files written here, the CamVid-derived boxes, and detection augmentation."""
import json
import os
from collections import deque

import numpy as np
import pytest
import torch
from PIL import Image

from operad.experiments.data import DataError
from operad.experiments.detection.augment import DetectionBatches, crop_boxes, crop_window
from operad.experiments.detection.coco import COCODetection, load_coco
from operad.experiments.detection.derive import components, derive_camvid_boxes, frame_boxes
from operad.experiments.detection.voc import VOCDetection, parse_annotation, write_annotation


def _voc(root, ids=("a", "b"), size=(48, 32)):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    rng = np.random.default_rng(0)
    for i, n in enumerate(ids):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            os.path.join(root, "JPEGImages", f"{n}.png"))
        objs = [("car", (3, 4, 20, 30), 0), ("person", (25, 2, 40, 12), int(i == 1))]
        write_annotation(os.path.join(root, "Annotations", f"{n}.xml"), f"{n}.png", size, objs)
    with open(os.path.join(root, "ImageSets", "Main", "train.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return root


def test_voc_layout(tmp_path):
    ds = VOCDetection(_voc(str(tmp_path)), "train")
    assert ds.classes == ["car", "person"] and len(ds) == 2
    img, t = ds[1]
    assert img.shape == (3, 32, 48) and img.dtype == torch.uint8
    assert t["boxes"].tolist() == [[2, 3, 20, 30], [24, 1, 40, 12]]  # 1-based inclusive -> 0-based corners
    assert t["labels"].tolist() == [1, 2] and t["difficult"].tolist() == [False, True]


@pytest.mark.parametrize("body,msg", [
    ('<!DOCTYPE a [<!ENTITY x "y">]><annotation/>', "DTD or entity"),
    ("<annotation><size><width>4</width></size></annotation>", "size/height"),
    ("<annotation><size><width>4</width><height>4</height></size><object><name>car</name>"
     "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax><ymax>2</ymax></bndbox></object></annotation>",
     "object[0]/bndbox/xmax"),
    ("<annotation><size><width>4</width><height>4</height></size><object><name>car</name></object></annotation>",
     "object[0]/bndbox"),
    ("<annotation><size>", "not well-formed"),
])
def test_voc_errors_name_file_and_field(tmp_path, body, msg):
    p = tmp_path / "bad.xml"
    p.write_text(body)
    with pytest.raises(DataError) as e:
        parse_annotation(str(p))
    assert str(p) in str(e.value) and msg in str(e.value)


def test_voc_unknown_class_and_missing_list(tmp_path):
    root = _voc(str(tmp_path))
    with pytest.raises(DataError, match=r"a\.xml: object\[1\]/name 'person'"):
        VOCDetection(root, "train", classes=["car"])
    with pytest.raises(DataError, match="val.txt"):
        VOCDetection(root, "val")


def test_coco_layout_and_errors(tmp_path):
    os.makedirs(tmp_path / "img")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "img" / "x.png")
    good = {"images": [{"id": 5, "file_name": "x.png", "width": 12, "height": 10}],
            "annotations": [{"image_id": 5, "category_id": 9, "bbox": [1, 2, 3, 4]},
                            {"image_id": 5, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1}],
            "categories": [{"id": 9, "name": "car"}, {"id": 2, "name": "bus"}]}
    p = tmp_path / "a.json"
    p.write_text(json.dumps(good))
    ds = COCODetection(str(p), str(tmp_path / "img"))
    img, t = ds[0]
    assert ds.classes == ["bus", "car"] and img.shape == (3, 10, 12)
    assert t["boxes"].tolist() == [[1, 2, 4, 6], [0, 0, 5, 5]] and t["labels"].tolist() == [2, 1]
    assert t["difficult"].tolist() == [False, True]
    for mutate, field in [
        (lambda d: d["annotations"][1].update(bbox=[0, 0, -1, 5]), "annotations[1].bbox"),
        (lambda d: d["annotations"][0].update(image_id=6), "annotations[0].image_id"),
        (lambda d: d["annotations"][0].update(category_id=1), "annotations[0].category_id"),
        (lambda d: d["images"][0].pop("file_name"), "images[0].file_name"),
        (lambda d: d.pop("categories"), "categories"),
    ]:
        d = json.loads(json.dumps(good))
        mutate(d)
        p.write_text(json.dumps(d))
        with pytest.raises(DataError) as e:
            load_coco(str(p))
        assert str(p) in str(e.value) and field in str(e.value), (field, str(e.value))
    p.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_coco(str(p))


def _bfs_components(mask):
    seen = np.zeros_like(mask, bool)
    out = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        q, seen[y, x], pix = deque([(y, x)]), True, []
        while q:
            a, b = q.popleft()
            pix.append((a, b))
            for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                u, v = a + da, b + db
                if 0 <= u < mask.shape[0] and 0 <= v < mask.shape[1] and mask[u, v] and not seen[u, v]:
                    seen[u, v] = True
                    q.append((u, v))
        ys, xs = [p[0] for p in pix], [p[1] for p in pix]
        out.append((min(xs), min(ys), max(xs), max(ys), len(pix)))
    return sorted(out)


@pytest.mark.parametrize("seed", range(6))
def test_components_match_bfs(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) < rng.uniform(0.2, 0.6)
    assert sorted(components(mask)) == _bfs_components(mask)


def test_frame_boxes_min_area_and_classes():
    lab = np.full((20, 30), 3, np.uint8)
    lab[2:12, 3:9] = 8      # car, 60 px
    lab[15:17, 20:22] = 9   # pedestrian, 4 px
    lab[0:5, 25:30] = 6     # sign, 25 px
    assert frame_boxes(lab, min_area=10) == [("Car", (4, 3, 9, 12), 0), ("SignSymbol", (26, 1, 30, 5), 0)]
    assert len(frame_boxes(lab, min_area=1)) == 3


def test_derive_camvid_boxes(tmp_path):
    cam = tmp_path / "camvid"
    for split in ("train", "val"):
        os.makedirs(cam / split)
        os.makedirs(cam / f"{split}annot")
        lab = np.full((24, 32), 1, np.uint8)
        lab[4:14, 2:12] = 8
        lab[16:22, 20:23] = 10
        Image.fromarray(lab).save(cam / f"{split}annot" / "f1.png")
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(cam / split / "f1.png")
        (cam / f"{split}.txt").write_text(f"{split}/f1.png {split}annot/f1.png\n")
    stats = derive_camvid_boxes(str(cam), str(tmp_path / "out"), min_area=10)
    assert stats["train"] == {"frames": 1, "boxes": 2, "Car": 1, "Pedestrian": 0, "Bicyclist": 1, "SignSymbol": 0}
    ds = VOCDetection(str(tmp_path / "out"), "val", classes=["Car", "Pedestrian", "Bicyclist", "SignSymbol"])
    assert ds[0][1]["boxes"].tolist() == [[2, 4, 12, 14], [20, 16, 23, 22]]
    assert "derived from CamVid" in (tmp_path / "out" / "README.md").read_text()
    cars = derive_camvid_boxes(str(cam), str(tmp_path / "cars"), min_area=10, classes=["Car"])
    assert cars["val"] == {"frames": 1, "boxes": 1, "Car": 1}
    assert VOCDetection(str(tmp_path / "cars"), "val").classes == ["Car"]
    with pytest.raises(DataError, match=r"\['Truck'\] are not CamVid box classes"):
        derive_camvid_boxes(str(cam), str(tmp_path / "out3"), classes=["Car", "Truck"])
    assert not (tmp_path / "out3").exists()
    (cam / "val.txt").write_text("val/f1.png\n")
    with pytest.raises(DataError, match=r"val\.txt: line 1"):
        derive_camvid_boxes(str(cam), str(tmp_path / "out2"))


def test_training_batches_depend_only_on_seed_epoch_and_step(tmp_path):
    """A stream started at batch ``i`` of an epoch (a resumed run) yields what the whole epoch yields
    from ``i`` on; another epoch is another order, another step other crops."""
    ds = VOCDetection(_voc(str(tmp_path), ids=("a", "b", "c", "d", "e", "f")), "train")
    tr = DetectionBatches(ds, 2, (16, 16), train=True, seed=5)
    assert len(tr) == 3 and len(DetectionBatches(ds, 4, (16, 16), train=True)) == 1  # the partial batch dropped
    whole = list(tr.epoch(2, step_offset=6))
    tail = list(DetectionBatches(ds, 2, (16, 16), train=True, seed=5).epoch(2, start=1, step_offset=6))
    for (xa, ta), (xb, tb) in zip(whole[1:], tail):
        assert torch.equal(xa, xb) and all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(ta, tb))
    assert tr.order(2) != tr.order(3) and sorted(tr.order(3)) == list(range(6))
    other = list(tr.epoch(2, step_offset=9))
    assert not torch.equal(whole[0][0], other[0][0])


def test_crop_keeps_box_centres():
    g = torch.Generator().manual_seed(1)
    boxes = torch.tensor([[10., 10, 30, 40], [60, 5, 90, 20], [5, 70, 15, 95]])
    for _ in range(50):
        win, keep = crop_window(boxes, 100, 100, g)
        c = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (c[:, 0] >= win[0]) & (c[:, 0] < win[2]) & (c[:, 1] >= win[1]) & (c[:, 1] < win[3])
        assert keep.any() and torch.equal(keep, inside)
        cb = crop_boxes(boxes[keep], win)
        assert (cb >= 0).all() and (cb[:, 2] <= win[2] - win[0]).all() and (cb[:, 3] <= win[3] - win[1]).all()


def test_detection_batches_flip_and_resize(tmp_path):
    ds = VOCDetection(_voc(str(tmp_path)), "train")
    ev = list(DetectionBatches(ds, 2, (16, 16)))
    x, t = ev[0]
    assert x.shape == (2, 3, 16, 16)
    torch.testing.assert_close(t[0]["boxes"], ds.targets[0]["boxes"] / torch.tensor([48, 32, 48, 32]))
    tr = DetectionBatches(ds, 2, (16, 16), train=True, seed=3)
    for epoch in range(5):
        for x, ts in tr.epoch(epoch, step_offset=epoch * len(tr)):
            assert x.shape == (2, 3, 16, 16)
            for t in ts:
                b = t["boxes"]
                assert ((b >= 0) & (b <= 1)).all() and (b[:, 2:] >= b[:, :2]).all() and len(t["labels"]) >= 1
    # flip: a box's mirror image, pixel for pixel
    tr = DetectionBatches(ds, 1, (32, 48), train=False)
    img, tgt = ds[0]
    tr.train, tr.flip = True, True
    tr.min_scale = 1.0  # no crop: the whole frame, flipped or not
    flipped = [tr._one(img, tgt, torch.Generator().manual_seed(i)) for i in range(12)]
    mirrored = [f for f in flipped if not torch.equal(f[1]["boxes"], tgt["boxes"] / torch.tensor([48, 32, 48, 32]))]
    assert mirrored
    x, t = mirrored[0]
    torch.testing.assert_close(x, img.float().div(255).flip(-1))
    b = tgt["boxes"][0]
    torch.testing.assert_close(t["boxes"][0] * torch.tensor([48, 32, 48, 32]), torch.stack([48 - b[2], b[1], 48 - b[0], b[3]]))
