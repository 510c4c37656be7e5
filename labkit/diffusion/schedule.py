"""Noise schedules and the closed-form quantities of the forward (noising) process.

Notation follows Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM):

* ``β_t`` the variance added at step t, ``α_t = 1 - β_t``, ``ᾱ_t = ∏_{s ≤ t} α_s`` (eq. 4 context);
* ``q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)`` (eq. 4), so ``x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε``;
* the posterior ``q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)`` with (eq. 6-7)
  ``μ̃_t = β_t √ᾱ_{t-1} / (1 - ᾱ_t) · x_0 + (1 - ᾱ_{t-1}) √α_t / (1 - ᾱ_t) · x_t`` and
  ``β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t``.

Timesteps are **0-based indices** ``t ∈ {0, ..., T-1}`` as in every implementation: index t is the
paper's step t+1, and ``ᾱ_{-1} = 1`` (the paper's ``ᾱ_0``, no noise at all).

Everything is computed in float64, where ``1 - ᾱ_t`` near t = 0 and products of ~1000 factors keep
their digits, and stored in float32, the dtype the network runs in.

Explained in notebooks/20_diffusion_mini.py.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "beta_schedule",
    "extract",
    "NoiseSchedule",
    "SCHEDULE_KINDS",
    "PREDICTIONS",
    "LINEAR_BETAS",
]

SCHEDULE_KINDS = ("linear", "cosine")
# What the network outputs: the noise ε (DDPM), the velocity v (Salimans & Ho 2022) or the clean
# image x_0 itself (shown in the notebook as the blurrier choice for few training steps).
PREDICTIONS = ("eps", "v", "x0")
LINEAR_BETAS = (1e-4, 0.02)  # Ho et al. 2020 §4: β_1 and β_T of the linear schedule at T = 1000


def beta_schedule(
    kind: str,
    num_steps: int,
    beta_start: float = LINEAR_BETAS[0],
    beta_end: float = LINEAR_BETAS[1],
) -> Tensor:
    """The variances ``β_t`` of the forward process, ``Tensor[T]`` in float64.

    * ``"linear"``: Ho et al. 2020 §4 use ``β_t`` linear from 1e-4 to 0.02 over T = 1000 steps.
      For other T both ends are scaled by ``1000 / T`` (as in Nichol & Dhariwal's code), so that
      the total noise ``ᾱ_T`` stays about the same. Needs T ≥ 21: below, ``β_T`` would reach 1.
      ``beta_start`` / ``beta_end`` change the ends (given at T = 1000, scaled the same way):
      a ``beta_end`` much below 0.02 leaves signal in x_T (ᾱ_T ≫ 0), the "wrong endpoint" the
      notebook shows, since sampling starts from pure noise.
    * ``"cosine"``: Nichol & Dhariwal 2021, "Improved DDPM", eq. 17:
      ``ᾱ_t = f(t) / f(0)``, ``f(t) = cos²((t/T + s) / (1 + s) · π/2)`` with s = 0.008, then
      ``β_t = 1 - ᾱ_t / ᾱ_{t-1}`` clipped at 0.999 (the last steps would otherwise reach β = 1,
      a singularity at the end of the chain, their §3.2).

    Args:
        kind: ``"linear"`` or ``"cosine"``.
        num_steps: T, the number of diffusion steps (≥ 1).
        beta_start, beta_end: the linear schedule's ends at T = 1000 (ignored for cosine).

    Returns:
        ``[T]`` float64, every value in ``(0, 1)``.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer ≥ 1, got {num_steps!r}")
    if kind == "linear":
        if not 0 < beta_start <= beta_end:
            raise ValueError(f"need 0 < beta_start ≤ beta_end, got {beta_start}, {beta_end}")
        scale = 1000 / num_steps
        beta_start, beta_end = scale * beta_start, scale * beta_end
        if beta_end >= 1:
            raise ValueError(
                f"the linear schedule scaled to {num_steps} steps ends at β_T = {beta_end:.3g} ≥ 1 "
                "(all signal destroyed in one step); use num_steps ≥ 21 or kind='cosine'"
            )
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(num_steps + 1, dtype=torch.float64)  # t = 0 .. T, paper indexing
        f = torch.cos((steps / num_steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]  # ᾱ_t for paper t = 0 .. T, ᾱ_0 = 1
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]  # β_t = 1 - ᾱ_t / ᾱ_{t-1}, t = 1 .. T
        return betas.clamp(max=0.999)
    raise ValueError(f"kind must be one of {SCHEDULE_KINDS}, got {kind!r}")


def extract(a: Tensor, t: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Pick ``a[t_i]`` for each sample and shape it to broadcast against a batch.

    Args:
        a: ``[T]`` per-step coefficients (e.g. ``sqrt_alphas_cumprod``).
        t: ``[B]`` int64 timesteps in ``[0, T)``.
        shape: the batch's shape ``(B, ...)``, e.g. ``(B, C, H, W)``.

    Returns:
        ``[B, 1, ..., 1]`` with as many dimensions as ``shape`` (``[B, 1, 1, 1]`` for images).
    """
    if t.ndim != 1 or t.shape[0] != shape[0]:
        raise ValueError(
            f"t must be [B] with B = shape[0] = {shape[0]} (one timestep per sample), got "
            f"{tuple(t.shape)}; for a single step use torch.full((B,), t)"
        )
    return a.gather(0, t.to(a.device)).reshape(shape[0], *([1] * (len(shape) - 1)))


class NoiseSchedule(nn.Module):
    """All per-step coefficients of a schedule, as float32 buffers named after the math.

    An ``nn.Module`` only so that ``.to(device)`` moves every buffer at once. The buffers are
    non-persistent: they are a pure function of ``(kind, num_steps)``, so they are rebuilt from the
    config rather than stored in checkpoints.

    Buffers (each ``[T]``; index t is the paper's step t+1):
        betas β_t, alphas α_t, alphas_cumprod ᾱ_t, alphas_cumprod_prev ᾱ_{t-1} (ᾱ_{-1} = 1),
        sqrt_alphas_cumprod √ᾱ_t, sqrt_one_minus_alphas_cumprod √(1-ᾱ_t),
        posterior_variance β̃_t (eq. 7), posterior_log_variance_clipped log β̃_t with β̃_0
        (which is 0) replaced by β̃_1, posterior_mean_coef1/2 (eq. 7: the weights of x_0 and x_t
        in μ̃_t), snr ᾱ_t / (1 - ᾱ_t) (the signal-to-noise ratio of x_t).
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
    snr: Tensor

    def __init__(
        self,
        kind: str = "linear",
        num_steps: int = 1000,
        beta_start: float = LINEAR_BETAS[0],
        beta_end: float = LINEAR_BETAS[1],
        *,
        betas: Tensor | None = None,
    ):
        """``betas``: given β_t (float64 ``[T]``) instead of ``beta_schedule(kind, ...)``; ``kind``
        is then only a label and T is ``len(betas)`` (see :meth:`truncated`)."""
        super().__init__()
        if betas is None:
            betas = beta_schedule(kind, num_steps, beta_start, beta_end)  # float64
        self.kind, self.num_steps = kind, len(betas)
        self.beta_ends = (beta_start, beta_end)
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)  # ᾱ_t
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])  # ᾱ_{t-1}
        posterior_variance = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)  # β̃_t, eq. 7
        # β̃_0 = 0 (x_0 is known exactly given x_1 and x_0); its log is -inf, so take β̃_1 there, as
        # Ho et al.'s code does. Only the log is clipped: the sampler adds no noise at t = 0.
        log_var_clipped = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
        quantities = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alpha_bar,
            "alphas_cumprod_prev": alpha_bar_prev,
            "sqrt_alphas_cumprod": alpha_bar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alpha_bar).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": log_var_clipped,
            "posterior_mean_coef1": betas * alpha_bar_prev.sqrt() / (1 - alpha_bar),  # eq. 7
            "posterior_mean_coef2": (1 - alpha_bar_prev) * alphas.sqrt() / (1 - alpha_bar),
            "snr": alpha_bar / (1 - alpha_bar),
        }
        for name, value in quantities.items():
            self.register_buffer(name, value.float(), persistent=False)

    def truncated(self, num_steps: int) -> NoiseSchedule:
        """The first ``num_steps`` steps of this chain: the same ᾱ_t for every t < ``num_steps``,
        so a network trained on this schedule is also trained on the truncated one. The chain now
        ends at ``ᾱ = alphas_cumprod[num_steps - 1]`` > 0, like a schedule with a wrong end:
        sampling it from pure noise shows what that costs (the notebook's failure modes)."""
        if not 1 <= num_steps <= self.num_steps:
            raise ValueError(f"num_steps must be in [1, {self.num_steps}], got {num_steps}")
        betas = beta_schedule(self.kind, self.num_steps, *self.beta_ends)[:num_steps]
        kind = f"{self.kind}[:{num_steps}]"
        return NoiseSchedule(kind, num_steps, *self.beta_ends, betas=betas).to(self.betas.device)

    def extra_repr(self) -> str:
        ends = f", beta_ends={self.beta_ends}" if self.kind == "linear" else ""
        return f"kind={self.kind!r}, num_steps={self.num_steps}{ends}"

    # ------------------------------------------------------------ forward process

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Sample ``x_t ~ q(x_t | x_0)`` (eq. 4): ``x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε``.

        Args:
            x0: ``[B, ...]`` clean data (images in ``[-1, 1]``).
            t: ``[B]`` int64 timesteps.
            noise: ``[B, ...]`` ε ~ N(0, I), passed in so the caller owns the randomness.

        Returns:
            ``[B, ...]`` noisy data x_t.
        """
        return (
            extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise
        )

    def velocity(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The v-prediction target (Salimans & Ho 2022, "Progressive Distillation", §4):
        ``v = √ᾱ_t ε - √(1 - ᾱ_t) x_0``. Shapes as :meth:`q_sample`."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x0.shape) * noise
            - extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * x0
        )

    # ------------------------------------------------------------ inverting eq. 4

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Solve eq. 4 for x_0: ``x̂_0 = (x_t - √(1 - ᾱ_t) ε) / √ᾱ_t``. ``[B, ...]`` → ``[B, ...]``."""
        return (x_t - extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * eps) / extract(
            self.sqrt_alphas_cumprod, t, x_t.shape
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Solve eq. 4 for ε: ``ε̂ = (x_t - √ᾱ_t x_0) / √(1 - ᾱ_t)``. ``[B, ...]`` → ``[B, ...]``."""
        return (x_t - extract(self.sqrt_alphas_cumprod, t, x_t.shape) * x0) / extract(
            self.sqrt_one_minus_alphas_cumprod, t, x_t.shape
        )

    def split_prediction(
        self, output: Tensor, x_t: Tensor, t: Tensor, prediction: str = "eps"
    ) -> tuple[Tensor, Tensor]:
        """A network's output as the pair ``(x̂_0, ε̂)``, whichever of ε, v or x_0 it predicts.

        For v (with ``a = √ᾱ_t``, ``b = √(1 - ᾱ_t)``, ``a² + b² = 1``):
        ``x̂_0 = a x_t - b v`` and ``ε̂ = b x_t + a v``. For x_0: ε̂ from eq. 4 inverted.

        Args:
            output: ``[B, ...]`` the network's output.
            x_t: ``[B, ...]`` its input.
            t: ``[B]`` int64 timesteps.
            prediction: ``"eps"``, ``"v"`` or ``"x0"``.
        """
        if prediction == "eps":
            return self.predict_x0_from_eps(x_t, t, output), output
        if prediction == "v":
            a = extract(self.sqrt_alphas_cumprod, t, x_t.shape)
            b = extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape)
            return a * x_t - b * output, b * x_t + a * output
        if prediction == "x0":
            return output, self.predict_eps_from_x0(x_t, t, output)
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")

    # ------------------------------------------------------------ reverse process

    def q_posterior_mean_variance(
        self, x0: Tensor, x_t: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The posterior ``q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)`` (eq. 6-7).

        Args:
            x0: ``[B, ...]`` clean data (or the network's estimate x̂_0).
            x_t: ``[B, ...]`` noisy data at step t.
            t: ``[B]`` int64 timesteps.

        Returns:
            ``(mean [B, ...], variance [B, 1, ...], log_variance_clipped [B, 1, ...])``.
        """
        mean = (
            extract(self.posterior_mean_coef1, t, x_t.shape) * x0
            + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t
        )
        variance = extract(self.posterior_variance, t, x_t.shape)
        log_variance = extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance
