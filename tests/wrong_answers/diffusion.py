"""Wrong answers to the exercises of notebooks/20_diffusion_mini.py: one per exercise, each a
mistake a learner could make (tests/test_exercise.py runs every exercise with it and expects ✗)."""


def _ddpm_step_with_beta_variance(schedule, x_t, t, x0_hat, noise):
    """σ_t² = β_t instead of the posterior variance β̃_t the exercise asks for."""
    from labkit.diffusion.sampling import ddpm_step

    return ddpm_step(schedule, x_t, t, x0_hat, noise, variance="beta")


def _ddim_step_wrapping_at_the_end(schedule, x_t, t, t_prev, x0_hat, eps_hat, eta, noise):
    """Eq. 12 with ``alphas_cumprod[t_prev]`` even for t_prev = -1 (the last ᾱ, not 1)."""
    a = schedule.alphas_cumprod
    a_t, a_s = a[t], a[t_prev]
    sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
    x = a_s.sqrt() * x0_hat + (1 - a_s - sigma**2).clamp(min=0).sqrt() * eps_hat
    return x + sigma * noise if eta > 0 else x


WRONG = {
    "my_ddpm_step": _ddpm_step_with_beta_variance,
    "my_ddim_step": _ddim_step_wrapping_at_the_end,
}
