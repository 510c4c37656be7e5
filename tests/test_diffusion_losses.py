"""The training loss: its targets, label dropout, determinism, and a tiny run whose loss falls."""

import pytest
import torch

from labkit.diffusion.ema import EMA
from labkit.diffusion.losses import diffusion_loss, drop_labels, min_snr_weights
from labkit.diffusion.sampling import ddim_sample
from labkit.diffusion.schedule import NoiseSchedule, extract
from labkit.diffusion.unet import UNet


class Recorder(torch.nn.Module):
    """Predicts 0 and remembers what it was called with."""

    null_label = 10

    def forward(self, x_t, t, labels):
        self.x_t, self.t, self.labels = x_t, t, labels
        return torch.zeros_like(x_t)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_loss_of_a_zero_predictor_is_the_mean_square_target(prediction):
    s, model = NoiseSchedule("linear", 100), Recorder()
    x0 = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loss = diffusion_loss(
        model, s, x0, prediction=prediction, generator=torch.Generator().manual_seed(1)
    )
    # The model saw x_t = √ᾱ x0 + √(1-ᾱ) ε (eq. 4) at the sampled t: recover ε from it.
    a, b = extract(s.sqrt_alphas_cumprod, model.t, x0.shape), extract(
        s.sqrt_one_minus_alphas_cumprod, model.t, x0.shape
    )
    eps = (model.x_t - a * x0) / b
    # v = √ᾱ ε - √(1-ᾱ) x0; x0-prediction regresses the clean image itself
    target = {"eps": eps, "v": a * eps - b * x0, "x0": x0}[prediction]
    assert loss.item() == pytest.approx(target.square().mean().item(), rel=1e-4)
    assert (
        model.t.min() >= 0 and model.t.max() < 100 and len(model.t.unique()) > 30
    )  # t ~ U{0..T-1}
    assert eps.mean().abs() < 0.03 and eps.var().item() == pytest.approx(
        1.0, abs=0.04
    )  # ε ~ N(0, I)


def test_same_generator_same_loss():
    s, model = NoiseSchedule("cosine", 50), UNet(
        base_channels=8, channel_mults=(1, 2), attention=False
    )
    x0 = torch.zeros(4, 1, 8, 8)
    losses = [
        diffusion_loss(model, s, x0, generator=torch.Generator().manual_seed(3)) for _ in range(2)
    ]
    assert losses[0].item() == losses[1].item()


def test_label_dropout():
    labels = torch.arange(10).repeat(1000)  # 10,000 labels
    g = torch.Generator().manual_seed(0)
    assert torch.equal(drop_labels(labels, 10, 0.0, g), labels)
    assert (drop_labels(labels, 10, 1.0, g) == 10).all()
    dropped = drop_labels(labels, 10, 0.3, g)
    assert (dropped == 10).float().mean().item() == pytest.approx(0.3, abs=0.02)  # 4.6 σ
    assert torch.equal(dropped[dropped != 10], labels[dropped != 10])  # the rest are untouched
    with pytest.raises(ValueError, match="cond_drop_prob"):
        drop_labels(labels, 10, 1.5)


def test_loss_drops_labels_to_the_models_null_label():
    s, model = NoiseSchedule("linear", 100), Recorder()
    labels = torch.arange(10).repeat(100)
    diffusion_loss(
        model,
        s,
        torch.zeros(1000, 1),
        labels,
        cond_drop_prob=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    assert (model.labels == 10).float().mean().item() == pytest.approx(0.5, abs=0.06)
    diffusion_loss(model, s, torch.zeros(1000, 1), labels, cond_drop_prob=0.0)
    assert torch.equal(model.labels, labels)
    with pytest.raises(ValueError, match="null label"):
        diffusion_loss(lambda x, t, y: x, s, torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="prediction"):
        diffusion_loss(model, s, torch.zeros(4, 1), prediction="score")


def squares(n, size=16, generator=None):
    """``n`` images in [-1, 1]: a bright 4×4 square on a dark background; label = its quadrant."""
    corners = torch.randint(0, size - 4, (n, 2), generator=generator)
    images = -torch.ones(n, 1, size, size)
    for image, (y, x) in zip(images, corners.tolist()):
        image[:, y : y + 4, x : x + 4] = 1.0
    labels = (corners[:, 0] >= size // 2 - 2).long() * 2 + (corners[:, 1] >= size // 2 - 2).long()
    return images, labels


def test_tiny_training_run_lowers_the_loss():
    """30 Adam steps of a tiny class-conditional U-Net on synthetic squares, with an EMA."""
    images, labels = squares(64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=(1, 2), attention=False, num_classes=10)
    s = NoiseSchedule("linear", 200)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ema = EMA(model, decay=0.99)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        batch = torch.randint(0, 64, (16,), generator=g)
        loss = diffusion_loss(model, s, images[batch], labels[batch], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model, step)
        losses.append(loss.item())
    # The zero-initialised output starts at E[ε²] ≈ 1; predicting ε from x_t is easy at large t,
    # so the loss falls fast. The loss is noisy (random t per sample): compare averages.
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 0.8 and last < 0.5 * first, losses  # seen: 0.90 → 0.12
    before = [p.clone() for p in model.parameters()]
    with ema.swapped_in(model.eval()):
        samples = ddim_sample(
            model, s, (4, 1, 16, 16), num_steps=5, labels=torch.arange(4), guidance_scale=2.0
        )
    assert samples.shape == (4, 1, 16, 16) and torch.isfinite(samples).all()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # own weights back


# ---------------------------------------------------------------- min-SNR-γ weighting


def test_min_snr_weights_by_hand():
    # γ = 5. ε: min(SNR, γ) / SNR = min(1, γ / SNR); v: min(SNR, γ) / (SNR + 1); x0: min(SNR, γ).
    snr = torch.tensor([0.0, 1.0, 5.0, 25.0])  # SNR = 0: ᾱ = 0; SNR = 5: exactly γ
    torch.testing.assert_close(min_snr_weights(snr, 5.0, "eps"), torch.tensor([1.0, 1, 1, 0.2]))
    torch.testing.assert_close(
        min_snr_weights(snr, 5.0, "v"), torch.tensor([0.0, 0.5, 5 / 6, 5 / 26])
    )
    torch.testing.assert_close(min_snr_weights(snr, 5.0, "x0"), torch.tensor([0.0, 1, 5, 5]))


def test_min_snr_weights_at_both_ends_of_the_schedule():
    s = NoiseSchedule("cosine", 1000)
    t = torch.tensor([0, 999])
    snr = s.snr[t]  # ~24,221 (almost clean) and ~2.4e-9 (pure noise)
    eps = min_snr_weights(snr, 5.0, "eps")
    # t = 0: the weight is γ / SNR, tiny; t = T-1: SNR ≪ γ, the weight is exactly 1
    assert eps[0].item() == pytest.approx(5.0 / snr[0].item(), rel=1e-6) and eps[0] < 1e-3
    assert eps[1].item() == 1.0
    v = min_snr_weights(snr, 5.0, "v")
    assert v[0].item() == pytest.approx(5.0 / (snr[0].item() + 1), rel=1e-6)
    assert v[1].item() == pytest.approx(snr[1].item(), rel=1e-6)  # min(SNR, γ)/(SNR+1) ≈ SNR


def test_min_snr_weights_float32_matches_float64():
    snr64 = NoiseSchedule("cosine", 1000).snr.double()
    for prediction in ("eps", "v", "x0"):
        w32 = min_snr_weights(snr64.float(), 5.0, prediction)
        w64 = min_snr_weights(snr64, 5.0, prediction)
        assert w32.dtype == torch.float32 and w64.dtype == torch.float64
        torch.testing.assert_close(w32.double(), w64, rtol=1e-6, atol=1e-12)
        assert torch.isfinite(w64).all() and (w64 >= 0).all()


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weights_match_diffusers(prediction):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.training_utils import compute_snr

    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    t = torch.arange(1000)
    snr = compute_snr(theirs, t)
    # diffusers' examples/text_to_image/train_text_to_image.py, --snr_gamma 5
    expected = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    expected = expected / snr if prediction == "eps" else expected / (snr + 1)
    ours = min_snr_weights(NoiseSchedule("cosine", 1000).snr, 5.0, prediction)
    # diffusers forms 1 - ᾱ_t in float32, where ᾱ_t ≈ 1 at small t keeps ~3 digits of it (we
    # compute SNR in float64): up to 5e-4 relative there, under 1e-4 from t = 20 on.
    torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(ours[20:], expected[20:], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_min_snr_loss_weights_each_sample(prediction):
    s, model = NoiseSchedule("cosine", 100), Recorder()
    x0 = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loss = diffusion_loss(
        model, s, x0, prediction=prediction, weighting="min_snr", min_snr_gamma=2.0,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    a = extract(s.sqrt_alphas_cumprod, model.t, x0.shape)
    b = extract(s.sqrt_one_minus_alphas_cumprod, model.t, x0.shape)
    eps = (model.x_t - a * x0) / b
    target = {"eps": eps, "v": a * eps - b * x0, "x0": x0}[prediction]
    per_sample = target.square().flatten(1).mean(dim=1)  # the zero predictor's error
    expected = (min_snr_weights(s.snr[model.t], 2.0, prediction) * per_sample).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_min_snr_with_gamma_above_every_snr_is_the_uniform_loss():
    # ε-prediction: γ ≥ max SNR makes every weight min(SNR, γ) / SNR = 1.
    s, model = NoiseSchedule("cosine", 100), Recorder()
    x0 = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    losses = [
        diffusion_loss(
            model, s, x0, weighting=w, min_snr_gamma=float(s.snr.max()) * 2,
            generator=torch.Generator().manual_seed(1),
        ).item()
        for w in ("uniform", "min_snr")
    ]  # fmt: skip
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_min_snr_bad_arguments_raise():
    s, x0 = NoiseSchedule("cosine", 10), torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="weighting must be one of"):
        diffusion_loss(Recorder(), s, x0, weighting="snr")
    with pytest.raises(ValueError, match="min_snr_gamma must be > 0"):
        min_snr_weights(s.snr, 0.0)
    with pytest.raises(ValueError, match="prediction must be one of"):
        min_snr_weights(s.snr, 5.0, "score")
