"""Detection training on the classification engine's stages: an interrupted and resumed run equals the
uninterrupted one, and the EMA weights are the ones evaluated and saved when ``ema`` is set."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from operad.experiments.config import Config
from operad.experiments.detection import engine
from operad.experiments.detection.engine import eval_detection, train_detection_run
from operad.experiments.detection.voc import write_annotation
from operad.experiments.train import load_checkpoint


def _boxes(root, n=6):
    """A VOC-layout set of ``n`` 48x64 frames per split, each with a red car and a dark pedestrian."""
    rng = np.random.default_rng(0)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        ids = []
        for i in range(n):
            img = rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)
            y, x = (int(v) for v in rng.integers(2, 20, 2))
            img[y:y + 20, x:x + 24] = (200, 30, 30)
            img[28:46, 50:58] = (20, 20, 20)
            name = f"{split}{i}"
            Image.fromarray(img).save(root / "JPEGImages" / f"{name}.png")
            write_annotation(str(root / "Annotations" / f"{name}.xml"), f"{name}.png", (64, 48),
                             [("Car", (x + 1, y + 1, x + 24, y + 20), 0), ("Pedestrian", (51, 29, 58, 46), 0)])
            ids.append(name)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def _cfg(root, out, **kw):
    base = dict(task="detection", dataset="voc", data_root=str(root), model="ssdlite_mobilenetv2",
                model_args={"width": 0.25}, epochs=3, batch_size=2, eval_batch_size=3, optimizer="adamw", lr=3e-3,
                warmup_epochs=1, crop_size=[64, 64], box_scales=[0.1, 0.6], scale_range=[0.3, 1.0], ema=0.9,
                eval_every=1, checkpoint_every=2, log_every=1, plot_every=0, threads=1, device="cpu", progress=False,
                out_dir=str(out), name="det")
    base.update(kw)
    return Config.from_dict(base)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The box set and an uninterrupted run with EMA (6 frames, batch 2: 3 steps per epoch, 9 in all)."""
    tmp = tmp_path_factory.mktemp("det")
    root = _boxes(tmp / "boxes")
    return root, tmp / "b" / "det", train_detection_run(_cfg(root, tmp / "b"))


def test_resume_after_an_interruption_equals_the_uninterrupted_run(uninterrupted, tmp_path, monkeypatch):
    root, run_b, b = uninterrupted
    step = engine._DetectionLoop.train_step

    def interrupted(self, x, targets):
        if self.step == 5:  # past the checkpoint of step 4, in the middle of epoch 2
            raise KeyboardInterrupt
        step(self, x, targets)

    monkeypatch.setattr(engine._DetectionLoop, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_detection_run(_cfg(root, tmp_path / "a"))
    run = tmp_path / "a" / "det"
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 4 and not (run / "final.pt").exists()
    monkeypatch.setattr(engine._DetectionLoop, "train_step", step)
    a = train_detection_run(_cfg(root, tmp_path / "a"), resume=True)
    fa, fb = load_checkpoint(str(run / "final.pt")), load_checkpoint(str(run_b / "final.pt"))
    for part in ("model", "ema"):
        assert fa[part].keys() == fb[part].keys()
        for k in fa[part]:
            assert torch.equal(fa[part][k], fb[part][k]), f"{part}.{k} differs after the resume"
    assert a["val"] == b["val"] and a["steps"] == b["steps"] == 9
    la = [json.loads(ln) for ln in open(run / "metrics.jsonl")]
    lb = [json.loads(ln) for ln in open(run_b / "metrics.jsonl")]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("time", "img_per_s", "eval_s")}  # noqa: E731
    assert [strip(r) for r in la] == [strip(r) for r in lb]
    assert [r["step"] for r in la if r["kind"] == "eval"] == [3, 6, 9] and "loc" in la[0] and "ema_map50" in la[-1]
    assert (run / "boxes-val.png").stat().st_size > 0 and (run / "curves.png").stat().st_size > 0


def test_ema_weights_are_evaluated_and_saved(uninterrupted, tmp_path):
    root, run, s = uninterrupted
    ck = load_checkpoint(str(run / "final.pt"))
    assert s["ema"] and ck["ema"] is not None
    assert any(not torch.equal(ck["ema"][k], ck["model"][k]) for k in ck["model"] if "weight" in k)
    ema = eval_detection(str(run), batch_size=3, out=str(tmp_path / "ema"))
    raw = eval_detection(str(run), batch_size=3, use_ema=False, out=str(tmp_path / "raw"))
    assert ema["weights"] == "ema" and raw["weights"] == "model"
    assert s["val"]["loss"] == pytest.approx(ema["loss"], rel=1e-5)  # the summary reports the EMA weights
    assert s["val_weights"]["loss"] == pytest.approx(raw["loss"], rel=1e-5)
    assert ema["loss"] != pytest.approx(raw["loss"], rel=1e-3)
    # without ema: one set of weights, no EMA in final.pt
    s0 = train_detection_run(_cfg(root, tmp_path, ema=0.0, epochs=1, checkpoint_every=0, name="plain"))
    assert not s0["ema"] and "val_weights" not in s0
    assert load_checkpoint(str(tmp_path / "plain" / "final.pt"))["ema"] is None
