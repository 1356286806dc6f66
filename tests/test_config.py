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


def test_unknown_nested_key_lists_the_nested_settings():
    with pytest.raises(ConfigError) as info:
        resolve_config("unicrs", "demo", overrides=["model.compact_lm.blocksize=256"])
    message = str(info.value)
    assert "unknown key 'model.compact_lm.blocksize'; allowed:" in message
    assert "block_size" in message and "n_prefix_rec" not in message
    with pytest.raises(ConfigError, match=r"unknown key 'model\.lm'; model takes none"):
        resolve_config("popularity", "demo", overrides=["model.lm=x"])


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


def test_a_general_setting_beats_the_stage_settings_of_lower_layers(tmp_path):
    # unicrs.yaml sets per-stage epochs and lr; the command line's train.epochs wins
    config = resolve_config("unicrs", "demo", overrides=["train.epochs=1"])
    assert [config.train.for_stage(s).epochs for s in ("pretrain", "recommend")] == [1, 1]
    assert config.train.for_stage("recommend").lr == 1e-3  # untouched: still the YAML's
    # within one layer the stage value refines the general one
    config = resolve_config(
        "unicrs", "demo", overrides=["train.epochs=1", "train.stages.recommend.epochs=3"]
    )
    assert config.train.for_stage("recommend").epochs == 3
    assert config.train.for_stage("pretrain").epochs == 1
    user = tmp_path / "user.yaml"
    user.write_text("train: {lr: 5.0e-4}\n")
    config = resolve_config("unicrs", "demo", config_file=user)
    assert {config.train.for_stage(s).lr for s in ("pretrain", "recommend", "converse")} == {5e-4}


def test_a_key_given_twice_in_a_yaml_file_is_an_error(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"user.yaml, line 4: .*duplicate key 'lr' .*line 2"):
        resolve_config("popularity", "demo", config_file=user)
    user.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'seed'"):
        resolve_config("popularity", "demo", config_file=user)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf"])
def test_numbers_must_be_finite(value):
    with pytest.raises(ConfigError, match=r"train.lr: .*finite"):
        resolve_config("kbrd", "demo", overrides=[f"train.lr={value}"])
    with pytest.raises(ConfigError, match=r"model.dropout: .*finite"):
        resolve_config("kbrd", "demo", overrides=[f"model.dropout={value}"])


def test_unreadable_config_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory, expected a file"):
        resolve_config("popularity", "demo", config_file=tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"train:\n  lr: \xff\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line 2: not UTF-8"):
        resolve_config("popularity", "demo", config_file=bad)
    bad.write_text("train: {lr: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line 2: not valid YAML"):
        resolve_config("popularity", "demo", config_file=bad)
