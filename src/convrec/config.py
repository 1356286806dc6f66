"""Typed, layered run configuration.

Precedence, lowest first (each layer overrides the ones before it):

1. the defaults written in the config classes below and in each model's `Config`;
2. `configs/<model>.yaml` (shipped in the package): its `model`, `train` and `data` sections;
3. the same file's `datasets.<dataset>` section;
4. a user file given with `--config FILE` (same layout, may hold `datasets:` too);
5. `key=value` overrides on the command line, dotted by section: `train.lr=3e-4`,
   `model.embedding_dim=64`, `data.train_turns=all`, `seed=3`.

Per-stage settings (`train.stages.<stage>.epochs`) refine the general ones (`train.epochs`)
within a layer; a general value set in a higher layer replaces the per-stage values of the
layers below it, so `train.epochs=1` on the command line means one epoch in every stage.

Every layer is validated against the same classes: an unknown key or a value of the wrong
type is an error that names the key and what is allowed. The resolved config is saved as
`config.yaml` in the run directory, and a run can be rebuilt from that file alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from convrec.data.errors import DataFormatError
from convrec.data.files import read_text, write_atomic
from convrec.data.sequences import TrainPositions
from convrec.data.splits import HoldOut
from convrec.models.base import ModelConfig
from convrec.registry import get_model
from convrec.settings import Settings

SECTIONS = ("model", "train", "data")
TOP_LEVEL = ("seed",)


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


class StageSettings(Settings):
    """Per-stage overrides of the `train` settings (unset fields keep the run's value)."""

    epochs: int | None = Field(None, ge=1, description="maximum epochs of this stage")
    batch_size: int | None = Field(None, ge=1, description="global batch size in this stage")
    lr: float | None = Field(None, gt=0, description="peak learning rate of this stage")
    weight_decay: float | None = Field(None, ge=0, description="weight decay in this stage")
    warmup_ratio: float | None = Field(None, ge=0, le=1, description="warm-up share")
    patience: int | None = Field(None, ge=1, description="early-stopping patience")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps cap of this stage")


class TrainConfig(Settings):
    """How the shared trainer optimises every gradient stage of a model."""

    epochs: int = Field(10, ge=1, description="maximum epochs per stage")
    batch_size: int = Field(64, ge=1, description="global batch size, summed over processes")
    eval_batch_size: int = Field(256, ge=1, description="batch size for validation and test")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="decoupled (AdamW) or L2 (Adam) decay")
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="optimizer")
    warmup_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of a stage's steps with linear warm-up; then linear decay to 0",
    )
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm (null: off)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    patience: int = Field(
        3, ge=1, description="epochs without a better validation metric before a stage stops"
    )
    checkpoint_every: int = Field(
        0, ge=0, description="optimizer steps between mid-epoch checkpoints (0: end of epoch only)"
    )
    max_steps: int | None = Field(
        None, ge=1, description="stop each stage after this many optimizer steps (smoke runs)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: each process's GPU when CUDA is available, else the CPU"
    )
    stages: dict[str, StageSettings] = Field(
        default_factory=dict,
        description="per-stage overrides by stage name, e.g. stages.converse.lr=1e-4",
    )

    def for_stage(self, name: str) -> TrainConfig:
        """These settings with stage `name`'s overrides applied."""
        overrides = self.stages.get(name)
        if overrides is None:
            return self
        return self.model_copy(update=overrides.model_dump(exclude_none=True))


class DataConfig(Settings):
    """Which samples a run trains on, and options passed to the dataset reader.

    `train_turns` applies to dialogue datasets, `max_items` and `train_positions` to
    sequential ones; each kind of task ignores the other's settings.
    """

    train_turns: Literal["recommender", "all"] = Field(
        "recommender",
        description="dialogues: training targets from recommender turns, or from all turns",
    )
    max_items: int = Field(
        50, ge=1, description="sequences: a sample's history is the last max_items items"
    )
    train_positions: TrainPositions = Field(
        "random",
        description="sequences: training targets at one random position per user per epoch "
        "(random), at every position (all), at the last training item only (last), or at "
        "the last one and every max_items-th position before it (windows: with SASRec's "
        "loss at every position, each training item once)",
    )
    window_stride: int | None = Field(
        None,
        ge=1,
        description="sequences, windows: positions between consecutive targets (default "
        "max_items: the windows tile the sequence; shorter: they overlap, so that a model "
        "trained on each window's last window_stride positions sees at least max_items - "
        "window_stride earlier items at every trained position)",
    )
    valid_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="dialogues: share of the training file held out for validation when the "
        "dataset has no validation file (ReDial as published; KGSF/CRSLab hold ~10%); 0: none",
    )
    test_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dialogues: share of the training file held out for test when the "
        "dataset has no test file; 0: a missing test file is an error",
    )
    split_seed: int = Field(
        0,
        description="which dialogues are held out; apart from `seed`, so every model and "
        "seed of a comparison shares validation and test",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="reader options, e.g. the demo world's num_movies"
    )

    @model_validator(mode="after")
    def _leaves_training_dialogues(self) -> DataConfig:
        self.holdout()  # fractions that sum to 1 or more leave nothing to train on
        return self

    def holdout(self) -> HoldOut:
        return HoldOut(self.valid_fraction, self.test_fraction, self.split_seed)


@dataclass
class RunConfig:
    """A fully resolved run: what to train on what, with which settings."""

    model_name: str
    dataset: str
    data_dir: str | None
    seed: int
    model: ModelConfig
    train: TrainConfig
    data: DataConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "seed": self.seed,
            "model": self.model.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "data": self.data.model_dump(mode="json"),
        }

    def save(self, path: Path) -> None:
        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        if not path.exists():
            raise ConfigError(f"{path}: missing run config (is this a run directory?)")
        raw = read_yaml(path)
        if not isinstance(raw, dict) or "model_name" not in raw or "dataset" not in raw:
            raise ConfigError(f"{path}: not a convrec run config")
        for key in ("model_name", "dataset"):
            if not isinstance(raw[key], str):
                raise ConfigError(f"{path}: {key}: expected a string (got {raw[key]!r})")
        data_dir = raw.get("data_dir")
        if data_dir is not None and not isinstance(data_dir, str):
            raise ConfigError(f"{path}: data_dir: expected a path or null (got {data_dir!r})")
        sections = {k: raw[k] for k in (*SECTIONS, *TOP_LEVEL) if k in raw}
        return build_config(raw["model_name"], raw["dataset"], data_dir, [(str(path), sections)])


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain
    YAML keeps the last, which silently drops the first setting)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                line = first_line.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: the base loader reports it
            if line != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {line})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's content; unreadable files, bad YAML and repeated keys are ConfigErrors
    that name the file."""
    try:
        text = read_text(path)
    except DataFormatError as e:
        raise ConfigError(str(e)) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a safe loader (SafeLoader + unique keys)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = ", ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None


def default_config_file(model_name: str) -> Path | None:
    path = Path(str(resources.files("convrec") / "configs" / f"{model_name}.yaml"))
    return path if path.is_file() else None


Layer = tuple[str, dict[str, Any]]  # (where it came from, its sections)


def read_config_file(path: Path, dataset: str) -> list[Layer]:
    """The layers a YAML file contributes: its sections, then its `datasets.<dataset>`."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    allowed = {*SECTIONS, *TOP_LEVEL, "datasets"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{path}: unknown section {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    per_dataset = raw.pop("datasets", None) or {}
    if not isinstance(per_dataset, dict):
        raise ConfigError(f"{path}: 'datasets' must map dataset names to sections")
    layers: list[Layer] = [(str(path), raw)]
    section = per_dataset.get(dataset)
    if section:
        extra = sorted(set(section) - {*SECTIONS, *TOP_LEVEL})
        if extra:
            raise ConfigError(
                f"{path}: datasets.{dataset}: unknown section {extra[0]!r}; "
                f"allowed: {', '.join((*SECTIONS, *TOP_LEVEL))}"
            )
        layers.append((f"{path} (datasets.{dataset})", section))
    return layers


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`["a.b=3", "c=x"]` -> `{"a": {"b": 3}, "c": "x"}`; values parsed as YAML scalars."""
    layer: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"setting {item!r} is not key=value (e.g. train.lr=3e-4)")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        parts = key.split(".")
        target = layer
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"setting {item!r}: {part!r} is given both a value and keys")
        target[parts[-1]] = parsed
    return layer


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.lr=3e-4", "seed=2"]` -> nested dict; values parsed as YAML scalars."""
    for item in overrides:
        key = item.partition("=")[0]
        parts = key.split(".")
        if parts[0] not in (*SECTIONS, *TOP_LEVEL) or (parts[0] in SECTIONS and len(parts) < 2):
            raise ConfigError(
                f"unknown key {key!r}; keys are seed or section.name with section one of "
                f"{', '.join(SECTIONS)} (e.g. train.lr=3e-4)"
            )
    return parse_settings(overrides)


def validate_settings(cls: type[BaseModel], items: list[str], source: str) -> Any:
    """key=value settings validated against a config class (errors name the key)."""
    return _validate(cls, parse_settings(items), "", source)


def _merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = _merge(merged[key], value)
        elif key == "options" and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def _drop_overridden_stage_settings(
    merged: dict[str, Any], layer: dict[str, Any]
) -> dict[str, Any]:
    """Forget lower layers' `train.stages.<name>.<key>` for each `train.<key>` that `layer`
    sets, so that e.g. `train.epochs=1` on the command line beats a stage's `epochs` in the
    model's YAML; a layer's own stage values still beat its general ones."""
    train = layer.get("train")
    stages = merged.get("train", {}).get("stages")
    if not isinstance(train, dict) or not isinstance(stages, dict):
        return merged
    general = set(train) & set(StageSettings.model_fields)
    if not general:
        return merged
    merged = copy.deepcopy(merged)
    for stage in merged["train"]["stages"].values():
        if isinstance(stage, dict):
            for key in general:
                stage.pop(key, None)
    return merged


def _fields_at(cls: type[BaseModel], loc: tuple) -> list[str]:
    """The settings of the (nested) config class that `loc` leads to; [] when unknown."""
    for part in loc:
        field = cls.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        cls = annotation
    return list(cls.model_fields)


def _validate(cls: type[BaseModel], values: dict[str, Any], section: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section {section!r} must be a mapping")
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        error = e.errors()[0]
        key = ".".join([*([section] if section else []), *(str(p) for p in error["loc"])])
        if error["type"] == "extra_forbidden":
            fields = _fields_at(cls, error["loc"][:-1])
            parent = key.rpartition(".")[0] or "this section"
            allowed = f"allowed: {', '.join(sorted(fields))}" if fields else f"{parent} takes none"
            raise ConfigError(f"{source}: unknown key {key!r}; {allowed}") from None
        raise ConfigError(f"{source}: {key}: {error['msg']} (got {error.get('input')!r})") from None


def _check_layer(layer: Layer, classes: dict[str, type[BaseModel]]) -> None:
    """Validate one layer on its own (every field has a default), so that an error names
    the file or the command line that brought the bad key or value."""
    source, sections = layer
    for section, values in sections.items():
        if section in classes:
            _validate(classes[section], values, section, source)


def build_config(
    model_name: str, dataset: str, data_dir: str | Path | None, layers: list[Layer]
) -> RunConfig:
    """Merge layers over the class defaults and validate every section."""
    model_cls = get_model(model_name)
    classes = {"model": model_cls.Config, "train": TrainConfig, "data": DataConfig}
    merged: dict[str, Any] = {"model": {}, "train": {}, "data": {}, "seed": 0}
    for layer in layers:
        _check_layer(layer, classes)
        merged = _merge(_drop_overridden_stage_settings(merged, layer[1]), layer[1])
    source = " + ".join(name for name, _ in layers) or "defaults"
    seed = merged["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{source}: seed: expected an integer (got {seed!r})")
    return RunConfig(
        model_name=model_name,
        dataset=dataset,
        data_dir=str(data_dir) if data_dir is not None else None,
        seed=seed,
        model=_validate(model_cls.Config, merged["model"], "model", source),
        train=_validate(TrainConfig, merged["train"], "train", source),
        data=_validate(DataConfig, merged["data"], "data", source),
    )


def resolve_config(
    model_name: str,
    dataset: str,
    data_dir: str | Path | None = None,
    *,
    config_file: Path | None = None,
    overrides: list[str] = (),  # type: ignore[assignment]
) -> RunConfig:
    """The run config for `model_name` on `dataset` (see the module doc for precedence)."""
    get_model(model_name)  # unknown model -> clear error before anything else
    layers: list[Layer] = []
    default = default_config_file(model_name)
    if default is not None:
        layers += read_config_file(default, dataset)
    if config_file is not None:
        layers += read_config_file(config_file, dataset)
    layers.append(("command line", parse_overrides(list(overrides))))
    return build_config(model_name, dataset, data_dir, layers)
