"""Metrics against hand-computed values; augmentation semantics; evaluation."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from operad.experiments.augment import Augment, DeviceBatches, SegAugment, mix_batch, mixed_loss, rotate_batch
from operad.experiments.data import ArrayData
from operad.experiments.evaluate import evaluate, jpeg_recode, shift_batch
from operad.experiments.metrics import ConfusionMatrix, topk_correct


def test_confusion_matrix_segmentation_by_hand():
    # 3 classes, ignore index 3; targets/preds as 2x4 "images"
    t = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 1]])
    p = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    cm = ConfusionMatrix(3, ignore_index=3)
    cm.update(p, t)
    # rows = target, cols = prediction; the ignored pixel (target 3) is not counted
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)
    # IoU_c = TP / (TP + FP + FN): class0 1/(1+1+1), class1 2/(2+1+1), class2 1/(1+1+1)
    assert cm.iou() == pytest.approx([1 / 3, 2 / 4, 1 / 3])
    assert cm.mean_iou() == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert cm.per_class_accuracy() == pytest.approx([1 / 2, 2 / 3, 1 / 2])
    cm.update(p, t)  # accumulates
    assert cm.matrix.sum().item() == 14


def test_miou_excludes_absent_classes():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    iou = cm.iou()
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert cm.mean_iou() == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_topk_by_hand():
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0, 0.3],   # order 3,1,5,2,0,4
                           [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],   # order 0,5,4,3,2,1
                           [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([1, 1, 2])
    assert topk_correct(logits, target, (1, 2, 5)).tolist() == [1, 2, 2]


def test_evaluate_matches_manual_computation():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (13, 4, 4, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 13)
    d = ArrayData("t", "test", x, y, ["a", "b", "c"], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    r = evaluate(m, DeviceBatches(d, batch_size=5))
    xt = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        logits = m(xt)
    yt = torch.from_numpy(y)
    assert r["top1"] == pytest.approx((logits.argmax(1) == yt).float().mean().item())
    assert r["top5"] == 1.0
    assert r["loss"] == pytest.approx(F.cross_entropy(logits, yt).item(), rel=1e-5)
    assert sum(map(sum, r["confusion_matrix"])) == 13
    assert r["count"] == 13


def test_mixed_loss_and_label_smoothing_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    lp = F.log_softmax(logits, 1)[0]
    smooth = -(0.9 * lp[0] + 0.1 / 3 * lp.sum())
    assert mixed_loss(logits, torch.tensor([0]), torch.tensor([0]), 1.0, 0.1).item() == pytest.approx(smooth.item())
    mixed = -(0.25 * lp[0] + 0.75 * lp[2])
    assert mixed_loss(logits, torch.tensor([0]), torch.tensor([2]), 0.25).item() == pytest.approx(mixed.item())


def test_random_crop_flip_cutout_semantics():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    g = torch.Generator().manual_seed(3)
    out = Augment(crop_padding=2)(x, g)
    for i in range(2):  # each output is a 6x6 window of the zero-padded input
        xp = F.pad(x[i, 0], (2, 2, 2, 2))
        hits = [(a, b) for a in range(5) for b in range(5) if torch.equal(xp[a:a + 6, b:b + 6], out[i, 0])]
        assert hits
    f = Augment(flip=True)(x, torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1))
    c = Augment(cutout=2)(torch.ones(64, 1, 8, 8), torch.Generator().manual_seed(1))
    zeros = (c == 0).sum((1, 2, 3))
    assert set(zeros.tolist()) <= {1, 2, 4} and (zeros == 4).any()  # a 2x2 square, clipped at borders


def test_augment_same_params_for_any_data_parallel_split():
    x = torch.randn(8, 3, 10, 10)
    aug = Augment(crop_padding=3, flip=True, cutout=4, rotate=20)
    whole = aug(x, torch.Generator().manual_seed(5))
    halves = [aug(x[s], torch.Generator().manual_seed(5), total=8, part=s) for s in (slice(0, 4), slice(4, 8))]
    assert torch.allclose(whole, torch.cat(halves), atol=1e-6)


def test_seg_augment_keeps_image_and_label_aligned():
    # the image's first channel equals the label (as float): alignment means they still agree
    lab = torch.randint(0, 11, (4, 20, 30))
    img = lab[:, None].float().repeat(1, 3, 1, 1)
    aug = SegAugment(scale=(0.5, 2.0), crop=(16, 16), flip=True, ignore_index=11)
    xo, yo = aug(img, lab, torch.Generator().manual_seed(0))
    assert xo.shape == (4, 3, 16, 16) and yo.shape == (4, 16, 16)
    assert set(yo.unique().tolist()) <= set(range(12))
    # at label pixels whose 3x3 neighbourhood is uniform, bilinear image == label exactly
    x2 = SegAugment(scale=(1.0, 1.0), crop=None, flip=True)(img, lab, torch.Generator().manual_seed(1))
    assert torch.equal(x2[0][:, 0].round().long(), x2[1])
    # padding outside the scaled image is labelled void
    _, ypad = SegAugment(scale=(0.5, 0.5), crop=(20, 30), ignore_index=11)(img, lab, torch.Generator().manual_seed(0))
    assert (ypad == 11).float().mean() > 0.5


def test_mix_batch():
    # cutmix: image i is the constant i + 1, so every pixel says which image it came from
    x = torch.arange(1, 7, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 8, 8).contiguous()
    y = torch.arange(6)
    checked = mixed = 0
    for seed in range(6):
        xm, ya, yb, lam = mix_batch(x, y, np.random.default_rng(seed), cutmix=1.0, gen=torch.Generator().manual_seed(seed))
        assert torch.equal(ya, y) and sorted(yb.tolist()) == list(range(6))  # partners: a permutation
        for i in range(6):
            own, other = xm[i, 0] == i + 1, xm[i, 0] == yb[i] + 1
            assert torch.equal(own | other, torch.ones_like(own))  # every pixel from i or its partner
            if yb[i] == i:
                continue
            assert other.float().mean().item() == pytest.approx(1 - lam)  # the label weight is the area
            rows, cols = other.any(1).nonzero(), other.any(0).nonzero()
            if len(rows):  # the pasted pixels fill one rectangle
                assert other.sum() == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
                checked += 1
            if 0 < lam < 1:  # a real mix of two different images: exactly their two values
                assert set(xm[i].unique().tolist()) == {float(i + 1), float(yb[i] + 1)}
                mixed += 1
    assert checked > 0 and mixed > 0
    # mixup: each image is lam of itself and 1 - lam of its partner
    xm2, _, yb2, lam2 = mix_batch(x, y, np.random.default_rng(1), mixup=0.4)
    assert 0 < lam2 < 1 and (yb2 != y).any()
    torch.testing.assert_close(xm2[:, 0, 0, 0], lam2 * (y + 1.0) + (1 - lam2) * (yb2 + 1.0))
    assert xm2.min() >= 1 and xm2.max() <= 6  # a convex combination stays within the images' range


def test_rotate_and_shift_batch():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 1, 2] = 1
    r = rotate_batch(x, 90.0, mode="nearest")
    assert torch.equal(r, torch.rot90(x, 1, (-2, -1)))  # counter-clockwise
    s = shift_batch(x, torch.tensor([1]), torch.tensor([-2]))
    assert s[0, 0, 2, 0] == 1 and s.sum() == 1
    c = shift_batch(x, torch.tensor([0]), torch.tensor([4]), "circular")
    assert torch.equal(c, torch.roll(x, 4, -1))


def test_jpeg_recode_changes_pixels_monotonically():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    errs = [np.abs(jpeg_recode(img, q).astype(int) - img).mean() for q in (95, 75, 40)]
    assert errs[0] < errs[1] < errs[2]


def test_device_batches_shards_and_order():
    d = ArrayData("t", "train", np.arange(12, dtype=np.uint8).repeat(3 * 4).reshape(12, 2, 2, 3),
                  np.arange(12) % 3, ["a", "b", "c"])
    full = DeviceBatches(d, 4, shuffle=True, drop_last=True, seed=7)
    r0 = DeviceBatches(d, 4, shuffle=True, drop_last=True, seed=7, rank=0, world_size=2)
    r1 = DeviceBatches(d, 4, shuffle=True, drop_last=True, seed=7, rank=1, world_size=2)
    for (xf, yf), (x0, y0), (x1, y1) in zip(full.epoch(2), r0.epoch(2), r1.epoch(2)):
        assert torch.equal(torch.cat([y0, y1]), yf) and torch.equal(torch.cat([x0, x1]), xf)
    e0 = [y for _, y in full.epoch(0)]
    e1 = [y for _, y in full.epoch(1)]
    assert not all(torch.equal(a, b) for a, b in zip(e0, e1))  # reshuffled per epoch
    assert [y.tolist() for _, y in full.epoch(0, start=1)] == [y.tolist() for y in e0[1:]]
