"""Sample-quality numbers: hand-computed shares and entropies, Fréchet distance closed forms
and the usual scipy-based reference, features through a forward hook."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from labkit.diffusion.quality import (
    class_entropy,
    classifier_scores,
    confident_share,
    frechet_distance,
    last_linear,
    logits_and_features,
)


def small_cnn():
    """The layer layout of P00's SmallCNN (features → head), rebuilt here so the test does not
    depend on where that class lives."""
    torch.manual_seed(0)
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )  # fmt: skip
    model.head = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(8 * 7 * 7, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, 10),
    )
    model.forward = lambda x: model.head(model.features(x))
    return model


def test_confident_share_by_hand():
    # softmax of (10, 0) is 0.99995 > 0.9; of (1, 0) is 0.73; of (0, 0) is 0.5.
    logits = torch.tensor([[10.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 10.0]])
    assert confident_share(logits) == 0.5
    assert confident_share(logits, threshold=0.7) == 0.75


def test_class_entropy_by_hand():
    eye = torch.eye(10)
    assert class_entropy(eye) == pytest.approx(math.log(10))  # each class once: uniform
    assert class_entropy(eye[[3, 3, 3, 3]]) == 0.0  # collapsed onto one class
    assert class_entropy(eye[[1, 1, 2, 2]]) == pytest.approx(math.log(2))  # two equal halves
    # counts (3, 1): -(3/4 ln 3/4 + 1/4 ln 1/4)
    assert class_entropy(eye[[0, 0, 0, 5]]) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    )


def test_frechet_distance_identical_and_shifted():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 16, generator=g) @ torch.randn(16, 16, generator=g)  # correlated features
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.randn(16, generator=g)
    # Same covariance, means Δμ apart: d² = ‖Δμ‖² (the trace term vanishes).
    assert frechet_distance(a, a + shift) == pytest.approx(shift.square().sum().item(), rel=1e-6)


def test_frechet_distance_of_diagonal_gaussians():
    # For commuting (here diagonal) covariances the trace term is Σ_i (σ_a,i - σ_b,i)².
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200_000, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5])
    b = torch.randn(200_000, 3, generator=g) * torch.tensor([2.0, 2.0, 1.0]) + torch.tensor(
        [1.0, 0.0, 0.0]
    )
    expected = 1.0 + (1 - 2) ** 2 + 0 + (0.5 - 1) ** 2  # 1 + 1 + 0.25
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_frechet_distance_matches_the_scipy_reference():
    # The formula as pytorch-fid writes it: scipy.linalg.sqrtm of the (non-symmetric) product.
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(2)
    a = torch.randn(300, 8, generator=g, dtype=torch.float64) @ torch.randn(
        8, 8, generator=g, dtype=torch.float64
    )
    b = (
        torch.randn(400, 8, generator=g, dtype=torch.float64)
        @ torch.randn(8, 8, generator=g, dtype=torch.float64)
        + 0.5
    )
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    s_a, s_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b).real
    reference = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)


def test_features_are_the_penultimate_activations():
    model = small_cnn()
    model.train()
    x = torch.randn(7, 1, 28, 28)
    logits, feats = logits_and_features(model, x, batch_size=3)  # 3 batches: 3 + 3 + 1
    assert logits.shape == (7, 10) and feats.shape == (7, 64)
    assert model.training  # the mode is restored
    with torch.no_grad():
        model.eval()
        expected = model.head[3](model.head[2](model.features(x).flatten(1)))  # ReLU(Linear(·))
        torch.testing.assert_close(feats, expected)
        torch.testing.assert_close(logits, model(x))
    assert last_linear(model) is model.head[4]
    assert not model.head[4]._forward_hooks  # the hook is removed afterwards
    # A feature_fn replaces the hook.
    _, feats = logits_and_features(model, x, feature_fn=lambda b: b.flatten(1)[:, :5])
    torch.testing.assert_close(feats, x.flatten(1)[:, :5])
    with pytest.raises(ValueError, match="no nn.Linear"):
        last_linear(nn.Conv2d(1, 1, 1))


def test_classifier_scores_keys():
    model = small_cnn()
    scores = classifier_scores(
        model, torch.randn(20, 1, 28, 28), torch.randn(30, 1, 28, 28), preprocess=lambda x: x * 2
    )
    assert set(scores) == {"confident_share", "class_entropy", "max_entropy", "frechet_distance"}
    assert 0 <= scores["class_entropy"] <= scores["max_entropy"] == pytest.approx(math.log(10))
    assert scores["frechet_distance"] >= 0
    assert "frechet_distance" not in classifier_scores(model, torch.randn(4, 1, 28, 28))


def test_works_on_the_p00_classifier():
    SmallCNN = pytest.importorskip("labkit.warmup.model").SmallCNN
    model = SmallCNN()
    logits, feats = logits_and_features(model, torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, 10) and feats.shape == (5, 64)  # the input of its last Linear
