"""EMA of weights: hand-computed averages, warm-up, buffers, swapping in and out, state round trip."""

import io

import pytest
import torch
from torch import nn

from labkit.diffusion.ema import EMA


def scalar_model(value=0.0):
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def set_weight(model, value):
    with torch.no_grad():
        model.weight.fill_(value)


def test_update_by_hand_without_warmup():
    model = scalar_model(0.0)
    ema = EMA(model, decay=0.9, warmup=False)
    set_weight(model, 1.0)
    ema.update(model)  # 0.9 · 0 + 0.1 · 1 = 0.1
    assert ema.shadow["weight"].item() == pytest.approx(0.1)
    set_weight(model, 2.0)
    ema.update(model)  # 0.9 · 0.1 + 0.1 · 2 = 0.29
    assert ema.shadow["weight"].item() == pytest.approx(0.29)
    assert ema.num_updates == 2


def test_warmup_decay():
    ema = EMA(scalar_model(), decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema.decay_at(90) == pytest.approx(91 / 100)
    assert ema.decay_at(100_000) == 0.999  # capped at the decay
    model = scalar_model(0.0)
    ema = EMA(model, decay=0.999)
    set_weight(model, 1.0)
    ema.update(model, step=0)  # d = 0.1: 0.1 · 0 + 0.9 · 1 = 0.9, the start is quickly forgotten
    assert ema.shadow["weight"].item() == pytest.approx(0.9)
    set_weight(model, 2.0)
    ema.update(model, step=1)  # d = 2/11: 2/11 · 0.9 + 9/11 · 2 = 1.8
    assert ema.shadow["weight"].item() == pytest.approx(2 / 11 * 0.9 + 9 / 11 * 2)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_buffers_are_copied_not_averaged():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.5, warmup=False)
    model.train()
    model(torch.randn(8, 2) + 5)  # moves running_mean and counts a batch
    ema.update(model)
    bn = model[1]
    assert torch.equal(ema.shadow["1.running_mean"], bn.running_mean)
    assert ema.shadow["1.num_batches_tracked"].item() == 1  # integers are copied too
    assert ema.shadow["1.num_batches_tracked"].dtype == torch.long


def test_swapped_in_and_back_even_on_error():
    model = scalar_model(0.0)
    ema = EMA(model, decay=0.9, warmup=False)
    set_weight(model, 1.0)
    ema.update(model)  # shadow 0.1, model 1.0
    with ema.swapped_in(model) as m:
        assert m is model and model.weight.item() == pytest.approx(0.1)
    assert model.weight.item() == 1.0
    with pytest.raises(RuntimeError, match="boom"), ema.swapped_in(model):
        raise RuntimeError("boom")
    assert model.weight.item() == 1.0
    ema.copy_to(model)
    assert model.weight.item() == pytest.approx(0.1)


def test_state_dict_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.99)
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        ema.update(model, step)
    buffer = io.BytesIO()
    torch.save({"ema": ema.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["ema"]  # plain tensors and numbers only

    restored = EMA(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), decay=0.5)
    restored.load_state_dict(state)
    assert restored.decay == 0.99 and restored.num_updates == 3 and restored.warmup
    assert restored.shadow.keys() == ema.shadow.keys()
    assert all(torch.equal(restored.shadow[k], ema.shadow[k]) for k in ema.shadow)
    # The state is a copy: updating the EMA does not change a saved state.
    before = ema.state_dict()["shadow"]["0.weight"].clone()
    ema.update(model, 3)
    assert torch.equal(state["shadow"]["0.weight"], before)
    with pytest.raises(KeyError, match="different architecture"):
        EMA(nn.Linear(3, 4)).load_state_dict(state)
