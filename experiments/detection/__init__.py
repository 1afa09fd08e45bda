"""Object detection: boxes, default-box matching, the multibox loss, NMS, mAP,
VOC and COCO loaders, the CamVid-derived box set, augmentation and training.

See ``experiments/detection/README.md`` for the commands and measured figures.
"""
