"""Phase 00: PyTorch warm-up on MNIST and the anatomy of a training loop.

Modules, in reading order: ``data`` (MNIST, offline fallback, shift augmentation), ``model``
(``SmallCNN``), ``evaluate`` (accuracy), ``task`` (build / run / the "done when" checks).
Explained in notebooks/00_pytorch_warmup.py. ``SmallCNN`` is reused by P20 as a judge of samples.
"""
