import pytest

from labkit.utils.config import ConfigError, apply_overrides, available_configs, get, load_config


def test_named_config_loads():
    cfg = load_config("p00_mnist")
    assert cfg["phase"] == "p00" and cfg["trainer"]["max_steps"] > 0
    assert "p00_mnist" in available_configs()


def test_path_config_and_extends(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("a: 1\nsub: {x: 1, y: 2}\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {base}\nsub: {{y: 3}}\n")
    # the child's keys land on top of the parent's, nested mappings merged key by key
    assert load_config(child) == {"a": 1, "sub": {"x": 1, "y": 3}}


def test_overrides_are_yaml_typed():
    cfg = {"trainer": {"max_steps": 10, "amp": "auto", "grad_clip": 1.0}, "flag": False, "xs": [1]}
    out = apply_overrides(
        cfg,
        [
            "trainer.max_steps=20",
            "trainer.grad_clip=null",
            "flag=true",
            "xs=[1, 2]",
            "trainer.amp=off",
        ],
    )
    assert out["trainer"] == {"max_steps": 20, "amp": "off", "grad_clip": None}
    assert out["flag"] is True and out["xs"] == [1, 2]
    assert cfg["trainer"]["max_steps"] == 10  # the input is not modified


def test_unknown_key_names_closest_valid_key():
    cfg = load_config("p00_mnist")
    with pytest.raises(
        ConfigError,
        match=r"Unknown config key 'trainer.max_stepz'.*Did you mean 'trainer.max_steps'",
    ):
        apply_overrides(cfg, ["trainer.max_stepz=10"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({"a": 1}, ["a"])


def test_missing_config_lists_available_names():
    with pytest.raises(
        ConfigError, match=r"No config named 'p00_mnsit'.*Did you mean 'p00_mnist'.*p00_mnist"
    ):
        load_config("p00_mnsit")


def test_non_mapping_yaml_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(path)


def test_get_with_default():
    assert get({"a": {"b": 2}}, "a.b") == 2
    assert get({"a": {"b": 2}}, "a.c", 5) == 5
