"""SSDLite (MobileNetV2 paper, section 6.2): its size and cost, and a trained run on the CamVid-derived boxes.

The trained claim needs the derived box sets under the data root (they are
derived from CamVid's label maps, not shipped)::

    operad derive-boxes DATA/camvid_cars --min-area 1000 --classes Car   # the smoke and cpu profiles
    operad derive-boxes DATA/camvid_boxes                                # the gpu and full profiles

A config's relative ``data_root`` (``data/camvid_cars``) names a folder under
the root given to ``operad reproduce --data``.
"""
from __future__ import annotations

from ._common import model_cost
from .base import Arm, Claim, register

MOBILENETV2 = "Sandler, Howard, Zhu, Zhmoginov, Chen. MobileNetV2: Inverted Residuals and Linear Bottlenecks. CVPR 2018"

_RUN = "ssdlite_mobilenetv2_camvid"
_COMMON = {"measure_speed": False, "plot_every": 0, "checkpoint_every": 0}
_PROF = {
    "smoke": {"subset": 4, "val_subset": 4, "epochs": 1, "batch_size": 2, "eval_batch_size": 2,
              "crop_size": [128, 128], "warmup_epochs": 0, "threads": 1, "device": "cpu", "log_every": 1, **_COMMON},
    "cpu": {"threads": 1, "device": "cpu", **_COMMON},  # the config's [cpu] table: cars, 240x320, 40 epochs
    "gpu": {**_COMMON},  # the config's full schedule: 4 classes, 360x480, 200 epochs
    "full": {},
}
# the untrained detector: the same config, one epoch at lr 1e-9 (AdamW moves each weight by about lr per step, so
# the weights stay at their initialisation); batch-norm statistics are recalibrated and mAP evaluated as for the
# trained arm, so this arm is the empirical chance level of the metric
_UNTRAINED = {p: {"epochs": 1, "lr": 1e-9, "warmup_epochs": 0} for p in ("smoke", "cpu", "gpu", "full")}

register(
    Claim("ssdlite_params", MOBILENETV2, "SSDLite", "SSDLite on MobileNetV2 (80 COCO classes, 320x320) has 4.3M "
          "parameters (Table 6)", metric="params", measure=model_cost("ssdlite_mobilenetv2", "params"),
          published=4.3e6, rel_tol=0.012,
          note="tolerance: half a unit of the paper's last digit; the TF configuration (3 boxes on the lowest level)"),
    Claim("ssdlite_macs", MOBILENETV2, "SSDLite", "SSDLite on MobileNetV2 (80 COCO classes, 320x320) costs 0.8B "
          "multiply-adds (Table 6)", metric="MACs", measure=model_cost("ssdlite_mobilenetv2", "macs"),
          published=0.8e9, rel_tol=0.0625,
          note="tolerance: half a unit of the paper's last digit (0.75-0.85B); the TF configuration"),
    Claim("ssdlite_camvid_map", MOBILENETV2, "SSDLite", "SSDLite on MobileNetV2, trained from scratch, learns to "
          "detect the CamVid-derived boxes: its val mAP@0.5 exceeds that of the same detector at its initialisation "
          "and that of the prior-box detector, which sees no pixels", metric="map50", direction="greater",
          arms=[Arm("ssdlite_camvid", config="ssdlite_camvid", run=_RUN),
                Arm("ssdlite_camvid_untrained", config="ssdlite_camvid", run=_RUN, profiles=_UNTRAINED)],
          profiles=_PROF, gpu_priority=0, dataset_classes=0, floor="map50_prior_boxes",
          note="boxes derived from CamVid label maps (operad derive-boxes), not comparable with published "
               "detection figures; cpu: cars only (>= 1000 px), 240x320, width 0.5, 40 epochs from scratch; "
               "gpu: the 4 classes (>= 100 px), 360x480, 200 epochs. The floor, the prior-box detector (per class "
               "the densest training boxes, in every frame), scores what box positions alone give; needs "
               "DATA/camvid_cars (cpu) or DATA/camvid_boxes (gpu) first; not in the GPU suite (the derived boxes "
               "are not packed for the GPU machine)"),
)
