"""The study spec: one YAML or JSON document that describes a whole search.

`load_spec` reads and checks a spec and raises `SpecError`, whose `errors`
list every problem as a dotted path and a message. Nothing a spec names is
imported. The qconfig `_target_` only selects an entry of an allowlist, and
a model name selects a key of `qsearch.models.MODELS`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from qsearch.models.factory import MODELS
from qsearch.quant.qconfig_target import QSEARCH_TARGET, TORCH_TARGETS, qconfig_from_target
from qsearch.search.space import (
    DEFAULT_SEARCH_SPACE,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    QCONFIG_RULES,
    TRAINING_RULES,
    Dimension,
    check_search_space,
    dimension_from_input,
    is_scalar,
    normalize_dimension,
    resolve_search_space,
)

if TYPE_CHECKING:
    import optuna

__all__ = ["Dimension", "SpecError", "StudySpec", "load_spec"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
# Specs are a few kilobytes, so the limit only stops a pasted or uploaded file
# from tying up the parser.
MAX_SPEC_BYTES = 1 << 20

Objective = Literal["accuracy", "weight_memory", "bitops"]
_JsonScalar = bool | int | float | str | None


class SpecError(ValueError):
    """An invalid study spec. `errors` contains (dotted path, message) pairs.

    The path is empty for problems with the whole document, such as a YAML
    syntax error or a missing file.
    """

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{path}: {message}" if path else message for path, message in self.errors)

    def __reduce__(self) -> tuple[type[SpecError], tuple[list[tuple[str, str]]]]:
        return (SpecError, (self.errors,))


def _check_values(mapping: Any, kind: str, fits: Callable[[Any], bool], expected: str) -> Any:
    # Runs before the union types are checked, so that a bad value gives one
    # message at its key and not one per member of the union.
    if not isinstance(mapping, Mapping):
        return mapping
    errors = [
        (str(key), f"{kind} {key!r} must be {expected}, but got {value!r}")
        for key, value in mapping.items()
        if not fits(value)
    ]
    if errors:
        raise SpecError(errors)
    return mapping


def _check_options(options: Any) -> Any:
    def fits(value: Any) -> bool:
        is_words = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return is_scalar(value) or is_words

    return _check_values(
        options, "option", fits, "a number, a string, true/false or a list of strings"
    )


def _check_params(params: Any) -> Any:
    def fits(value: Any) -> bool:
        scalars = value if isinstance(value, list) else [value]
        return all(v is None or is_scalar(v) for v in scalars)

    return _check_values(
        params, "model parameter", fits, "a number, a string, true/false, null or a list of those"
    )


def _check_config(config: Any) -> Any:
    return _check_values(
        config,
        "qconfig key",
        lambda v: v is None or is_scalar(v),
        "a number, a string, true/false or null",
    )


class _SpecModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class DatasetSpec(_SpecModel):
    """The dataset. `path` is relative to the data root that the runner is given."""

    name: Literal["digits", "npz", "speech_commands"]
    path: str | None = None
    options: Annotated[
        dict[str, int | float | str | bool | list[str]], BeforeValidator(_check_options)
    ] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _check_relative(cls, path: str | None) -> str | None:
        if path is None:
            return None
        if not path.strip():
            raise ValueError("dataset path is empty; give a path relative to the data root")
        windows_path = pathlib.PureWindowsPath(path)
        if pathlib.PurePosixPath(path).is_absolute() or windows_path.drive or windows_path.root:
            raise ValueError(
                f"dataset path {path!r} is absolute; give a path relative to the data root"
            )
        if ".." in re.split(r"[/\\]", path):
            raise ValueError(
                f"dataset path {path!r} contains '..'; give a path inside the data root"
            )
        return path

    @model_validator(mode="after")
    def _check_path_needed(self) -> DatasetSpec:
        if self.name == "digits" and self.path is not None:
            raise SpecError(
                [
                    (
                        "path",
                        f"dataset 'digits' takes no path because its images ship "
                        f"with scikit-learn, but got {self.path!r}; remove path",
                    )
                ]
            )
        if self.name != "digits" and self.path is None:
            raise SpecError(
                [("path", f"dataset {self.name!r} needs a path relative to the data root")]
            )
        return self


class QConfigBlock(_SpecModel):
    """The qconfig block in the upstream `_target_` format, checked against the allowlist."""

    target: str = Field(alias="_target_")
    config: Annotated[dict[str, _JsonScalar] | None, BeforeValidator(_check_config)] = None
    backend: str | None = None

    @model_validator(mode="after")
    def _check_target(self) -> QConfigBlock:
        try:
            qconfig_from_target(self.to_block())
        except ValueError as error:
            raise SpecError([(self._error_path(str(error)), str(error))]) from error
        return self

    def _error_path(self, message: str) -> str:
        # NOTE: qconfig_target names the key as "qconfig 'key'" or "qconfig key 'key'".
        # If that wording changes, the error is reported at model.qconfig.
        match = re.search(r"qconfig (?:key )?'(\w+)'", message)
        key = match.group(1) if match else ""
        if self.config and key in self.config:
            return f"config.{key}"
        return key if key in ("_target_", "config", "backend") else ""

    @property
    def is_torch(self) -> bool:
        """True for PyTorch's fixed 8-bit QAT qconfig."""
        return self.target in TORCH_TARGETS

    def to_block(self) -> dict[str, Any]:
        """Return the block as `qconfig_from_target` takes it, without unset keys."""
        block: dict[str, Any] = {"_target_": self.target}
        if self.config is not None:
            block["config"] = dict(self.config)
        if self.backend is not None:
            block["backend"] = self.backend
        return block

    @model_serializer(mode="plain")
    def _serialize(self) -> dict[str, Any]:
        return self.to_block()


DEFAULT_QCONFIG = QConfigBlock(_target_=QSEARCH_TARGET, config={"bw_w": 8, "bw_f": 8})


class ModelSpec(_SpecModel):
    """The network: a key of `qsearch.models.MODELS`, its parameters and its qconfig."""

    name: str
    params: Annotated[
        dict[str, _JsonScalar | list[_JsonScalar]], BeforeValidator(_check_params)
    ] = Field(default_factory=dict)
    qconfig: QConfigBlock = DEFAULT_QCONFIG

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
        return name


class ConstraintsSpec(_SpecModel):
    """Limits a trial must meet to count as feasible."""

    max_weight_memory_bytes: float | None = Field(default=None, gt=0)
    max_bitops: float | None = Field(default=None, gt=0)


class _OptionsSpec(_SpecModel):
    def options(self) -> dict[str, Any]:
        """Return the keyword arguments for the Optuna class, without `name` and unset values."""
        return self.model_dump(exclude={"name"}, exclude_none=True)


class TPESamplerSpec(_OptionsSpec):
    name: Literal["tpe"]
    n_startup_trials: int = Field(default=10, ge=0)
    multivariate: bool | None = None  # None lets Optuna choose by the number of objectives


class NSGA2SamplerSpec(_OptionsSpec):
    name: Literal["nsga2"]
    population_size: int = Field(default=50, ge=2)
    mutation_prob: float | None = Field(default=None, ge=0, le=1)
    crossover_prob: float = Field(default=0.9, ge=0, le=1)


class RandomSamplerSpec(_OptionsSpec):
    name: Literal["random"]


class GridSamplerSpec(_OptionsSpec):
    name: Literal["grid"]


SamplerSpec = Annotated[
    TPESamplerSpec | NSGA2SamplerSpec | RandomSamplerSpec | GridSamplerSpec,
    Field(discriminator="name"),
]


class NonePrunerSpec(_OptionsSpec):
    name: Literal["none"]


class MedianPrunerSpec(_OptionsSpec):
    name: Literal["median"]
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)


class HyperbandPrunerSpec(_OptionsSpec):
    name: Literal["hyperband"]
    min_resource: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=3, ge=2)


PrunerSpec = Annotated[
    NonePrunerSpec | MedianPrunerSpec | HyperbandPrunerSpec, Field(discriminator="name")
]


class TrainingSpec(_SpecModel):
    """Training settings of every trial; search_space entries override them per trial."""

    epochs: int = Field(default=10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH_SIZE)
    lr: float = Field(default=0.005, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0, le=1)  # used by sgd only
    weight_decay: float = Field(default=0.0, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "cpu"


class StudySpec(_SpecModel):
    """A whole study: data, model, search space, objectives, sampler, pruner and budget."""

    name: str
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    dataset: DatasetSpec
    model: ModelSpec
    search_space: dict[str, Annotated[Dimension | None, BeforeValidator(dimension_from_input)]] = (
        Field(default_factory=dict)
    )
    objectives: list[Objective] = Field(default_factory=lambda: ["accuracy", "weight_memory"])
    constraints: ConstraintsSpec = ConstraintsSpec()
    sampler: SamplerSpec = TPESamplerSpec(name="tpe")
    pruner: PrunerSpec = NonePrunerSpec(name="none")
    training: TrainingSpec = TrainingSpec()
    n_trials: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)  # seconds

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"study name {name!r} is invalid; use 1 to 100 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        return name

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, objectives: list[str]) -> list[str]:
        for objective in objectives:
            if objectives.count(objective) > 1:
                raise ValueError(
                    f"objectives must be unique, but {objective!r} appears "
                    f"{objectives.count(objective)} times in {objectives}"
                )
        if "accuracy" not in objectives:
            raise ValueError(f"objectives must contain 'accuracy', but got {objectives}")
        return objectives

    @field_validator("search_space")
    @classmethod
    def _normalize_space(cls, space: dict[str, Any]) -> dict[str, Any]:
        return {key: normalize_dimension(key, dimension) for key, dimension in space.items()}

    @model_validator(mode="after")
    def _check_study(self) -> StudySpec:
        errors: list[tuple[str, str]] = []
        if self.n_trials is None and self.timeout is None:
            errors.append(
                (
                    "n_trials",
                    "n_trials and timeout are both missing; give n_trials "
                    "(a number of trials), timeout (seconds) or both",
                )
            )
        if self.pruner.name != "none" and len(self.objectives) > 1:
            errors.append(
                (
                    "pruner",
                    (
                        f"pruner {self.pruner.name!r} needs a single objective, but got "
                        f"{', '.join(self.objectives)}. Optuna cannot prune multi-objective "
                        "studies; use pruner 'none' or a single objective"
                    ),
                )
            )
        errors.extend(
            check_search_space(
                self.search_space,
                base_qconfig=self.base_qconfig(),
                target=self.model.qconfig.target,
                sampler=self.sampler.name,
            )
        )
        if errors:
            raise SpecError(errors)

        self._warn_overridden_config()
        return self

    def _warn_overridden_config(self) -> None:
        base = self.base_qconfig()
        if base is None or self.model.qconfig == DEFAULT_QCONFIG:
            return
        for key, value in base.items():
            if key in DEFAULT_SEARCH_SPACE and key not in self.search_space:
                warnings.warn(
                    f"study {self.name!r}: model.qconfig.config sets {key}={value!r}, but the "
                    f"default search space replaces it with "
                    f"{DEFAULT_SEARCH_SPACE[key].model_dump(exclude_defaults=True)}; name "
                    f"{key} in search_space (a value, a range, or null to keep the config value)",
                    UserWarning,
                    stacklevel=2,
                )

    @property
    def is_torch_qconfig(self) -> bool:
        """True if the model uses PyTorch's fixed 8-bit QAT qconfig."""
        return self.model.qconfig.is_torch

    def base_qconfig(self) -> dict[str, Any] | None:
        """Return the qsearch qconfig mapping that trial values override, or None for torch."""
        if self.is_torch_qconfig:
            return None
        return dict(self.model.qconfig.config or {})

    def resolved_search_space(self) -> dict[str, Dimension]:
        """Return the default dimensions merged with the spec's, without the null entries."""
        return resolve_search_space(self.search_space, torch_qconfig=self.is_torch_qconfig)

    def grid_search_space(self) -> dict[str, list[Any]]:
        """Return the values of each non-fixed dimension, as `optuna.samplers.GridSampler` takes."""
        return {
            key: dimension.grid_values()
            for key, dimension in self.resolved_search_space().items()
            if not dimension.is_fixed
        }

    def suggest_values(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Return a value for every search-space key, asking `trial` only for non-fixed ones."""
        return {
            key: dimension.suggest(trial, key)
            for key, dimension in self.resolved_search_space().items()
        }

    def fixed_values(self) -> dict[str, Any]:
        """Return the values of the fixed dimensions, which Optuna does not record as params."""
        return {
            key: dimension.value
            for key, dimension in self.resolved_search_space().items()
            if dimension.is_fixed
        }

    def qconfig_block_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the `_target_` block of one trial.

        The config is the base config, then the fixed dimensions, then `params`,
        so `trial.params` (which lacks fixed values) gives the same block as
        `suggest_values`.
        """
        block = self.model.qconfig.to_block()
        if self.is_torch_qconfig:
            return block
        values = {**self.fixed_values(), **params}
        overrides = {key: value for key, value in values.items() if key in QCONFIG_RULES}
        return {**block, "config": {**block.get("config", {}), **overrides}}

    def training_for(self, params: Mapping[str, Any]) -> TrainingSpec:
        """Return the training settings of one trial: fixed dimensions, then `params`, applied."""
        values = {**self.fixed_values(), **params}
        updates = {key: value for key, value in values.items() if key in TRAINING_RULES}
        return self.training.model_copy(update=updates)

    def directions(self) -> list[str]:
        """Return the Optuna direction of each objective: accuracy is maximized, costs minimized."""
        return [
            "maximize" if objective == "accuracy" else "minimize" for objective in self.objectives
        ]

    def to_json_dict(self) -> dict[str, Any]:
        """Return the spec as JSON-safe data that `load_spec` reads back to an equal spec."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """Return the SHA-256 of the canonical JSON of the spec, leaving out n_trials and timeout.

        The search space enters resolved, so spelling out a default dimension
        does not change the fingerprint, and a resumed study may raise its budget.
        """
        data = self.to_json_dict()
        del data["n_trials"], data["timeout"]
        data["search_space"] = {
            key: dimension.model_dump(mode="json")
            for key, dimension in self.resolved_search_space().items()
        }
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def load_spec(source: StudySpec | Mapping[str, Any] | str | os.PathLike[str]) -> StudySpec:
    """Read and check a study spec from a mapping, a .yaml/.yml/.json file or YAML/JSON text.

    A string that is one line ending in a spec suffix is a file path, and
    any other string is the document itself. Raises SpecError.
    """
    if isinstance(source, StudySpec):
        return source
    if isinstance(source, Mapping):
        data: Any = source
    elif isinstance(source, os.PathLike) or (isinstance(source, str) and _is_path(source)):
        data = _read_file(pathlib.Path(source))
    elif isinstance(source, str):
        data = _parse_text(source, "study spec text", syntax="auto")
    else:
        raise TypeError(
            f"load_spec takes a StudySpec, a mapping, a path or text, but got "
            f"{type(source).__name__}"
        )

    if data is None:
        raise SpecError(
            [("", "the study spec is empty; give at least name, dataset, model and n_trials")]
        )
    if not isinstance(data, Mapping):
        raise SpecError(
            [
                (
                    "",
                    f"a study spec must be a mapping of keys to values, but got "
                    f"{type(data).__name__}",
                )
            ]
        )
    try:
        return StudySpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_errors_from_validation(error)) from None


def _is_path(text: str) -> bool:
    return "\n" not in text and text.strip().lower().endswith(SPEC_SUFFIXES) and ": " not in text


def _read_file(path: pathlib.Path) -> Any:
    if path.suffix.lower() not in SPEC_SUFFIXES:
        raise SpecError([("", f"study spec file '{path}' must end in {', '.join(SPEC_SUFFIXES)}")])
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([("", f"study spec file '{path}' not found")]) from None
    except OSError as error:
        raise SpecError([("", f"study spec file '{path}' cannot be read: {error}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError([("", f"study spec file '{path}' is not UTF-8 text: {error}")]) from None
    syntax: Literal["json", "yaml"] = "json" if path.suffix.lower() == ".json" else "yaml"
    return _parse_text(text, f"study spec file '{path}'", syntax=syntax)


def _parse_text(text: str, origin: str, *, syntax: Literal["json", "yaml", "auto"]) -> Any:
    """Parse JSON or YAML; "auto" tries JSON for text that starts with '{', then YAML."""
    size = len(text.encode())
    if size > MAX_SPEC_BYTES:
        message = f"{origin} has {size} bytes; a study spec may have at most {MAX_SPEC_BYTES}"
        raise SpecError([("", message)])

    if syntax == "json" or (syntax == "auto" and text.lstrip().startswith("{")):
        try:
            return json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
        except (json.JSONDecodeError, _JsonValueError) as error:
            if syntax == "json":
                raise SpecError([("", f"{origin} is not valid JSON: {error}")]) from None
    try:
        # _SpecLoader subclasses SafeLoader, so it builds only plain Python types.
        return yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as error:
        raise SpecError([("", f"{origin} is not valid YAML: {error}")]) from None


class _JsonValueError(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JsonValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _json_constant(name: str) -> float:
    raise _JsonValueError(f"{name} is not a number a study spec can use")


class _SpecLoader(yaml.SafeLoader):
    """A safe YAML loader with YAML 1.2 booleans and floats, no aliases and no duplicate keys.

    YAML 1.1, which PyYAML follows, reads `on`, `off`, `yes` and `no` as
    booleans, which breaks keyword lists, and reads `1e-4` as a string.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        # Aliases can blow a small document up into a huge one.
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "a study spec cannot use YAML aliases (*name); write the value out",
                self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            if isinstance(key, typing.Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# A timestamp would become a datetime, which JSON and the fingerprint cannot hold.
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_SpecLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in (_BOOL_TAG, _FLOAT_TAG, _TIMESTAMP_TAG)
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_SpecLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _errors_from_validation(error: ValidationError) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    union_paths: set[str] = set()
    for detail in error.errors(include_url=False):
        segments, model, in_union = _walk_loc(detail["loc"])
        path = ".".join(segments)
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, SpecError):
            errors.extend(
                (".".join(filter(None, (path, sub_path))), message)
                for sub_path, message in cause.errors
            )
        elif in_union and path in union_paths:
            continue  # pydantic reports every member of a failed union, so keep the first
        else:
            errors.append((path, _message(detail, model)))
            if in_union:
                union_paths.add(path)
    return errors


def _message(detail: Any, model: type[BaseModel] | None) -> str:
    kind, message, value = detail["type"], detail["msg"], detail["input"]
    if kind == "extra_forbidden":
        key = detail["loc"][-1]
        allowed = (
            ", ".join(field.alias or name for name, field in model.model_fields.items())
            if model
            else ""
        )
        return f"unknown key '{key}'" + (f"; allowed keys are: {allowed}" if allowed else "")
    if kind == "missing":
        return f"required key '{detail['loc'][-1]}' is missing"
    if kind == "union_tag_not_found":
        return f"required key {detail['ctx']['discriminator']} is missing"
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "union_tag_invalid" or not isinstance(value, _JsonScalar):
        return message
    value_text = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return f"{message}, but got {value_text}"


def _walk_loc(loc: Sequence[str | int]) -> tuple[list[str], type[BaseModel] | None, bool]:
    """Return the loc as path segments, the model of the last key and whether a union failed.

    Pydantic puts the discriminator tag of a tagged union, or the member name
    (such as 'int') of a plain union, into the loc. The input has no such key,
    so the path leaves it out.
    """
    current: Any = StudySpec
    segments: list[str] = []
    model: type[BaseModel] | None = None
    in_union = False
    for segment in loc:
        members = _union_members(current)
        if len(members) > 1:
            tagged = [member for member in members if segment in _tags(member)]
            current = tagged[0] if tagged else None
            in_union = in_union or not tagged
            continue
        current = members[0] if members else None
        segments.append(str(segment))
        if isinstance(current, type) and issubclass(current, BaseModel):
            model = current
            field = next(
                (
                    field
                    for name, field in current.model_fields.items()
                    if segment in (name, field.alias)
                ),
                None,
            )
            current = field.annotation if field else None
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            current = None
    return segments, model, in_union


def _union_members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Annotated:
        return _union_members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members: list[Any] = []
        for arg in typing.get_args(annotation):
            members.extend(_union_members(arg))
        return members
    return [] if annotation is type(None) else [annotation]


def _tags(member: Any) -> tuple[Any, ...]:
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return ()
    for key in ("name", "type"):
        field = member.model_fields.get(key)
        if field is not None and typing.get_origin(field.annotation) is Literal:
            return typing.get_args(field.annotation)
    return ()
