"""labkit.utils.claims: the three lines ``make nbfull`` reads."""

from labkit.utils.claims import claim


def test_passed_claim_prints_a_tick(capsys):
    assert claim("EMA beats raw", True, "40 vs 60") is True
    assert capsys.readouterr().out == "✓ EMA beats raw: 40 vs 60\n"


def test_failed_claim_starts_the_line_with_claim_failed(capsys):
    # `make nbfull` fails on any output line starting "CLAIM FAILED".
    assert claim("EMA beats raw", False, "70 vs 60") is False
    assert capsys.readouterr().out.startswith("CLAIM FAILED: EMA beats raw: 70 vs 60")


def test_smoke_failure_is_reported_as_not_checked(capsys):
    assert claim("EMA beats raw", False, "70 vs 60", smoke=True) is False
    out = capsys.readouterr().out
    assert out == "· (smoke: not checked) EMA beats raw: 70 vs 60\n"
    assert "CLAIM FAILED" not in out


def test_smoke_pass_still_prints_a_tick(capsys):
    assert claim("fast", 1 < 2, "1 ms", smoke=True) is True
    assert capsys.readouterr().out.startswith("✓ fast")
