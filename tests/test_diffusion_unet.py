"""The U-Net: output shapes at 28 and 32 px, class conditioning, parameter budget, time embedding."""

import pytest
import torch

from labkit.diffusion.unet import UNet, count_parameters, sinusoidal_embedding


def small(**kw):
    return UNet(**{"base_channels": 8, "channel_mults": (1, 2, 2), **kw})


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("num_classes", [None, 10])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape(size, num_classes, in_channels):
    model = small(in_channels=in_channels, num_classes=num_classes)
    x, t = torch.randn(2, in_channels, size, size), torch.tensor([0, 999])
    labels = torch.tensor([3, 10]) if num_classes else None  # 10 = the null label
    assert model(x, t, labels).shape == (2, in_channels, size, size)


def test_odd_sizes_are_padded_and_cropped():
    model = small(attention=False)  # 3 levels: sizes must divide by 4, 30 and 13 do not
    assert model(torch.randn(1, 1, 30, 13), torch.tensor([5])).shape == (1, 1, 30, 13)


def test_starts_by_predicting_zero_and_gradients_reach_every_parameter():
    # Zero-initialised output conv: the initial ε-loss is E[ε²] = 1, a well-behaved start.
    model = small(num_classes=10)
    x, t, labels = torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.tensor([1, 2])
    out = model(x, t, labels)
    assert torch.equal(out, torch.zeros_like(out))
    # Step 1 moves the output conv off zero, step 2 the last conv of each block; from step 3 on
    # every parameter, time MLP and class table included, receives a gradient.
    for _ in range(3):  # plain SGD by hand (torch.optim's first use costs seconds of imports)
        model.zero_grad()
        (model(x, t, labels) - x).square().mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert unused == ["class_emb.weight"] or unused == [], unused
    assert model.class_emb.weight.grad[[1, 2]].any()  # rows 1 and 2 were used, the others not


def test_labels_none_means_null_class_and_errors():
    model = small(num_classes=10)
    torch.nn.init.normal_(model.conv_out.weight)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([1, 2])
    assert model.null_label == 10
    torch.testing.assert_close(model(x, t, None), model(x, t, torch.tensor([10, 10])))
    with pytest.raises(ValueError, match="unconditional"):
        small()(x, t, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(2, 3, 28, 28), t)
    with pytest.raises(ValueError, match="num_classes"):
        UNet(num_classes=0)
    with pytest.raises(ValueError, match="norm_groups"):
        UNet(base_channels=12, norm_groups=8)


def test_default_size_is_the_cpu_tier():
    # The CPU default must stay small: 0.5 to 2 M parameters.
    n = count_parameters(UNet())
    assert 0.5e6 <= n <= 2e6, n
    assert count_parameters(UNet(num_classes=10)) == n + 11 * 64  # one 64-d row per class + null


def test_sinusoidal_embedding():
    emb = sinusoidal_embedding(torch.tensor([0, 1, 500, 999]), 32)
    assert emb.shape == (4, 32)
    # t = 0: sin(0) = 0 for the first half, cos(0) = 1 for the second.
    assert torch.equal(emb[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    # Each sin/cos pair lies on the unit circle, and distinct timesteps get distinct vectors.
    torch.testing.assert_close(emb[:, :16] ** 2 + emb[:, 16:] ** 2, torch.ones(4, 16))
    assert torch.cdist(emb, emb).fill_diagonal_(1).min() > 0.1
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(torch.tensor([1]), 7)
