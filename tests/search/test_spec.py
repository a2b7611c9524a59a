import ast
import copy
import json
import pathlib
import pickle
import sys
import warnings

import optuna
import pytest
import yaml

from qsearch.search import space
from qsearch.search.spec import SpecError, StudySpec, load_spec

ROOT = pathlib.Path(__file__).resolve().parents[2]
STUDIES = ROOT / "studies"

MINIMAL = {
    "name": "minimal",
    "dataset": {"name": "digits"},
    "model": {"name": "digits_cnn"},
    "n_trials": 4,
}

DEFAULT_SPACE = {
    "bw_w": {"type": "int", "low": 2, "high": 8, "step": 1, "log": False},
    "bw_f": {"type": "int", "low": 2, "high": 8, "step": 1, "log": False},
    "bw_b": {"type": "int", "low": 2, "high": 16, "step": 1, "log": False},
    "power_of_2": {"type": "categorical", "choices": [False, True]},
    "noise_prob": {"type": "float", "low": 0.7, "high": 0.9, "step": None, "log": False},
    "weight_scale": {"type": "fixed", "value": "fixed"},
}

TORCH_QCONFIG = {"_target_": "torch.quantization.get_default_qat_qconfig", "backend": "fbgemm"}
HANNAH_TARGET = "speech_recognition.models.factory.qconfig.get_trax_qat_qconfig"


def _spec(**changes):
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


def _errors(source):
    with pytest.raises(SpecError) as caught:
        load_spec(source)
    return caught.value.errors


def _dumped_space(spec):
    return {key: dim.model_dump() for key, dim in spec.resolved_search_space().items()}


# Studies in studies/


@pytest.mark.parametrize(
    "file_name", ["digits_quick.yaml", "digits_pareto.yaml", "kws_tc_res8.yaml"]
)
def test_study_file_loads(file_name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = load_spec(STUDIES / file_name)
    assert spec.name == file_name.removesuffix(".yaml")
    assert spec.objectives == ["accuracy", "weight_memory"]


def test_study_digits_quick_settings():
    spec = load_spec(str(STUDIES / "digits_quick.yaml"))
    assert spec.sampler.name == "nsga2"
    assert spec.sampler.population_size == 8
    assert spec.n_trials == 24
    assert (spec.training.epochs, spec.training.batch_size) == (8, 64)
    assert (spec.training.optimizer, spec.training.lr) == ("adam", 0.005)
    expected = {**DEFAULT_SPACE, "bw_b": {"type": "fixed", "value": 8}}
    assert _dumped_space(spec) == expected


def test_study_digits_pareto_settings():
    spec = load_spec(STUDIES / "digits_pareto.yaml")
    assert spec.n_trials == 60
    assert spec.training.epochs == 15
    assert spec.constraints.max_weight_memory_bytes == 8192
    assert _dumped_space(spec)["weight_scale"] == {
        "type": "categorical",
        "choices": ["fixed", "pow2"],
    }


def test_study_kws_keeps_hannah_block():
    spec = load_spec(STUDIES / "kws_tc_res8.yaml")
    assert spec.dataset.name == "speech_commands"
    assert spec.dataset.path == "speech_commands"
    assert spec.dataset.options["words"] == [
        "yes",
        "no",
        "up",
        "down",
        "left",
        "right",
        "on",
        "off",
        "stop",
        "go",
    ]
    assert spec.model.name == "tc_res8"
    assert spec.to_json_dict()["model"]["qconfig"] == {
        "_target_": HANNAH_TARGET,
        "config": {"bw_b": 8, "bw_w": 6, "bw_f": 8, "power_of_2": False, "noise_prob": 0.7},
    }
    assert spec.sampler.name == "tpe"
    assert (spec.n_trials, spec.training.epochs) == (50, 30)
    assert "bw_b" not in spec.resolved_search_space()
    assert spec.qconfig_block_for({})["config"]["bw_b"] == 8


# Defaults and resolution


def test_defaults_resolve_to_default_space():
    spec = load_spec(MINIMAL)
    assert _dumped_space(spec) == DEFAULT_SPACE
    assert spec.base_qconfig() == {"bw_w": 8, "bw_f": 8}
    assert spec.is_torch_qconfig is False
    assert spec.directions() == ["maximize", "minimize"]
    assert spec.sampler.name == "tpe"
    assert spec.pruner.name == "none"
    assert spec.seed == 0
    assert spec.timeout is None


def test_torch_target_has_no_quantization_dimensions():
    spec = load_spec(_spec(model={"name": "digits_cnn", "qconfig": TORCH_QCONFIG}))
    assert spec.is_torch_qconfig is True
    assert spec.base_qconfig() is None
    assert spec.resolved_search_space() == {}
    assert spec.qconfig_block_for({"lr": 0.1}) == TORCH_QCONFIG


def test_torch_target_searches_training_keys():
    spec = load_spec(
        _spec(
            model={"name": "digits_cnn", "qconfig": TORCH_QCONFIG},
            search_space={"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        )
    )
    assert list(spec.resolved_search_space()) == ["lr"]


def test_overrides_merge_over_defaults():
    spec = load_spec(
        _spec(
            search_space={
                "bw_f": 6,
                "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
                "bw_b": None,
            }
        )
    )
    resolved = _dumped_space(spec)
    assert resolved["bw_f"] == {"type": "fixed", "value": 6}
    assert resolved["lr"] == {"type": "float", "low": 1e-4, "high": 1e-2, "step": None, "log": True}
    assert "bw_b" not in resolved
    assert resolved["bw_w"] == DEFAULT_SPACE["bw_w"]


def test_base_config_key_stays_unless_searched():
    qconfig = {"_target_": HANNAH_TARGET, "config": {"bw_w": 4, "bw_f": 4, "bw_acc": 24}}
    with pytest.warns(UserWarning, match="sets bw_w=4, but the default search space"):
        spec = load_spec(
            _spec(model={"name": "digits_cnn", "qconfig": qconfig}, search_space={"bw_f": None})
        )
    block = spec.qconfig_block_for({"bw_w": 3})
    assert block["_target_"] == HANNAH_TARGET
    assert block["config"]["bw_acc"] == 24
    assert block["config"]["bw_w"] == 3
    assert block["config"]["bw_f"] == 4
    assert block["config"]["weight_scale"] == "fixed"


def test_qconfig_block_includes_fixed_values():
    spec = load_spec(_spec(search_space={"bw_b": 8, "epochs": 3}))
    # trial.params contains only the suggested values, so fixed ones come from the spec.
    block = spec.qconfig_block_for({"bw_w": 4, "bw_f": 6})
    assert block["config"] == {"bw_w": 4, "bw_f": 6, "bw_b": 8, "weight_scale": "fixed"}
    assert spec.training_for({"lr": 0.01}).epochs == 3
    assert spec.training_for({"lr": 0.01}).lr == 0.01


def test_float_key_fixed_int_becomes_float():
    spec = load_spec(_spec(search_space={"noise_prob": 1}))
    value = spec.resolved_search_space()["noise_prob"].value
    assert value == 1.0
    assert isinstance(value, float)


def test_directions_with_bitops():
    spec = load_spec(_spec(objectives=["bitops", "accuracy", "weight_memory"]))
    assert spec.directions() == ["minimize", "maximize", "minimize"]


def test_sampler_and_pruner_options():
    nsga2 = load_spec(_spec(sampler={"name": "nsga2", "population_size": 8}))
    assert nsga2.sampler.options() == {"population_size": 8, "crossover_prob": 0.9}
    tpe = load_spec(_spec(sampler={"name": "tpe", "n_startup_trials": 3, "multivariate": True}))
    assert tpe.sampler.options() == {"n_startup_trials": 3, "multivariate": True}
    median = load_spec(
        _spec(objectives=["accuracy"], pruner={"name": "median", "n_warmup_steps": 2})
    )
    assert median.pruner.options() == {"n_startup_trials": 5, "n_warmup_steps": 2}
    hyperband = load_spec(_spec(objectives=["accuracy"], pruner={"name": "hyperband"}))
    assert hyperband.pruner.options() == {"min_resource": 1, "reduction_factor": 3}


# Dimensions


def test_dimension_suggest_with_fixed_trial():
    spec = load_spec(
        _spec(
            search_space={
                "bw_b": 8,
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            }
        )
    )
    params = {"bw_w": 3, "bw_f": 7, "power_of_2": True, "noise_prob": 0.8, "lr": 0.001}
    trial = optuna.trial.FixedTrial(params)
    values = spec.suggest_values(trial)
    assert values == {**params, "bw_b": 8, "weight_scale": "fixed"}


def test_dimension_suggest_records_only_searched_keys():
    spec = load_spec(_spec(search_space={"bw_b": 8}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = spec.suggest_values(trial)
    assert set(trial.params) == {"bw_w", "bw_f", "power_of_2", "noise_prob"}
    assert values["bw_b"] == 8
    assert 2 <= values["bw_w"] <= 8
    assert 0.7 <= values["noise_prob"] <= 0.9


def test_grid_values():
    assert space.IntDimension(type="int", low=2, high=8, step=2).grid_values() == [2, 4, 6, 8]
    float_dim = space.FloatDimension(type="float", low=0.7, high=0.9, step=0.1)
    assert float_dim.grid_values() == [0.7, 0.8, 0.9]
    categorical = space.CategoricalDimension(type="categorical", choices=[False, True])
    assert categorical.grid_values() == [False, True]
    assert space.FixedDimension(type="fixed", value="fixed").grid_values() == ["fixed"]


def test_grid_sampler_runs_grid_space():
    spec = load_spec(
        _spec(
            sampler={"name": "grid"},
            search_space={
                "bw_w": {"type": "int", "low": 4, "high": 8, "step": 4},
                "bw_f": 8,
                "bw_b": 8,
                "power_of_2": False,
                "noise_prob": {"type": "float", "low": 0.8, "high": 0.9, "step": 0.1},
            },
        )
    )
    grid = spec.grid_search_space()
    assert grid == {"bw_w": [4, 8], "noise_prob": [0.8, 0.9]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    seen = []

    def objective(trial):
        values = spec.suggest_values(trial)
        seen.append((values["bw_w"], values["noise_prob"]))
        return 0.0

    study.optimize(objective, n_trials=10)  # the grid sampler stops the study after 4
    assert sorted(seen) == [(4, 0.8), (4, 0.9), (8, 0.8), (8, 0.9)]


# Fingerprint and serialization


def test_fingerprint_equal_for_yaml_and_json(tmp_path):
    data = _spec(
        search_space={"bw_w": {"type": "int", "low": 2, "high": 6}},
        constraints={"max_bitops": 1.0e7},
    )
    yaml_file = tmp_path / "study.yaml"
    yaml_file.write_text(yaml.safe_dump(data, sort_keys=True))
    json_file = tmp_path / "study.json"
    json_file.write_text(json.dumps(dict(reversed(list(data.items())))))
    assert load_spec(yaml_file).fingerprint() == load_spec(json_file).fingerprint()
    assert load_spec(yaml_file) == load_spec(json_file)


def test_fingerprint_changes_with_bw_range_only():
    base = load_spec(_spec()).fingerprint()
    wider = _spec(search_space={"bw_w": {"type": "int", "low": 2, "high": 6}})
    assert load_spec(wider).fingerprint() != base
    assert load_spec(_spec(n_trials=100)).fingerprint() == base
    assert load_spec(_spec(timeout=60)).fingerprint() == base


def test_fingerprint_ignores_spelled_out_defaults():
    explicit = _spec(search_space={"bw_w": {"type": "int", "low": 2, "high": 8}})
    assert load_spec(explicit).fingerprint() == load_spec(_spec()).fingerprint()


def test_to_json_dict_round_trip():
    spec = load_spec(STUDIES / "kws_tc_res8.yaml")
    data = spec.to_json_dict()
    assert json.loads(json.dumps(data)) == data
    assert "_target_" in data["model"]["qconfig"]
    assert data["search_space"]["bw_b"] is None
    assert load_spec(data) == spec
    assert load_spec(yaml.safe_dump(data)) == spec


def test_load_spec_returns_spec_as_is():
    spec = load_spec(MINIMAL)
    assert load_spec(spec) is spec


def test_load_spec_text_yaml_and_json():
    from_yaml = load_spec(
        "name: text\ndataset: {name: digits}\nmodel: {name: digits_cnn}\ntimeout: 30\n"
    )
    from_json = load_spec(json.dumps(_spec(name="text", n_trials=None, timeout=30)))
    assert from_yaml == from_json
    assert from_yaml.timeout == 30.0


def test_yaml_1_2_words_and_exponents():
    spec = load_spec(
        "name: words\ndataset: {name: npz, path: kws.npz, options: {words: [yes, no, on, off]}}\n"
        "model: {name: mlp}\nn_trials: 1\ntraining: {lr: 1e-3}\n"
        "search_space: {lr: {type: float, low: 1e-4, high: 1.0e-2, log: true}}\n"
    )
    assert spec.dataset.options["words"] == ["yes", "no", "on", "off"]
    assert spec.training.lr == 0.001
    assert spec.resolved_search_space()["lr"].low == 0.0001


def test_spec_error_str_and_pickle():
    error = SpecError([("training.epochs", "too many"), ("", "whole document")])
    assert str(error) == "training.epochs: too many\nwhole document"
    assert isinstance(error, ValueError)
    assert pickle.loads(pickle.dumps(error)).errors == error.errors


def test_spec_modules_import_no_optuna_or_storage():
    forbidden = {"optuna", "sqlalchemy", "fastapi"}
    for module in ("spec.py", "space.py"):
        tree = ast.parse((ROOT / "qsearch" / "search" / module).read_text())
        for node in tree.body:  # module level; optuna under TYPE_CHECKING is type-only
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not {name.split(".")[0] for name in names} & forbidden, (module, names)


# Invalid specs: each gives the exact path and a message that names the value


def _first(errors, path):
    messages = [message for error_path, message in errors if error_path == path]
    assert messages, f"no error at {path!r} in {errors}"
    return messages[0]


def test_error_unknown_top_level_key():
    message = _first(_errors(_spec(n_trailz=3)), "n_trailz")
    assert "unknown key 'n_trailz'" in message
    assert "n_trials" in message


def test_error_unknown_nested_key():
    message = _first(_errors(_spec(training={"epochz": 3})), "training.epochz")
    assert "unknown key 'epochz'" in message
    assert "epochs" in message


def test_error_sampler_option_of_other_sampler():
    errors = _errors(_spec(sampler={"name": "tpe", "population_size": 8}))
    message = _first(errors, "sampler.population_size")
    assert "unknown key 'population_size'" in message
    assert "n_startup_trials" in message


def test_error_disallowed_target():
    qconfig = {"_target_": "os.system", "config": {"bw_w": 8, "bw_f": 8}}
    message = _first(
        _errors(_spec(model={"name": "digits_cnn", "qconfig": qconfig})), "model.qconfig._target_"
    )
    assert "'os.system' is not allowed" in message


def test_error_target_is_never_imported():
    module = "qsearch_spec_test_never_imported"
    qconfig = {"_target_": f"{module}.get_qconfig", "config": {"bw_w": 8, "bw_f": 8}}
    message = _first(
        _errors(_spec(model={"name": "digits_cnn", "qconfig": qconfig})), "model.qconfig._target_"
    )
    assert module in message
    assert module not in sys.modules


def test_error_noise_prob_with_torch_target():
    qconfig = {**TORCH_QCONFIG, "config": {"noise_prob": 0.7}}
    message = _first(
        _errors(_spec(model={"name": "digits_cnn", "qconfig": qconfig})),
        "model.qconfig.config.noise_prob",
    )
    assert "0.7" in message


def test_error_qconfig_key_in_space_with_torch_target():
    errors = _errors(
        _spec(model={"name": "digits_cnn", "qconfig": TORCH_QCONFIG}, search_space={"bw_w": 4})
    )
    message = _first(errors, "search_space.bw_w")
    assert "search_space key 'bw_w' needs the qsearch qconfig _target_" in message


def test_error_invalid_base_qconfig():
    qconfig = {"_target_": HANNAH_TARGET, "config": {"bw_w": 20, "bw_f": 8}}
    message = _first(
        _errors(_spec(model={"name": "digits_cnn", "qconfig": qconfig})),
        "model.qconfig.config.bw_w",
    )
    assert "20" in message


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("../etc", "'../etc' contains '..'"),
        ("data/../../etc", "'data/../../etc' contains '..'"),
        ("/etc/passwd", "'/etc/passwd' is absolute"),
        ("C:\\data\\kws.npz", "is absolute"),
    ],
)
def test_error_dataset_path_outside_root(path, expected):
    message = _first(_errors(_spec(dataset={"name": "npz", "path": path})), "dataset.path")
    assert expected in message


def test_error_dataset_path_needed_or_forbidden():
    assert "needs a path" in _first(_errors(_spec(dataset={"name": "npz"})), "dataset.path")
    message = _first(_errors(_spec(dataset={"name": "digits", "path": "x"})), "dataset.path")
    assert "'x'" in message


def test_error_power_of_2_with_wide_bw_w():
    errors = _errors(_spec(search_space={"bw_w": {"type": "int", "low": 2, "high": 12}}))
    message = _first(errors, "search_space.bw_w")
    assert "bw_w reaches 12 while power_of_2 can be true" in message


def test_wide_bw_w_without_power_of_2():
    spec = load_spec(
        _spec(search_space={"bw_w": {"type": "int", "low": 2, "high": 12}, "power_of_2": False})
    )
    assert spec.resolved_search_space()["bw_w"].high == 12


def test_error_low_above_high():
    errors = _errors(_spec(search_space={"bw_f": {"type": "int", "low": 8, "high": 2}}))
    assert _first(errors, "search_space.bw_f") == (
        "low must be at most high, but got low=8, high=2"
    )


def test_error_grid_with_float_dimension():
    errors = _errors(
        _spec(
            sampler={"name": "grid"},
            search_space={"noise_prob": 0.8, "lr": {"type": "float", "low": 0.001, "high": 0.01}},
        )
    )
    message = _first(errors, "search_space.lr")
    assert "sampler 'grid' needs discrete dimensions, but lr is a float range" in message


def test_error_grid_with_default_noise_prob():
    message = _first(_errors(_spec(sampler={"name": "grid"})), "search_space.noise_prob")
    assert "noise_prob" in message


def test_error_pruner_with_two_objectives():
    message = _first(_errors(_spec(pruner={"name": "median"})), "pruner")
    assert "'median'" in message
    assert (
        "Optuna cannot prune multi-objective studies; use pruner 'none' or a single objective"
    ) in message


@pytest.mark.parametrize(
    ("objectives", "expected"),
    [
        (["weight_memory"], "must contain 'accuracy', but got ['weight_memory']"),
        (["accuracy", "bitops", "accuracy"], "'accuracy' appears 2 times"),
    ],
)
def test_error_objectives(objectives, expected):
    assert expected in _first(_errors(_spec(objectives=objectives)), "objectives")


def test_error_unknown_objective():
    message = _first(_errors(_spec(objectives=["accuracy", "latency"])), "objectives.1")
    assert "'latency'" in message


def test_error_missing_n_trials_and_timeout():
    data = _spec()
    del data["n_trials"]
    message = _first(_errors(data), "n_trials")
    assert "n_trials and timeout are both missing" in message


def test_error_name_with_slash():
    message = _first(_errors(_spec(name="runs/a")), "name")
    assert "'runs/a'" in message


def test_error_unknown_search_space_key():
    message = _first(_errors(_spec(search_space={"bw_x": 4})), "search_space.bw_x")
    assert "unknown search_space key 'bw_x'" in message
    assert "bw_w, bw_f, bw_b, bw_acc" in message


@pytest.mark.parametrize(
    ("key", "dimension", "expected"),
    [
        (
            "bw_w",
            {"type": "float", "low": 2, "high": 8},
            "a float range does not fit; use type int",
        ),
        ("power_of_2", {"type": "int", "low": 0, "high": 1}, "use type categorical"),
        ("noise_prob", {"type": "int", "low": 0, "high": 1}, "use type float"),
        ("bw_w", 1, "contains 1"),
        ("bw_acc", {"type": "int", "low": 8, "high": 40}, "contains 40"),
        ("noise_prob", {"type": "float", "low": 0.5, "high": 1.5}, "contains 1.5"),
        ("power_of_2", 1, "true or false, but the dimension contains 1"),
        ("weight_scale", "pow4", "'pow4'"),
        ("optimizer", {"type": "categorical", "choices": ["adam", "rmsprop"]}, "'rmsprop'"),
        ("lr", {"type": "float", "low": 0, "high": 0.1}, "contains 0.0"),
        (
            "lr",
            {"type": "float", "low": 0.001, "high": 0.1, "log": True, "step": 0.001},
            "takes no step",
        ),
        ("batch_size", {"type": "int", "low": 16, "high": 64, "step": 32}, "set high to 48"),
        ("bw_f", {"type": "categorical", "choices": [4, 4]}, "4 appears more than once"),
        ("bw_f", [4, 8], "[4, 8]"),
        ("bw_f", {"low": 4, "high": 8}, "needs 'type'"),
    ],
)
def test_error_bad_dimension(key, dimension, expected):
    message = _first(_errors(_spec(search_space={key: dimension})), f"search_space.{key}")
    assert expected in message


@pytest.mark.parametrize(
    ("section", "value", "path", "expected"),
    [
        ("options", {"words": ["yes", 3]}, "dataset.options.words", "option 'words' must be"),
        ("options", {"fraction": float("nan")}, "dataset.options.fraction", "but got nan"),
        ("params", {"channels": [8, [16]]}, "model.params.channels", "but got [8, [16]]"),
    ],
)
def test_error_free_form_values(section, value, path, expected):
    data = _spec(
        dataset={"name": "npz", "path": "kws.npz", "options": {}},
        model={"name": "mlp", "params": {}},
    )
    data["dataset" if section == "options" else "model"][section] = value
    errors = _errors(data)
    assert [error_path for error_path, _ in errors] == [path]
    assert expected in errors[0][1]


def test_error_qconfig_config_value_not_scalar():
    qconfig = {"_target_": HANNAH_TARGET, "config": {"bw_w": [8], "bw_f": 8}}
    message = _first(
        _errors(_spec(model={"name": "digits_cnn", "qconfig": qconfig})),
        "model.qconfig.config.bw_w",
    )
    assert "but got [8]" in message


def test_yaml_dates_stay_strings():
    spec = load_spec(
        "name: d\ndataset: {name: npz, path: a.npz, options: {day: 2024-01-31}}\n"
        "model: {name: mlp}\nn_trials: 1\n"
    )
    assert spec.dataset.options["day"] == "2024-01-31"


def test_error_json_nan(tmp_path):
    path = tmp_path / "study.json"
    path.write_text(json.dumps(_spec(timeout=1)).replace('"timeout": 1', '"timeout": NaN'))
    message = _first(_errors(path), "")
    assert "not valid JSON" in message
    assert "NaN" in message


def test_error_sampler_without_name():
    assert _first(_errors(_spec(sampler={"population_size": 8})), "sampler") == (
        "required key 'name' is missing"
    )


def test_error_unknown_model():
    message = _first(_errors(_spec(model={"name": "resnet50"})), "model.name")
    assert "'resnet50'" in message
    assert "digits_cnn" in message


def test_error_wrong_scalar_type():
    message = _first(_errors(_spec(seed="1")), "seed")
    assert "'1'" in message


def test_error_yaml_syntax(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ndataset: {name: digits\n")
    message = _first(_errors(path), "")
    assert "broken.yaml" in message
    assert "not valid YAML" in message


def test_error_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    message = _first(_errors(str(path)), "")
    assert f"'{path}' not found" in message


def test_error_duplicate_keys():
    assert "duplicate key 'name'" in _first(_errors("name: a\nname: b\n"), "")
    assert "duplicate key 'name'" in _first(_errors('{"name": "a", "name": "b"}'), "")


def test_error_yaml_alias():
    text = "name: &n a\nalias: *n\n"
    assert "aliases" in _first(_errors(text), "")


def test_error_top_level_not_mapping():
    assert "mapping" in _first(_errors("- a\n- b\n"), "")


def test_several_errors_reported_together():
    errors = _errors(_spec(name="a b", seed=-1, training={"epochs": 0}))
    assert [path for path, _ in errors] == ["name", "seed", "training.epochs"]


def test_spec_is_frozen():
    spec = load_spec(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"
    assert isinstance(spec, StudySpec)
