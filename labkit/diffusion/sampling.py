"""Sampling: DDPM ancestral sampling, DDIM, and classifier-free guidance.

Both samplers start from ``x_T ~ N(0, I)`` and denoise step by step with a network
``model(x_t, t, labels) → ε̂ or v̂`` (``x_t [B, ...]``, ``t [B]`` int64, ``labels [B]`` or None).
Timesteps are 0-based indices (see ``labkit.diffusion.schedule``).

Classifier-free guidance (Ho & Salimans 2022), in the convention used everywhere in this lab:

    ε̃ = ε_uncond + w · (ε_cond - ε_uncond)

so **w = 0 is the unconditional model, w = 1 the conditional one**, and w > 1 pushes samples
towards what distinguishes the class. (The paper writes ``ε̃ = (1 + w') ε_cond - w' ε_uncond``:
its w' is our w - 1.) The combination is affine with weights summing to 1, so it is the same
whether applied to ε or to v; it is applied to the raw network output.

Randomness comes only from ``generator``: the same generator state gives the same images.

Explained in notebooks/20_diffusion_mini.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from labkit.diffusion.schedule import PREDICTIONS, NoiseSchedule, extract

__all__ = [
    "guided_output",
    "ddpm_sample",
    "ddim_timesteps",
    "ddim_sample",
    "ddpm_step",
    "ddim_step",
    "StepRecorder",
]

ModelFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
# callback(t, x_t, x0_pred): called once per step with the input x_t of step t and the model's x̂_0.
StepCallback = Callable[[int, Tensor, Tensor], None]


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """N(0, I) drawn on the generator's device, so a CPU generator also seeds GPU sampling."""
    draw_on = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_on).to(device)


def _null_label(model: ModelFn, null_label: int | None) -> int:
    if null_label is not None:
        return null_label
    found = getattr(model, "null_label", None)
    if found is None:
        raise ValueError(
            "guidance needs the null (unconditional) label: pass null_label= or use a model "
            "with a .null_label attribute (UNet(num_classes=...))"
        )
    return found


def guided_output(
    model: ModelFn,
    x_t: Tensor,
    t: Tensor,
    labels: Tensor | None,
    guidance_scale: float | None = None,
    null_label: int | None = None,
) -> Tensor:
    """The network's output, with classifier-free guidance when ``guidance_scale`` is set.

    Args:
        model: ``model(x_t, t, labels)``.
        x_t: ``[B, ...]``; t: ``[B]``; labels: ``[B]`` or None (unconditional).
        guidance_scale: w in ``out_uncond + w (out_cond - out_uncond)``; None: no guidance, one
            plain forward pass with ``labels``.
        null_label: the "no class" label; default ``model.null_label``.

    Returns:
        ``[B, ...]`` the (guided) ε̂ or v̂.
    """
    if guidance_scale is None or labels is None:
        return model(x_t, t, labels)
    null = torch.full_like(labels, _null_label(model, null_label))
    # One forward pass on the doubled batch: conditional rows first, unconditional rows second.
    out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))
    out_cond, out_uncond = out.chunk(2)
    return out_uncond + guidance_scale * (out_cond - out_uncond)


def _x0_and_eps(
    schedule: NoiseSchedule,
    output: Tensor,
    x_t: Tensor,
    t: Tensor,
    prediction: str,
    clip_x0: bool,
) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε̂) from the network output; when clipping x̂_0 to the data range [-1, 1], ε̂ is
    recomputed from the clipped x̂_0 so that both describe the same point x_t (eq. 4)."""
    x0, eps = schedule.split_prediction(output, x_t, t, prediction)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = schedule.predict_eps_from_x0(x_t, t, x0)
    return x0, eps


@torch.no_grad()
def ddpm_sample(
    model: ModelFn,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    labels: Tensor | None = None,
    guidance_scale: float | None = None,
    null_label: int | None = None,
    prediction: str = "eps",
    clip_x0: bool = True,
    variance: str = "posterior",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Ancestral sampling through all T steps (Ho et al. 2020, Alg. 2).

    For t = T-1, ..., 0 (paper: T, ..., 1):
        1. x̂_0 from the network output (eq. 4 inverted), optionally clipped to [-1, 1];
        2. the posterior mean μ̃_t(x_t, x̂_0) (eq. 7); without clipping this is Alg. 2's
           ``1/√α_t (x_t - β_t / √(1 - ᾱ_t) ε̂)`` (eq. 11), written in terms of x̂_0;
        3. ``x_{t-1} = μ̃_t + σ_t z``, z ~ N(0, I), with no noise at the last step.
    σ_t² is β̃_t (``variance="posterior"``) or β_t (``"beta"``); Ho et al. §3.2 found both similar.

    Args:
        model: ``model(x_t, t, labels)`` → ε̂ or v̂ (in eval mode: dropout off).
        schedule: the schedule the model was trained with.
        shape: ``(B, C, H, W)`` (any ``(B, ...)`` works).
        labels: ``[B]`` int64 class labels, or None for unconditional sampling.
        guidance_scale: w of classifier-free guidance (module docstring), None for none.
        null_label: the "no class" label (default ``model.null_label``).
        prediction: what the model predicts, ``"eps"``, ``"v"`` or ``"x0"``.
        clip_x0: clip x̂_0 to [-1, 1] at every step (images live there).
        variance: ``"posterior"`` (β̃_t) or ``"beta"`` (β_t).
        generator: the only source of randomness.
        device: where to sample (default: the schedule's device).
        callback: ``callback(t, x_t, x0_pred)`` at every step, e.g. a :class:`StepRecorder`.

    Returns:
        ``shape`` samples x_0 (clipped to [-1, 1] when ``clip_x0``).
    """
    _check_prediction(prediction)
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    device = torch.device(device) if device is not None else schedule.betas.device
    x = _randn(shape, generator, device)  # x_T ~ N(0, I)
    for step in reversed(range(schedule.num_steps)):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        output = guided_output(model, x, t, labels, guidance_scale, null_label)
        x0, _ = _x0_and_eps(schedule, output, x, t, prediction, clip_x0)
        if callback is not None:
            callback(step, x, x0)
        noise = _randn(shape, generator, device) if step > 0 else None  # Alg. 2: z = 0 at t = 0
        x = ddpm_step(schedule, x, step, x0, noise, variance)
    return x


def ddpm_step(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: int,
    x0: Tensor,
    noise: Tensor | None,
    variance: str = "posterior",
) -> Tensor:
    """One ancestral step ``x_t → x_{t-1} = μ̃_t(x_t, x̂_0) + σ_t z`` (Alg. 2, line 4).

    The mean is the posterior mean of eq. 7 with the network's x̂_0 in place of x_0; without
    clipping x̂_0 this equals Alg. 2's ``1/√α_t (x_t - β_t / √(1 - ᾱ_t) ε̂)`` (eq. 11).

    Args:
        x_t: ``[B, ...]`` the current sample; t: its step index (int, 0-based).
        x0: ``[B, ...]`` x̂_0, the network's estimate of the clean image.
        noise: ``[B, ...]`` z ~ N(0, I); unused (may be None) at t = 0, where no noise is added.
        variance: σ_t² = β̃_t (``"posterior"``) or β_t (``"beta"``).

    Returns:
        ``[B, ...]`` x_{t-1} (at t = 0: μ̃_0, which is exactly x̂_0).
    """
    steps = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    mean, _, log_var = schedule.q_posterior_mean_variance(x0, x_t, steps)  # μ̃_t, eq. 7
    if t == 0:
        return mean
    if variance == "posterior":
        sigma = (0.5 * log_var).exp()  # √β̃_t
    elif variance == "beta":
        sigma = extract(schedule.betas, steps, x_t.shape).sqrt()  # √β_t
    else:
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    return mean + sigma * noise


def ddim_timesteps(num_train_steps: int, num_steps: int) -> Tensor:
    """The increasing subsequence τ of ``num_steps`` timesteps DDIM visits (Song et al. 2021, §4.2).

    Evenly spaced over ``[0, T-1]`` and rounded, so that it always contains T-1 (start from pure
    noise, which is what x_T ~ N(0, I) is) and 0, and is all of ``0..T-1`` when
    ``num_steps == T``. ``[num_steps]`` int64.
    """
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
    if num_steps == 1:
        return torch.tensor([num_train_steps - 1])
    return torch.linspace(0, num_train_steps - 1, num_steps, dtype=torch.float64).round().long()


@torch.no_grad()
def ddim_sample(
    model: ModelFn,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    num_steps: int = 50,
    eta: float = 0.0,
    labels: Tensor | None = None,
    guidance_scale: float | None = None,
    null_label: int | None = None,
    prediction: str = "eps",
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """DDIM sampling on a timestep subsequence (Song et al. 2021, "DDIM", eq. 12).

    With ``a_t = ᾱ_t`` (the paper writes α_t for our ᾱ_t) and s the next (smaller) step of τ:

        x_s = √a_s x̂_0 + √(1 - a_s - σ²) ε̂ + σ z,
        σ = η √((1 - a_s) / (1 - a_t)) √(1 - a_t / a_s)                 (eq. 16)

    η = 0 is deterministic given x_T (an ODE solver in disguise); η = 1 with every step is DDPM
    with σ_t² = β̃_t, step for step. After the last step of τ, a_s = ᾱ_{-1} = 1: x_s = x̂_0.

    Args:
        num_steps: length of the subsequence τ (≤ T): the number of network evaluations
            (twice that many batch rows under guidance).
        eta: η ≥ 0, the amount of fresh noise per step.
        Other arguments as :func:`ddpm_sample`.

    Returns:
        ``shape`` samples x_0.
    """
    _check_prediction(prediction)
    if eta < 0:
        raise ValueError(f"eta must be ≥ 0, got {eta}")
    device = torch.device(device) if device is not None else schedule.betas.device
    taus = ddim_timesteps(schedule.num_steps, num_steps).tolist()
    x = _randn(shape, generator, device)  # x_T ~ N(0, I)
    for i in reversed(range(len(taus))):
        step, prev = taus[i], taus[i - 1] if i > 0 else -1
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        output = guided_output(model, x, t, labels, guidance_scale, null_label)
        x0, eps = _x0_and_eps(schedule, output, x, t, prediction, clip_x0)
        if callback is not None:
            callback(step, x, x0)
        noise = _randn(shape, generator, device) if eta > 0 and prev >= 0 else None
        x = ddim_step(schedule, x, step, prev, x0, eps, eta, noise)
    return x


def ddim_step(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: int,
    t_prev: int,
    x0: Tensor,
    eps: Tensor,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """One DDIM step from step t to the earlier step ``t_prev`` of the subsequence (eq. 12):

        x_s = √a_s x̂_0 + √(1 - a_s - σ²) ε̂ + σ z,  σ = η √((1 - a_s)/(1 - a_t)) √(1 - a_t/a_s)

    with ``a_t = ᾱ_t``, ``a_s = ᾱ_{t_prev}`` (eq. 16 for σ).

    Args:
        x_t: ``[B, ...]``; t: its step index (int); t_prev: the next step index, smaller than t,
            or -1 after the last step (``a_s = ᾱ_{-1} = 1``: the result is x̂_0).
        x0, eps: ``[B, ...]`` the network's x̂_0 and ε̂ at (x_t, t).
        eta: η ≥ 0; noise: ``[B, ...]`` z ~ N(0, I), needed only when η > 0 and t_prev ≥ 0.

    Returns:
        ``[B, ...]`` x at step ``t_prev``.
    """
    if t_prev < 0:
        return x0  # a_s = 1: the last step returns the estimate of x_0 itself
    alpha_bar = schedule.alphas_cumprod
    a_t, a_s = alpha_bar[t], alpha_bar[t_prev]
    sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()  # eq. 16
    x = a_s.sqrt() * x0 + (1 - a_s - sigma**2).clamp(min=0).sqrt() * eps  # eq. 12
    return x + sigma * noise if eta > 0 else x


class StepRecorder:
    """A sampler callback that keeps ``x_t`` (and the model's ``x̂_0``) at chosen steps, e.g. for
    a strip of images from noise to digit.

    Args:
        steps: the timesteps to keep; a step the sampler does not visit (DDIM) is never recorded.

    After sampling, ``x_t[t]`` and ``x0_pred[t]`` hold ``[B, ...]`` CPU tensors, and
    :meth:`strip` stacks them from the noisiest step on.
    """

    def __init__(self, steps: Sequence[int]):
        self.steps = set(int(s) for s in steps)
        self.x_t: dict[int, Tensor] = {}
        self.x0_pred: dict[int, Tensor] = {}

    def __call__(self, t: int, x_t: Tensor, x0_pred: Tensor) -> None:
        if t in self.steps:
            self.x_t[t] = x_t.detach().cpu().clone()
            self.x0_pred[t] = x0_pred.detach().cpu().clone()

    def strip(self, what: str = "x_t") -> Tensor:
        """``[S, B, ...]``: the recorded tensors at the S recorded steps, largest t first."""
        recorded = self.x_t if what == "x_t" else self.x0_pred
        if not recorded:
            raise ValueError("nothing recorded: none of the requested steps was visited")
        return torch.stack([recorded[t] for t in sorted(recorded, reverse=True)])


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
