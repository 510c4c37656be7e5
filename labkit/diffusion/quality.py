"""Judging generated images with a trained classifier (no Inception network needed).

Three numbers, each catching a different failure:

* ``confident_share``: the share of samples the classifier labels with max softmax > 0.9. Blurry
  or malformed digits get hesitant predictions. (The idea of the Inception Score's first term,
  Salimans et al. 2016, made readable.)
* ``class_entropy``: the entropy of the histogram of predicted classes, in nats; ``ln 10 ≈ 2.303``
  for 10 evenly covered classes, lower when the model collapses onto a few (mode dropping).
* ``frechet_distance``: the Fréchet distance between Gaussians fitted to classifier features of real
  and generated images (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule", FID):
  sensitive to both quality and diversity, but only comparable for the same classifier and
  the same number of samples (it is biased upwards for small sample sizes).

The classifier is passed in (P00's ``SmallCNN``); nothing here depends on its class. Its features
are the activations entering its last ``nn.Linear`` layer (the penultimate layer), taken with a
forward hook, or whatever a given ``feature_fn`` returns.

Explained in notebooks/20_diffusion_mini.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "last_linear",
    "logits_and_features",
    "confident_share",
    "class_entropy",
    "frechet_distance",
    "gaussian_stats",
    "classifier_scores",
]

FeatureFn = Callable[[Tensor], Tensor]


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in ``model.modules()`` order: the classifier's output layer for a
    model built of Sequential pieces, like P00's SmallCNN (``... → Linear(·, 64) → ReLU → Linear(64, 10)``).
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer to take penultimate features from; "
            "pass feature_fn= instead"
        )
    return linears[-1]


@torch.no_grad()
def logits_and_features(
    classifier: nn.Module,
    images: Tensor,
    *,
    feature_fn: FeatureFn | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 500,
) -> tuple[Tensor, Tensor]:
    """Run ``classifier`` over ``images`` in batches, in eval mode.

    Args:
        classifier: returns logits ``[B, K]``.
        images: ``[N, C, H, W]`` on the classifier's device.
        feature_fn: ``feature_fn(x) → [B, D]``; default: the input of the classifier's last
            ``nn.Linear``, captured by a forward hook during the same forward pass.
        preprocess: applied to each batch first, e.g. from the diffusion range [-1, 1] to the
            normalisation the classifier was trained with
            (:func:`labkit.diffusion.data.to_mnist_classifier_input`).
        batch_size: images per forward pass.

    Returns:
        ``(logits [N, K], features [N, D])``, float32 on the CPU.
    """
    captured: list[Tensor] = []
    hook = None
    if feature_fn is None:
        hook = last_linear(classifier).register_forward_hook(
            lambda _module, inputs, _output: captured.append(inputs[0].flatten(1))
        )
    was_training = classifier.training
    classifier.eval()
    logits, features = [], []
    try:
        for x in images.split(batch_size):
            x = preprocess(x) if preprocess is not None else x
            logits.append(classifier(x).float().cpu())
            features.append((feature_fn(x) if feature_fn is not None else captured.pop()).cpu())
    finally:
        classifier.train(was_training)
        if hook is not None:
            hook.remove()
    return torch.cat(logits), torch.cat(features).float()


def confident_share(logits: Tensor, threshold: float = 0.9) -> float:
    """Share of samples whose largest softmax probability exceeds ``threshold``. ``[N, K]`` → float."""
    return (logits.softmax(dim=1).amax(dim=1) > threshold).float().mean().item()


def class_entropy(logits: Tensor) -> float:
    """Entropy ``-Σ_k p_k ln p_k`` (nats) of the predicted-class histogram ``p_k = #{argmax = k} / N``.

    ``[N, K]`` → float in ``[0, ln K]``: 0 when every sample gets the same class, ``ln K`` when the
    classes are equally frequent. Note it is the entropy of the *histogram* (diversity across
    samples), not the mean entropy of each sample's softmax.
    """
    counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]).double()
    p = counts[counts > 0] / counts.sum()  # 0 ln 0 = 0: empty classes contribute nothing
    return float(-(p * p.log()).sum()) + 0.0  # + 0.0: one class gives 0.0, not -0.0


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of ``[N, D]`` features, in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N, D] with N ≥ 2, got {tuple(features.shape)}")
    f = features.double()
    return f.mean(dim=0), torch.cov(f.T)


def _sqrtm_psd(a: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (float64).
    Tiny negative eigenvalues from round-off are clamped to 0."""
    eigvals, eigvecs = torch.linalg.eigh((a + a.T) / 2)
    return (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Dowson & Landau 1982):

        d² = ‖μ_a - μ_b‖² + Tr(Σ_a + Σ_b - 2 (Σ_a Σ_b)^½)

    ``Σ_a Σ_b`` is not symmetric, so its square root is taken through a symmetric matrix with the
    same eigenvalues: ``Tr (Σ_a Σ_b)^½ = Tr (√Σ_a Σ_b √Σ_a)^½``. Both roots are eigendecompositions
    of symmetric PSD matrices, which is stable where ``scipy.linalg.sqrtm`` of the product can
    return complex round-off. Everything is float64.

    Args:
        feats_a: ``[N, D]``; feats_b: ``[M, D]`` (N, M ≥ 2, same D).

    Returns:
        d² ≥ 0 as a float (FID reports this squared distance).
    """
    if feats_a.shape[1:] != feats_b.shape[1:]:
        raise ValueError(f"feature sizes differ: {tuple(feats_a.shape)} vs {tuple(feats_b.shape)}")
    mu_a, sigma_a = gaussian_stats(feats_a)
    mu_b, sigma_b = gaussian_stats(feats_b)
    root_a = _sqrtm_psd(sigma_a)
    tr_covmean = torch.linalg.eigvalsh(root_a @ sigma_b @ root_a).clamp(min=0).sqrt().sum()
    d2 = (mu_a - mu_b).square().sum() + sigma_a.trace() + sigma_b.trace() - 2 * tr_covmean
    return max(float(d2), 0.0)


def classifier_scores(
    classifier: nn.Module,
    samples: Tensor,
    real: Tensor | None = None,
    *,
    feature_fn: FeatureFn | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    threshold: float = 0.9,
) -> dict[str, float]:
    """All three numbers for generated ``samples`` (and ``real`` images for the distance).

    Args:
        classifier, feature_fn, preprocess: as :func:`logits_and_features`.
        samples: ``[N, C, H, W]`` generated images.
        real: ``[M, C, H, W]`` real images, or None to skip the Fréchet distance.

    Returns:
        ``{"confident_share", "class_entropy", "max_entropy"[, "frechet_distance"]}``.
    """
    logits, feats = logits_and_features(
        classifier, samples, feature_fn=feature_fn, preprocess=preprocess
    )
    scores = {
        "confident_share": confident_share(logits, threshold),
        "class_entropy": class_entropy(logits),
        "max_entropy": math.log(logits.shape[1]),
    }
    if real is not None:
        _, real_feats = logits_and_features(
            classifier, real, feature_fn=feature_fn, preprocess=preprocess
        )
        scores["frechet_distance"] = frechet_distance(feats, real_feats)
    return scores
