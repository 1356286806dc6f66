from __future__ import annotations

import pytest

from convrec.config import ConfigError, RunConfig, TrainConfig, parse_overrides, resolve_config


def test_precedence_defaults_file_dataset_section_user_file_command_line(tmp_path, monkeypatch):
    model_defaults = tmp_path / "popularity.yaml"
    model_defaults.write_text(
        "train: {lr: 0.01, epochs: 5, patience: 2}\ndatasets:\n  demo: {train: {epochs: 7}}\n"
    )
    monkeypatch.setattr("convrec.config.default_config_file", lambda name: model_defaults)
    user = tmp_path / "user.yaml"
    user.write_text("train: {patience: 4, batch_size: 8}\nseed: 5\n")

    config = resolve_config(
        "popularity", "demo", config_file=user, overrides=["train.batch_size=16"]
    )
    assert config.train.lr == 0.01  # model file
    assert config.train.epochs == 7  # dataset section beats the model file
    assert config.train.patience == 4  # user file beats both
    assert config.train.batch_size == 16  # command line beats everything
    assert config.seed == 5
    assert config.train.weight_decay == TrainConfig().weight_decay  # class default

    other = resolve_config("popularity", "inspired", config_file=user)
    assert other.train.epochs == 5  # the demo section does not apply to inspired


def test_unknown_key_names_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        resolve_config("popularity", "demo", overrides=["train.lrr=0.1"])
    message = str(info.value)
    assert "command line: unknown key 'train.lrr'" in message
    assert "lr" in message and "batch_size" in message


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"command line: train.lr: .*number.*'fast'"):
        resolve_config("popularity", "demo", overrides=["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"train.optimizer: .*'sgd'"):
        resolve_config("popularity", "demo", overrides=["train.optimizer=sgd"])
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        resolve_config("popularity", "demo", overrides=["seed=abc"])


def test_bad_override_syntax_and_unknown_section():
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        parse_overrides(["lr=0.1"])
    assert parse_overrides(["train.lr=3e-4", "model.x=true", "seed=2"]) == {
        "train": {"lr": "3e-4"},
        "model": {"x": True},
        "seed": 2,
    }


def test_unknown_model_and_bad_file(tmp_path):
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        resolve_config("nope", "demo")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {lr: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown section 'trian'"):
        resolve_config("popularity", "demo", config_file=bad)
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config("popularity", "demo", config_file=tmp_path / "missing.yaml")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = resolve_config(
        "popularity", "demo", overrides=["train.lr=3e-4", "data.options={num_movies: 40}"]
    )
    assert config.train.lr == 3e-4
    config.save(tmp_path / "config.yaml")
    assert RunConfig.load(tmp_path / "config.yaml") == config
