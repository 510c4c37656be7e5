import torch

from labkit.utils.exercise import check_exercise


def reference(x):
    return x.cumsum(0)


def make_inputs(seed):
    torch.manual_seed(seed)
    return (torch.randn(6),)


def test_reference_passes(capsys):
    assert check_exercise(reference, reference, make_inputs)
    assert "✓" in capsys.readouterr().out


def test_wrong_candidate_reports_first_mismatch(capsys):
    def off_by_one(x):
        out = x.cumsum(0)
        out[3] += 1.0
        return out

    assert not check_exercise(off_by_one, reference, make_inputs)
    assert "output[3]" in capsys.readouterr().out


def test_wrong_shape_and_exceptions_are_reported(capsys):
    assert not check_exercise(lambda x: x[:2], reference, make_inputs)
    assert "expected shape (6,)" in capsys.readouterr().out
    assert not check_exercise(lambda x: 1 / 0, reference, make_inputs)
    assert "ZeroDivisionError" in capsys.readouterr().out
