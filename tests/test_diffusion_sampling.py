"""Samplers: shapes, determinism, DDIM(η=1) = DDPM, a Gaussian toy with a known optimal ε,
classifier-free guidance conventions, and agreement with diffusers' schedulers."""

import pytest
import torch

from labkit.diffusion.sampling import (
    StepRecorder,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    guided_output,
)
from labkit.diffusion.schedule import NoiseSchedule, extract
from labkit.diffusion.unet import UNet


def gen(seed):
    return torch.Generator().manual_seed(seed)


class GaussianOptimalEps:
    """The exact ε-predictor for 1-D data x_0 ~ N(μ, σ²).

    x_t = √ᾱ x_0 + √(1-ᾱ) ε is jointly Gaussian with ε, so
    E[ε | x_t] = Cov(ε, x_t) / Var(x_t) · (x_t - E x_t) = √(1-ᾱ) (x_t - √ᾱ μ) / (ᾱσ² + 1 - ᾱ).
    A sampler fed this predictor must return samples distributed as N(μ, σ²) (up to the
    discretisation of T steps).
    """

    def __init__(self, schedule, mu, sigma, prediction="eps"):
        self.s, self.mu, self.var, self.prediction = schedule, mu, sigma**2, prediction

    def __call__(self, x, t, labels=None):
        a = extract(self.s.alphas_cumprod, t, x.shape).double()
        x = x.double()
        eps = (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.var + 1 - a)
        if (
            self.prediction == "v"
        ):  # ε = b x_t + a v  ⇒  v = (ε - b x_t) / a, with a = √ᾱ, b = √(1-ᾱ)
            return ((eps - (1 - a).sqrt() * x) / a.sqrt()).float()
        return eps.float()


def tiny_unet(num_classes=None):
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=(1, 2), attention=False, num_classes=num_classes)
    # A fresh UNet predicts exactly 0 and ignores t and labels (zero-initialised last convs of every
    # residual block and of the output): too trivial to test samplers with. Randomise those.
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
            torch.nn.init.normal_(module.weight, std=0.1)
    if num_classes:
        torch.nn.init.normal_(model.class_emb.weight)
    return model.eval()


# ---------------------------------------------------------------- shapes, range, determinism


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_shape_range_and_determinism(sampler):
    s, model = NoiseSchedule("linear", 40), tiny_unet()

    def run(seed, clip=True):
        if sampler == "ddpm":
            return ddpm_sample(model, s, (3, 1, 12, 12), generator=gen(seed), clip_x0=clip)
        return ddim_sample(
            model, s, (3, 1, 12, 12), num_steps=10, eta=0.5, generator=gen(seed), clip_x0=clip
        )

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (3, 1, 12, 12) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1  # the last step returns the clipped x̂_0
    assert torch.equal(a, b)  # same generator state, same images
    assert not torch.allclose(a, c)
    assert torch.isfinite(run(0, clip=False)).all()


def test_ddim_timesteps():
    taus = ddim_timesteps(1000, 50)
    assert taus[0] == 0 and taus[-1] == 999 and len(taus.unique()) == 50 and (taus.diff() > 0).all()
    assert torch.equal(ddim_timesteps(30, 30), torch.arange(30))
    assert ddim_timesteps(1000, 1).tolist() == [999]
    with pytest.raises(ValueError, match="num_steps"):
        ddim_timesteps(100, 101)


def test_ddim_eta_one_all_steps_is_ddpm_step_for_step():
    # σ_t(η=1) = √β̃_t (DDIM eq. 16) and eq. 12 then equals the DDPM posterior mean, so with the
    # same noise draws (same generator, same order) the two samplers give the same path.
    s, model = NoiseSchedule("linear", 60), tiny_unet()
    ddpm = ddpm_sample(model, s, (2, 1, 12, 12), generator=gen(3))
    ddim = ddim_sample(model, s, (2, 1, 12, 12), num_steps=60, eta=1.0, generator=gen(3))
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)


def test_ddim_eta_zero_is_deterministic_given_x_T():
    s, model = NoiseSchedule("cosine", 50), tiny_unet()
    # η = 0 draws nothing after x_T: a different generator *after* x_T cannot change the result,
    # so the images depend only on the seed through x_T.
    a = ddim_sample(model, s, (2, 1, 12, 12), num_steps=10, eta=0.0, generator=gen(5))
    b = ddim_sample(model, s, (2, 1, 12, 12), num_steps=10, eta=0.0, generator=gen(5))
    assert torch.equal(a, b)


# ---------------------------------------------------------------- the Gaussian toy


@pytest.mark.parametrize(
    "sampler, prediction",
    [
        ("ddpm", "eps"),
        ("ddim_eta1", "eps"),
        ("ddim_eta0", "eps"),
        ("ddim_eta0", "v"),
        ("ddpm", "v"),
    ],
)
def test_gaussian_toy_recovers_data_distribution(sampler, prediction):
    mu, sigma, n = 0.5, 0.3, 10000
    s = NoiseSchedule("linear", 1000)
    model = GaussianOptimalEps(s, mu, sigma, prediction)
    common = dict(prediction=prediction, clip_x0=False, generator=gen(0))
    if sampler == "ddpm":
        x = ddpm_sample(model, s, (n, 1), **common)
    elif sampler == "ddim_eta1":
        x = ddim_sample(model, s, (n, 1), num_steps=1000, eta=1.0, **common)
    else:  # all steps: with 100 steps the variance comes out 8 % low, with 10 steps 63 % low
        x = ddim_sample(model, s, (n, 1), num_steps=1000, eta=0.0, **common)
    # Standard errors: mean σ/√n = 0.003, variance σ²√(2/n) = 0.0013. Allow a few of them plus
    # the discretisation error of the sampler (DDPM's variance comes out ~2 % low).
    assert x.mean().item() == pytest.approx(mu, abs=0.01)
    assert x.var().item() == pytest.approx(sigma**2, rel=0.05)


# ---------------------------------------------------------------- classifier-free guidance


def test_guidance_scale_zero_is_unconditional_and_one_is_conditional():
    model = tiny_unet(num_classes=10)
    x, t = torch.randn(4, 1, 12, 12, generator=gen(0)), torch.tensor([5, 100, 500, 900])
    labels = torch.tensor([0, 3, 7, 9])
    uncond, cond = model(x, t, None), model(x, t, labels)
    assert not torch.allclose(uncond, cond, atol=1e-4)
    torch.testing.assert_close(
        guided_output(model, x, t, labels, 0.0), uncond, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(guided_output(model, x, t, labels, 1.0), cond, atol=1e-5, rtol=1e-5)
    w3 = guided_output(model, x, t, labels, 3.0)
    torch.testing.assert_close(w3, uncond + 3 * (cond - uncond), atol=1e-5, rtol=1e-5)
    assert torch.equal(guided_output(model, x, t, labels, None), cond)


def test_guided_sampling_w0_equals_unconditional_sampling():
    s, model = NoiseSchedule("linear", 30), tiny_unet(num_classes=10)
    labels = torch.tensor([1, 2])
    kw = dict(generator=gen(2), num_steps=10, eta=1.0)
    guided = ddim_sample(model, s, (2, 1, 12, 12), labels=labels, guidance_scale=0.0, **kw)
    kw["generator"] = gen(2)
    plain = ddim_sample(model, s, (2, 1, 12, 12), labels=None, **kw)
    torch.testing.assert_close(guided, plain, atol=1e-4, rtol=1e-4)


def test_guidance_needs_a_null_label():
    def model(x, t, labels):  # a plain function has no .null_label
        return torch.zeros_like(x)

    x, t, labels = torch.zeros(2, 1, 4, 4), torch.tensor([1, 2]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="null"):
        guided_output(model, x, t, labels, 2.0)
    assert guided_output(model, x, t, labels, 2.0, null_label=10).shape == x.shape


# ---------------------------------------------------------------- intermediates


def test_step_recorder_keeps_requested_steps():
    s, model = NoiseSchedule("linear", 30), tiny_unet()
    rec = StepRecorder([29, 15, 0, 7])
    out = ddpm_sample(model, s, (2, 1, 12, 12), generator=gen(0), callback=rec)
    strip = rec.strip()
    assert strip.shape == (4, 2, 1, 12, 12) and sorted(rec.x_t) == [0, 7, 15, 29]
    x_T = torch.randn((2, 1, 12, 12), generator=gen(0))  # the first draw of the sampler
    assert torch.equal(strip[0], x_T)
    assert torch.equal(rec.x0_pred[0], out)  # the last step returns x̂_0 (t = 0 is the final step)
    rec = StepRecorder([5])  # DDIM with 3 steps visits 0, 14 and 29 only
    ddim_sample(model, s, (1, 1, 12, 12), num_steps=3, generator=gen(0), callback=rec)
    with pytest.raises(ValueError, match="nothing recorded"):
        rec.strip()


# ---------------------------------------------------------------- against diffusers


def _toy_eps(x, t, labels=None):
    """Some smooth, t-dependent function standing in for a network."""
    return torch.tanh(1.5 * x) + 0.3 * torch.sin(t.float() / 7)[:, None, None, None]


@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_matches_diffusers_loop(clip):
    diffusers = pytest.importorskip("diffusers")
    T, shape = 100, (2, 1, 5, 5)
    theirs = diffusers.DDPMScheduler(
        num_train_timesteps=T,
        beta_start=1e-3,
        beta_end=0.2,
        variance_type="fixed_small",
        clip_sample=clip,
    )
    g = gen(7)
    x = torch.randn(shape, generator=g)  # same draw order as ddpm_sample: x_T, then one z per step
    for t in theirs.timesteps:
        x = theirs.step(_toy_eps(x, t.expand(shape[0])), t, x, generator=g).prev_sample
    ours = ddpm_sample(_toy_eps, NoiseSchedule("linear", T), shape, clip_x0=clip, generator=gen(7))
    torch.testing.assert_close(ours, x, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_all_steps_matches_diffusers_loop(eta):
    diffusers = pytest.importorskip("diffusers")
    T, shape = 100, (2, 1, 5, 5)
    theirs = diffusers.DDIMScheduler(
        num_train_timesteps=T, beta_start=1e-3, beta_end=0.2, clip_sample=True
    )
    theirs.set_timesteps(T)  # every step: the same subsequence as ours
    g = gen(7)
    x = torch.randn(shape, generator=g)
    for t in theirs.timesteps:
        eps = _toy_eps(x, t.expand(shape[0]))
        x = theirs.step(eps, t, x, eta=eta, use_clipped_model_output=True, generator=g).prev_sample
    ours = ddim_sample(
        _toy_eps, NoiseSchedule("linear", T), shape, num_steps=T, eta=eta, generator=gen(7)
    )
    torch.testing.assert_close(ours, x, atol=2e-4, rtol=1e-3)


# ---------------------------------------------------------------- single steps


def test_ddpm_step_is_algorithm_2s_update():
    # With x̂_0 from ε̂ (no clipping), μ̃_t(x_t, x̂_0) is eq. 11: 1/√α_t (x_t - β_t/√(1-ᾱ_t) ε̂).
    s = NoiseSchedule("linear", 100)
    g = gen(0)
    x_t, eps, z = (torch.randn(3, 1, 4, 4, generator=g) for _ in range(3))
    for t in (1, 40, 99):
        tt = torch.full((3,), t)
        x0 = s.predict_x0_from_eps(x_t, tt, eps)
        alpha, beta, alpha_bar = s.alphas[t], s.betas[t], s.alphas_cumprod[t]
        eq11 = (x_t - beta / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()
        expected = eq11 + s.posterior_variance[t].sqrt() * z
        torch.testing.assert_close(ddpm_step(s, x_t, t, x0, z), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ddpm_step(s, x_t, 0, x_t * 0.5, None), x_t * 0.5)  # μ̃_0 = x̂_0


def test_ddim_step_by_hand():
    s = NoiseSchedule("cosine", 50)
    g = gen(1)
    x_t, x0, eps, z = (torch.randn(2, 1, 3, 3, generator=g) for _ in range(4))
    a_t, a_s = s.alphas_cumprod[30], s.alphas_cumprod[20]
    # η = 0: x_s = √a_s x̂_0 + √(1 - a_s) ε̂, deterministic.
    torch.testing.assert_close(
        ddim_step(s, x_t, 30, 20, x0, eps), a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps
    )
    # η = 1: σ² = (1 - a_s)/(1 - a_t) · (1 - a_t/a_s), which is β̃ for adjacent steps.
    var = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
    expected = a_s.sqrt() * x0 + (1 - a_s - var).sqrt() * eps + var.sqrt() * z
    torch.testing.assert_close(ddim_step(s, x_t, 30, 20, x0, eps, 1.0, z), expected)
    assert ddim_step(s, x_t, 0, -1, x0, eps) is x0  # after the last step: x̂_0
