"""Phase 10: a tiny one-stage object detector, every piece written out and tested.

Modules, in reading order: ``boxes`` (IoU geometry), ``nms``, ``assign`` (which grid cells learn
which box; decoding), ``losses`` (focal, varifocal, quality focal, GIoU/DIoU, the detector's loss), ``model``
(``TinyDetector``), ``metrics`` (VOC mAP), ``dataset`` (synthetic shapes, VOC, transforms,
``build_datasets`` from a config), ``evaluate`` (predict and score a loader), ``visualize``,
``task`` (the pieces P40 reuses, build, run, resume), ``done`` (the "done when" checks),
``ablation`` (the recipe ablation at one CPU budget).
Explained in notebooks/10_detection_tiny.py.
"""
