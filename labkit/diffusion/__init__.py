"""Phase 20: a mini DDPM, every piece written out and tested.

Modules, in reading order: ``schedule`` (β_t, ᾱ_t and the forward process), ``unet`` (the ε/v
network), ``losses`` (L_simple, label dropout for guidance), ``sampling`` (DDPM, DDIM, one step of
each, classifier-free guidance), ``ema`` (the averaged weights one samples with), ``quality``
(judging samples with a classifier: confident share, class entropy, Fréchet distance), ``data``
(MNIST and CIFAR-10 in [-1, 1]), ``toy`` (the exact denoiser of Gaussian data, for checking
samplers), ``config`` (the typed schema of ``p20_*.yaml``), ``judge`` (P00's classifier as a
cached artifact, and its scores), ``monitor`` (EMA updates, sample grids and scores during a
run), ``task`` (build, and train with the shared trainer), ``trained`` (a trained model: load a
checkpoint, the one config-driven way to sample, evaluate), ``memory`` (a training step's GPU
memory, estimated on the CPU) and ``done`` (the "done when" checks of ``labkit.done p20``).
Explained in notebooks/20_diffusion_mini.py.
"""
