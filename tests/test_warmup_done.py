"""The P00 "done when" checks themselves (the accuracy run is left to `make done`: ~1 min)."""

from labkit.warmup.done import check_p00_overfit, check_p00_resume


def test_overfit_check_passes():
    check = check_p00_overfit(steps=120)
    assert check.passed, check.measured


def test_resume_check_passes_across_an_epoch_boundary():
    check = check_p00_resume(steps=40)  # 62 steps per epoch: the resumed half crosses into epoch 1
    assert check.passed, check.measured
