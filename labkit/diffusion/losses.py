"""The DDPM training objective: predict the noise that was added (Ho et al. 2020, Alg. 1, eq. 14).

``L_simple = E_{t, x_0, ε} ‖ε - ε_θ(√ᾱ_t x_0 + √(1 - ᾱ_t) ε, t)‖²`` with t uniform over the steps
and ε ~ N(0, I): a reweighted variational bound that Ho et al. found gives better samples than the
bound itself. The v-prediction variant (Salimans & Ho 2022, §4) regresses
``v = √ᾱ_t ε - √(1 - ᾱ_t) x_0`` instead, which stays well-scaled at both ends of the schedule.
Regressing x_0 itself (``prediction="x0"``) is the third option: at large t the best guess of x_0
is the blurry mean of all images, which the notebook shows as a failure mode of short runs.

Min-SNR-γ weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
Strategy", eq. 6-8): with ``SNR(t) = ᾱ_t / (1 - ᾱ_t)``, the error of each sample is weighted so
that the loss on x_0 it implies is ``min(SNR(t), γ) ‖x_0 - x̂_0‖²``. Small-t steps (large SNR, a
nearly clean image, little to learn) then stop dominating the gradient, which the paper reports
makes training converge ~3× faster. In the units of each target (:func:`min_snr_weights`):
ε: ``min(SNR, γ) / SNR``, v: ``min(SNR, γ) / (SNR + 1)``, x_0: ``min(SNR, γ)``.

For classifier-free guidance (Ho & Salimans 2022, Alg. 1) the same network learns the conditional
and the unconditional model: each label is replaced by the null label with probability
``cond_drop_prob``.

Explained in notebooks/20_diffusion_mini.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from labkit.diffusion.schedule import PREDICTIONS, NoiseSchedule

__all__ = ["diffusion_loss", "drop_labels", "min_snr_weights", "WEIGHTINGS"]

WEIGHTINGS = ("uniform", "min_snr")  # L_simple as Ho et al., or Hang et al. 2023's min-SNR-γ

ModelFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]  # (x_t [B,...], t [B], labels [B])


def _generator_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Draw on the generator's device (a CPU generator cannot feed a CUDA op), then move."""
    return generator.device if generator is not None else device


def drop_labels(
    labels: Tensor, null_label: int, p: float, generator: torch.Generator | None = None
) -> Tensor:
    """Replace each label by ``null_label`` with probability ``p``. ``[B]`` → ``[B]`` (a copy)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"cond_drop_prob must be in [0, 1], got {p}")
    u = torch.rand(
        labels.shape, generator=generator, device=_generator_device(generator, labels.device)
    )
    return torch.where(u.to(labels.device) < p, torch.full_like(labels, null_label), labels)


def min_snr_weights(snr: Tensor, gamma: float, prediction: str = "eps") -> Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023, eq. 8 and its v form), ``[B]`` → ``[B]``.

    ``snr``: ``SNR(t) = ᾱ_t / (1 - ᾱ_t)`` of each sample's timestep (``NoiseSchedule.snr[t]``).
    Each weight turns the target's squared error into ``min(SNR, γ) ‖x_0 - x̂_0‖²``:

    * ε: ``min(SNR, γ) / SNR``, written ``min(1, γ / SNR)``: 1 wherever SNR ≤ γ (large t) and
      finite at SNR = 0 (the end of a schedule with ᾱ_T = 0), where the quotient would be 0/0;
    * v: ``min(SNR, γ) / (SNR + 1)`` (``‖v - v̂‖² = (SNR + 1) ‖x_0 - x̂_0‖²``);
    * x_0: ``min(SNR, γ)``.
    """
    if not gamma > 0:
        raise ValueError(f"min_snr_gamma must be > 0, got {gamma}")
    clipped = snr.clamp(max=gamma)  # min(SNR, γ)
    if prediction == "eps":
        return (gamma / snr).clamp(max=1.0)
    if prediction == "v":
        return clipped / (snr + 1)
    if prediction == "x0":
        return clipped
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def diffusion_loss(
    model: ModelFn,
    schedule: NoiseSchedule,
    x0: Tensor,
    labels: Tensor | None = None,
    *,
    prediction: str = "eps",
    cond_drop_prob: float = 0.1,
    null_label: int | None = None,
    generator: torch.Generator | None = None,
    weighting: str = "uniform",
    min_snr_gamma: float = 5.0,
) -> Tensor:
    """One Monte Carlo estimate of ``L_simple`` on a batch (Ho et al. 2020, Alg. 1).

    Args:
        model: ``model(x_t, t, labels)`` → ``[B, ...]``, e.g. :class:`labkit.diffusion.unet.UNet`.
        schedule: the noise schedule (on ``x0``'s device).
        x0: ``[B, ...]`` clean data, images scaled to ``[-1, 1]``.
        labels: ``[B]`` int64 class labels, or None for an unconditional model.
        prediction: ``"eps"`` (target ε), ``"v"`` (target ``√ᾱ_t ε - √(1-ᾱ_t) x_0``) or
            ``"x0"`` (target x_0).
        cond_drop_prob: probability of replacing a label by the null label (CFG training);
            ignored without labels.
        null_label: the "no class" index; default ``model.null_label``.
        generator: source of t, ε and the label drops (None: the global RNG).
        weighting: ``"uniform"`` (every sample alike, L_simple) or ``"min_snr"`` (each sample's
            mean squared error times :func:`min_snr_weights`).
        min_snr_gamma: γ of the min-SNR weighting (Hang et al. use 5).

    Returns:
        Scalar: the mean squared error over every element of the batch (uniform), or the mean
        over the batch of each sample's weighted mean squared error (min_snr).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    b, device = x0.shape[0], x0.device
    draw_on = _generator_device(generator, device)
    t = torch.randint(0, schedule.num_steps, (b,), generator=generator, device=draw_on).to(device)
    noise = torch.randn(x0.shape, generator=generator, device=draw_on).to(device)  # ε ~ N(0, I)
    x_t = schedule.q_sample(x0, t, noise)  # eq. 4
    if labels is not None and cond_drop_prob > 0:
        null_label = getattr(model, "null_label", None) if null_label is None else null_label
        if null_label is None:
            raise ValueError(
                "label dropout for classifier-free guidance needs a null label: pass null_label= "
                "or use a model with a .null_label (UNet(num_classes=...)), or cond_drop_prob=0"
            )
        labels = drop_labels(labels, null_label, cond_drop_prob, generator)
    if prediction == "eps":
        target = noise
    elif prediction == "v":
        target = schedule.velocity(x0, t, noise)
    else:
        target = x0
    output = model(x_t, t, labels)
    if weighting == "uniform":
        return F.mse_loss(output, target)
    per_sample = F.mse_loss(output, target, reduction="none").flatten(1).mean(dim=1)  # [B]
    weights = min_snr_weights(schedule.snr[t], min_snr_gamma, prediction)  # [B]
    return (weights * per_sample).mean()
