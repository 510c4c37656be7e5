"""A denoiser known in closed form: the exact ε-predictor for Gaussian data.

For data ``x_0 ~ N(μ, σ²)`` (per element), ``x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε`` is jointly Gaussian
with ε, so the best possible network (the posterior mean of ε given x_t) is

    E[ε | x_t] = Cov(ε, x_t) / Var(x_t) · (x_t - E x_t)
               = √(1-ᾱ_t) (x_t - √ᾱ_t μ) / (ᾱ_t σ² + 1 - ᾱ_t).

A sampler fed this predictor must return samples distributed as N(μ, σ²), up to its own
discretisation error: a check of the sampler alone, with no training noise in the way
(``python -m labkit.done p20``, check (d); the notebook's sampler section).

Explained in notebooks/20_diffusion_mini.py.
"""

from __future__ import annotations

from torch import Tensor

from labkit.diffusion.schedule import NoiseSchedule, extract

__all__ = ["GaussianOptimalEps"]


class GaussianOptimalEps:
    """``model(x_t, t, labels=None) -> ε̂``, exact for data ``N(mu, sigma²)``; shapes ``[B, ...]``.

    Computed in float64, returned in float32 like a network's output. ``labels`` are ignored.
    """

    def __init__(self, schedule: NoiseSchedule, mu: float, sigma: float):
        self.schedule, self.mu, self.var = schedule, mu, sigma**2

    def __call__(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        alpha_bar = extract(self.schedule.alphas_cumprod, t, x_t.shape).double()  # ᾱ_t [B, 1, ...]
        x = x_t.double()
        eps = (1 - alpha_bar).sqrt() * (x - alpha_bar.sqrt() * self.mu)
        return (eps / (alpha_bar * self.var + 1 - alpha_bar)).float()
