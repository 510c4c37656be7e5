"""Noise schedules: closed forms, hand-checked posterior, q_sample statistics, and diffusers."""

import math

import pytest
import torch

from labkit.diffusion.schedule import NoiseSchedule, beta_schedule, extract


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("num_steps", [50, 1000])
def test_alpha_bar_is_cumprod_and_decreasing(kind, num_steps):
    s = NoiseSchedule(kind, num_steps)
    betas = beta_schedule(kind, num_steps)
    assert betas.dtype == torch.float64 and betas.shape == (num_steps,)
    assert ((betas > 0) & (betas < 1)).all()
    torch.testing.assert_close(
        s.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-6, atol=0
    )
    assert (s.alphas_cumprod.diff() < 0).all()  # every step adds noise
    assert s.alphas_cumprod_prev[0] == 1.0  # ᾱ_{-1} = 1: the paper's ᾱ_0, no noise
    torch.testing.assert_close(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])
    assert s.alphas_cumprod[-1] < 1e-3  # x_T is (almost) pure noise
    for name, buf in s.named_buffers():
        assert buf.dtype == torch.float32 and buf.shape == (num_steps,), name
    assert s.state_dict() == {}  # rebuilt from (kind, T), never stored in checkpoints


def test_linear_endpoints_and_scaling():
    # Ho et al. §4: 1e-4 .. 0.02 over T = 1000; other T scale both ends by 1000 / T.
    betas = beta_schedule("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    betas = beta_schedule("linear", 250)
    assert betas[0].item() == pytest.approx(4e-4) and betas[-1].item() == pytest.approx(0.08)
    torch.testing.assert_close(
        betas.diff(), torch.full((249,), (0.08 - 4e-4) / 249, dtype=torch.float64)
    )


def test_cosine_matches_closed_form():
    # Nichol & Dhariwal eq. 17: ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), paper t = 1..T.
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(t) / f(0) for t in range(1, T + 1)], dtype=torch.float64)
    betas = beta_schedule("cosine", T)
    unclipped = betas < 0.999  # the clip at 0.999 only touches the very last steps
    assert unclipped[: T - 1].all() and betas.max() == 0.999
    alpha_bar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(alpha_bar[:-1], expected[:-1], rtol=1e-10, atol=1e-12)
    assert betas[0].item() == pytest.approx(1 - f(1) / f(0))


@pytest.mark.parametrize(
    "kind, num_steps, message",
    [
        ("quadratic", 10, "kind"),
        ("linear", 0, "num_steps"),
        ("cosine", 2.5, "num_steps"),
        ("linear", 20, "≥ 21"),
    ],
)
def test_bad_arguments_raise(kind, num_steps, message):
    with pytest.raises(ValueError, match=message):
        beta_schedule(kind, num_steps)


def test_linear_ends_can_be_moved():
    # beta_end 0.002 at T = 1000: Σβ ≈ 1000 · (1e-4 + 0.002) / 2 = 1.05, so ᾱ_T ≈ e^-1.05 ≈ 0.35:
    # x_T keeps a third of the signal's variance, the "wrong endpoint" of the notebook.
    s = NoiseSchedule("linear", 1000, beta_end=0.002)
    assert s.betas[-1].item() == pytest.approx(0.002)
    assert s.alphas_cumprod[-1].item() == pytest.approx(0.35, abs=0.01)
    # Given at T = 1000 and scaled like the defaults: 500 steps double both ends.
    assert beta_schedule("linear", 500, 2e-4, 0.01)[-1].item() == pytest.approx(0.02)
    with pytest.raises(ValueError, match="beta_start"):
        beta_schedule("linear", 1000, 0.02, 0.01)


def test_truncated_chain_keeps_every_step():
    s = NoiseSchedule("cosine", 1000)
    short = s.truncated(600)
    assert short.num_steps == 600 and short.kind == "cosine[:600]"
    for name, buf in short.named_buffers():  # the same coefficients at every kept step
        torch.testing.assert_close(buf, getattr(s, name)[:600], rtol=1e-6, atol=0)
    assert short.alphas_cumprod[-1] > 0.1  # ends with signal left: the "wrong end"
    with pytest.raises(ValueError, match="num_steps"):
        s.truncated(1001)


def test_posterior_variance_by_hand():
    # β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t (eq. 7), checked on a 3-step schedule by hand.
    s = NoiseSchedule("linear", 1000)
    b = beta_schedule("linear", 1000)
    a1, a2 = (1 - b[0]), (1 - b[0]) * (1 - b[1])  # ᾱ at indices 0, 1
    assert s.posterior_variance[0] == 0  # x_0 is determined by x_1 and x_0
    assert s.posterior_variance[1].item() == pytest.approx(
        ((1 - a1) / (1 - a2) * b[1]).item(), rel=1e-6
    )
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]
    # μ̃ coefficients (eq. 7) at index 1: β_t √ᾱ_{t-1} / (1 - ᾱ_t) and (1 - ᾱ_{t-1}) √α_t / (1 - ᾱ_t)
    assert s.posterior_mean_coef1[1].item() == pytest.approx(
        (b[1] * a1.sqrt() / (1 - a2)).item(), rel=1e-6
    )
    assert s.posterior_mean_coef2[1].item() == pytest.approx(
        ((1 - a1) * (1 - b[1]).sqrt() / (1 - a2)).item(), rel=1e-6
    )
    # The posterior of q(x_{t-1}|x_t, x_0) must be consistent with the marginals: if x_0 = 0 and
    # x_t ~ N(0, 1 - ᾱ_t), then x_{t-1} ~ N(0, 1 - ᾱ_{t-1}):  coef2² (1 - ᾱ_t) + β̃_t = 1 - ᾱ_{t-1}.
    lhs = (
        s.posterior_mean_coef2.double() ** 2 * (1 - s.alphas_cumprod.double())
        + s.posterior_variance.double()
    )
    torch.testing.assert_close(lhs, 1 - s.alphas_cumprod_prev.double(), rtol=1e-5, atol=1e-7)
    # snr = ᾱ / (1 - ᾱ) from float64: recomputing it from the float32 ᾱ would lose digits in 1 - ᾱ
    # near t = 0 (1 - 0.9999 keeps only ~4 significant digits in float32).
    alpha_bar64 = torch.cumprod(1 - b, 0)
    torch.testing.assert_close(s.snr, (alpha_bar64 / (1 - alpha_bar64)).float(), rtol=1e-6, atol=0)


def test_extract_shapes_and_errors():
    a = torch.arange(10.0)
    out = extract(a, torch.tensor([3, 7]), (2, 1, 28, 28))
    assert out.shape == (2, 1, 1, 1) and out.flatten().tolist() == [3.0, 7.0]
    assert extract(a, torch.tensor([1]), (1, 5)).shape == (1, 1)
    with pytest.raises(ValueError, match="one timestep per sample"):
        extract(a, torch.tensor([1, 2, 3]), (2, 1, 4, 4))


def test_q_sample_statistics_at_large_t():
    # At t = T-1, ᾱ ≈ 4e-5: x_t ≈ ε whatever x_0 is, so mean ≈ 0 and variance ≈ 1.
    s = NoiseSchedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.ones(20000, 1, 2, 2)  # far from 0 on purpose
    t = torch.full((20000,), 999)
    x_t = s.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    assert abs(x_t.mean().item()) < 0.02 and x_t.var().item() == pytest.approx(1.0, abs=0.02)
    # In the middle, mean √ᾱ_t x_0 and variance 1 - ᾱ_t exactly (eq. 4).
    t = torch.full((20000,), 300)
    x_t = s.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    assert x_t.mean().item() == pytest.approx(s.sqrt_alphas_cumprod[300].item(), abs=0.02)
    assert x_t.var().item() == pytest.approx(1 - s.alphas_cumprod[300].item(), rel=0.03)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_predictions_invert_q_sample(prediction):
    s = NoiseSchedule("cosine", 100)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(8, 1, 4, 4, generator=g), torch.randn(8, 1, 4, 4, generator=g)
    t = torch.randint(0, 100, (8,), generator=g)
    x_t = s.q_sample(x0, t, eps)
    output = {"eps": eps, "v": s.velocity(x0, t, eps), "x0": x0}[prediction]
    x0_hat, eps_hat = s.split_prediction(output, x_t, t, prediction)
    torch.testing.assert_close(x0_hat, x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, eps, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(s.predict_eps_from_x0(x_t, t, x0), eps, atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="prediction"):
        s.split_prediction(output, x_t, t, "score")


# ---------------------------------------------------------------- against diffusers


@pytest.mark.parametrize("kind, num_steps", [("linear", 1000), ("linear", 250), ("cosine", 1000)])
def test_matches_diffusers_scheduler(kind, num_steps):
    diffusers = pytest.importorskip("diffusers")
    scale = 1000 / num_steps  # diffusers does not rescale: give it the scaled ends
    theirs = diffusers.DDPMScheduler(
        num_train_timesteps=num_steps,
        beta_schedule="linear" if kind == "linear" else "squaredcos_cap_v2",
        beta_start=1e-4 * scale,
        beta_end=0.02 * scale,
        variance_type="fixed_small",
    )
    ours = NoiseSchedule(kind, num_steps)
    # diffusers computes in float32, we in float64: agreement to float32 round-off.
    torch.testing.assert_close(ours.betas, theirs.betas, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=1e-4, atol=1e-7)
    # diffusers recomputes β_t as 1 - ᾱ_t / ᾱ_{t-1} in float32, which keeps only ~3 digits where
    # β_t ≈ 1e-4; hence the looser tolerance here (ours is float64 then rounded).
    their_var = torch.stack([theirs._get_variance(t) for t in range(1, num_steps)])
    torch.testing.assert_close(ours.posterior_variance[1:], their_var, rtol=2e-3, atol=1e-9)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1, torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 10, num_steps // 2, num_steps - 2, num_steps - 1])
    torch.testing.assert_close(
        ours.q_sample(x0, t, eps), theirs.add_noise(x0, eps, t), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        ours.velocity(x0, t, eps), theirs.get_velocity(x0, eps, t), atol=1e-5, rtol=1e-4
    )
