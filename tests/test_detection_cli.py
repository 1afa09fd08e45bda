"""`operad derive-boxes`, then `operad train` and `operad eval` on a detection config, end to end (tiny)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from operad.experiments.cli import main


def _camvid(root, n=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        os.makedirs(root / split)
        os.makedirs(root / f"{split}annot")
        lines = []
        for i in range(n):
            lab = np.full((48, 64), 3, np.uint8)
            y, x = rng.integers(2, 20), rng.integers(2, 30)
            lab[y:y + 20, x:x + 24] = 8
            lab[30:46, 50:58] = 9
            img = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
            img[lab == 8] = (200, 30, 30)
            Image.fromarray(lab).save(root / f"{split}annot" / f"f{i}.png")
            Image.fromarray(img).save(root / split / f"f{i}.png")
            lines.append(f"{split}/f{i}.png {split}annot/f{i}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_derive_train_eval(tmp_path, capsys):
    _camvid(tmp_path / "camvid")
    boxes = tmp_path / "boxes"
    assert main(["derive-boxes", str(boxes), "--camvid", str(tmp_path / "camvid"), "--min-area", "20"]) == 0
    assert "train: 3 frames, 6 boxes" in capsys.readouterr().out
    cfg = tmp_path / "det.toml"
    cfg.write_text('task = "detection"\ndataset = "voc"\nmodel = "ssdlite_mobilenetv2"\n'
                   'model_args = { width = 0.25 }\nepochs = 1\nbatch_size = 3\neval_batch_size = 3\n'
                   'optimizer = "adamw"\nlr = 1e-3\ncrop_size = [64, 64]\nlog_every = 1\nname = "det"\n')
    rc = main(["train", str(cfg), "--data", str(boxes), "--out", str(tmp_path / "runs"), "--profile", "cpu"])
    assert rc == 0
    run = tmp_path / "runs" / "det"
    s = json.loads((run / "summary.json").read_text())
    assert s["task"] == "detection" and s["classes"] == ["Car", "Pedestrian"]
    assert 0.0 <= s["val"]["map50"] <= 1.0 and s["val"]["images"] == 3
    assert (run / "boxes-val.png").stat().st_size > 0
    assert main(["eval", str(run), "--data", str(boxes)]) == 0
    out = capsys.readouterr().out
    assert "mAP@0.5" in out and (run / "eval-val.json").exists() and (run / "boxes-val.png").exists()
    # a detection config without data is an error that says what to set
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs2"), "--profile", "cpu"]) == 2


@pytest.mark.slow
def test_engine_overfits_eight_camvid_frames(tmp_path, shared_data):
    """The loss, matching, decoding, NMS and mAP agree: 8 frames learned by heart score high (about 0.86)."""
    import torch
    from operad.experiments.detection.augment import DetectionBatches
    from operad.experiments.detection.derive import derive_camvid_boxes
    from operad.experiments.detection.engine import evaluate_detector, recalibrate_bn
    from operad.experiments.detection.loss import multibox_loss
    from operad.experiments.detection.match import match_batch
    from operad.experiments.detection.voc import VOCDetection
    from operad.models import create_model
    from operad.models.ssdlite import default_boxes

    derive_camvid_boxes(os.path.join(shared_data, "camvid"), str(tmp_path), 1000, splits=("train",))
    ds = VOCDetection(str(tmp_path), "train", subset=8)
    torch.manual_seed(0)
    m = create_model("ssdlite_mobilenetv2", num_classes=len(ds.classes), width=0.5)
    m.register_buffer("priors", default_boxes(m.term, (128, 128)), persistent=False)
    batches = DetectionBatches(ds, 8, (128, 128))
    x, t = next(iter(batches))
    loc_t, lab = match_batch(t, m.priors)
    opt = torch.optim.AdamW(m.parameters(), 3e-3, weight_decay=0)
    m.train()
    for _ in range(60):
        loss = multibox_loss(m(x), loc_t, lab)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    recalibrate_bn(m, batches)
    assert evaluate_detector(m, batches, len(ds.classes))["map50"] > 0.5
