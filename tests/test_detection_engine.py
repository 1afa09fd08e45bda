"""Boxes, matching, the multibox loss, NMS against a brute-force reference, and mAP on hand-computed cases."""
import math
import random

import pytest
import torch

from operad.experiments.detection.boxes import box_iou, cxcywh_to_xyxy, decode, encode
from operad.experiments.detection.loss import hard_negative_mask, multibox_loss
from operad.experiments.detection.match import match, prior_coverage
from operad.experiments.detection.metrics import average_precision, coco_map, mean_ap
from operad.experiments.detection.nms import batched_nms, nms


def test_iou_and_codec():
    a = torch.tensor([[0., 0, 2, 2], [0, 0, 1, 1]])
    b = torch.tensor([[1., 1, 3, 3], [5, 5, 6, 6]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0], [0, 0]]))
    priors = torch.rand(50, 4) * 0.5 + 0.1
    gt = cxcywh_to_xyxy(torch.rand(50, 4) * 0.5 + 0.1)
    torch.testing.assert_close(decode(encode(gt, priors), priors), gt)
    # SSD's variances: a box shifted by 0.1 * prior width encodes to offset 1
    p = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    g = cxcywh_to_xyxy(torch.tensor([[0.52, 0.5, 0.2, 0.4 * math.exp(0.2)]]))
    torch.testing.assert_close(encode(g, p), torch.tensor([[1.0, 0.0, 0.0, 1.0]]))


def test_match_forces_best_prior_and_thresholds():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.3, 0.3, 0.5, 0.5]])
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.9, 0.9, 1.0, 1.0]])  # the second overlaps nothing well
    loc, lab = match(gt, torch.tensor([1, 3]), priors, 0.5)
    assert lab.tolist() == [1, 3, 1]
    iou = box_iou(gt, cxcywh_to_xyxy(priors))
    assert iou[0, 2] >= 0.5 and iou[1, 1] < 0.5  # prior 2 by threshold; prior 1 is gt 1's forced match despite the low IoU
    torch.testing.assert_close(loc[0], encode(gt[:1], priors[:1])[0])
    _, lab = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), priors)
    assert lab.tolist() == [0, 0, 0]


def test_prior_coverage_counts_objects_a_default_box_overlaps_well():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.1, 0.1]])
    gts = [torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.7, 0.7, 0.8, 0.8]]),  # IoU 1 and 1
           torch.tensor([[0.0, 0.0, 0.4, 0.4]]),                          # IoU 0.64 with prior 0
           torch.tensor([[0.0, 0.0, 0.3, 0.3]]),                          # IoU 0.36: only a forced match
           torch.zeros(0, 4)]
    assert prior_coverage(gts, priors) == 0.75 and prior_coverage(gts, priors, 0.7) == 0.5
    assert math.isnan(prior_coverage([torch.zeros(0, 4)], priors))


def test_box_scales_set_the_default_boxes():
    from operad.experiments.config import Config, ConfigError
    from operad.experiments.detection.engine import build_detector
    cfg = dict(task="detection", model="ssdlite_mobilenetv2", model_args={"width": 0.25, "reduce_lowest": False},
               crop_size=[96, 128])
    wide = build_detector(Config.from_dict(cfg), 2).priors
    small = build_detector(Config.from_dict({**cfg, "box_scales": [0.1, 0.6]}), 2).priors
    assert wide.shape == small.shape == (6 * (6 * 8 + 3 * 4 + 2 * 2 + 1 + 1 + 1), 4)  # 96x128: 6x8, 3x4, 2x2, 1x1 ...
    assert wide[0, 2:].tolist() == pytest.approx([0.2, 0.2]) and small[0, 2:].tolist() == pytest.approx([0.1, 0.1])
    assert small[-6, 2:].tolist() == pytest.approx([0.6, 0.6]) and wide[-6, 2:].tolist() == pytest.approx([0.95, 0.95])
    with pytest.raises(ConfigError, match="box_scales"):
        Config.from_dict({**cfg, "box_scales": [0.6, 0.1]})
    with pytest.raises(ConfigError, match="box_scales"):
        Config.from_dict({**cfg, "box_scales": [0.1, 1.5]})


def test_hard_negative_mining_picks_the_worst_three_per_positive():
    bg = torch.tensor([[0.1, 5.0, 0.2, 4.0, 3.0, 0.3, 2.0, 9.0]])
    pos = torch.zeros(1, 8, dtype=torch.bool)
    pos[0, 7] = True
    m = hard_negative_mask(bg, pos, 3)
    assert m.nonzero()[:, 1].tolist() == [1, 3, 4, 7]  # the positive and the negatives with loss 5, 4, 3


def test_multibox_loss_by_hand():
    torch.manual_seed(0)
    n, k = 6, 3
    pred = torch.randn(1, 4 + k, n)
    loc_t = torch.randn(1, n, 4)
    labels = torch.tensor([[2, 0, 0, 0, 0, 0]])
    tot, loc, conf = multibox_loss(pred, loc_t, labels)
    # by hand: smooth L1 over the 4 offsets of prior 0; CE of prior 0 + the 3 hardest negatives
    d = (pred[0, :4, 0] - loc_t[0, 0]).abs()
    sl1 = torch.where(d < 1, 0.5 * d ** 2, d - 0.5).sum()
    ce = -pred[0, 4:].log_softmax(0)  # (k, n)
    negs = sorted(ce[0, 1:].tolist(), reverse=True)[:3]
    torch.testing.assert_close(loc, sl1)
    torch.testing.assert_close(conf, ce[2, 0] + sum(negs))
    torch.testing.assert_close(tot, loc + conf)


def _brute_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= thr for j in keep):
            keep.append(i)
    return keep


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("seed", range(8))
def test_nms_matches_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(0, 60)
    boxes = []
    for _ in range(n):
        x, y = rng.uniform(0, 50), rng.uniform(0, 50)
        boxes.append([x, y, x + rng.uniform(1, 30), y + rng.uniform(1, 30)])
    scores = [rng.random() for _ in range(n)]
    labels = [rng.randint(0, 2) for _ in range(n)]
    thr = rng.choice([0.3, 0.5, 0.7])
    b, s = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), torch.tensor(scores, dtype=torch.float64)
    assert nms(b, s, thr).tolist() == _brute_nms(boxes, scores, thr)
    # batched: per class, merged by score
    ref = []
    for c in set(labels):
        idx = [i for i in range(n) if labels[i] == c]
        ref += [idx[j] for j in _brute_nms([boxes[i] for i in idx], [scores[i] for i in idx], thr)]
    ref.sort(key=lambda i: -scores[i])
    assert batched_nms(b, s, torch.tensor(labels).reshape(-1), thr).tolist() == ref


def _case():
    # 2 objects; detections by score: TP (0.9), FP (0.8), TP (0.7): recall .5 .5 1, precision 1 .5 2/3
    gt = [{"boxes": torch.tensor([[0., 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
    det = [{"boxes": torch.tensor([[0., 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]
    return det, gt


@pytest.mark.parametrize("method,expected", [
    ("all", 0.5 * 1 + 0.5 * 2 / 3),                     # all-point area
    ("11point", (6 * 1 + 5 * 2 / 3) / 11),               # recall 0..0.5 -> 1, 0.6..1 -> 2/3
    ("coco", (51 * 1 + 50 * 2 / 3) / 101),               # 101 recall points
])
def test_ap_hand_computed(method, expected):
    det, gt = _case()
    assert mean_ap(det, gt, 1, 0.5, method)["map"] == pytest.approx(expected)


def test_voc_rules_duplicates_difficult_and_missing_classes():
    gt = [{"boxes": torch.tensor([[0., 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2]),
           "difficult": torch.tensor([False, True])}]
    det = [{"boxes": torch.tensor([[0., 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 2])}]
    r = mean_ap(det, gt, 3)
    assert r["ap"][0] == pytest.approx(1.0)  # the duplicate comes after recall 1: precision envelope 1
    assert math.isnan(r["ap"][1]) and math.isnan(r["ap"][2])  # only a difficult object; no object
    assert r["map"] == pytest.approx(1.0)
    # a duplicate before the second object's hit is a false positive: TP, FP, TP as in _case
    gt2 = [{"boxes": torch.tensor([[0., 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
    dup = [{"boxes": torch.tensor([[0., 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]
    assert mean_ap(dup, gt2, 1)["map"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(torch.tensor([0., 1.]), 1, "all") == pytest.approx(0.5)


def test_coco_map_averages_ten_thresholds():
    gt = [{"boxes": torch.tensor([[0., 0, 10, 10]]), "labels": torch.tensor([1])}]
    det = [{"boxes": torch.tensor([[0., 0, 10, 7.2]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    r = coco_map(det, gt, 1)  # IoU 0.72: a hit at 0.50 .. 0.70 (5 of 10 thresholds)
    assert r["map"] == pytest.approx(0.5) and r["map50"] == 1.0 and r["map75"] == 0.0


def test_precise_bn_recalibration():
    from torch import nn
    from operad.experiments.detection.engine import recalibrate_bn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    xs = [torch.randn(2, 3, 8, 8) * 3 + 1 for _ in range(3)]
    assert recalibrate_bn(m, [(x, None) for x in xs]) == 6
    feats = torch.cat([m[0](x) for x in xs])
    torch.testing.assert_close(m[1].running_mean, feats.mean((0, 2, 3)))
    assert m[1].momentum == 0.1 and not m.training


@pytest.mark.parametrize("mod", ["operad.operators.multibox", "operad.models.ssdlite"] + [
    f"operad.experiments.detection.{m}" for m in ("boxes", "match", "loss", "nms", "metrics", "voc", "coco",
                                                   "derive", "augment", "engine", "plot", "baseline")])
def test_docstring_examples(mod):
    import doctest
    import importlib
    res = doctest.testmod(importlib.import_module(mod))
    assert res.failed == 0 and res.attempted > 0
