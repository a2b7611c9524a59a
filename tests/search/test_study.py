from __future__ import annotations

import math

import optuna
import pytest
import torch
from torch import nn

from qsearch.quant import get_qat_qconfig
from qsearch.search import StudyConflictError, run_study
from qsearch.search.export import export_trial, load_exported_trial
from qsearch.search.results import dominates
from qsearch.search.spec import load_spec
from qsearch.search.study import load_splits
from qsearch.training import evaluate


def _signed(trial):
    return [-trial.values["accuracy"], trial.values["weight_memory"]]


def test_run_study_records_every_metric(spec, storage):
    result = run_study(spec, storage=storage)

    assert len(result.trials) == 4
    for trial in result.trials:
        assert trial.state == "COMPLETE"
        for key in (
            "val_accuracy",
            "test_accuracy",
            "weight_memory_bits",
            "weight_memory_bytes",
            "bitops",
            "macs",
            "parameters",
            "train_seconds",
            "accuracy_drop",
        ):
            assert key in trial.metrics, key
        assert len(trial.curve) == 2
        assert trial.metrics["weight_memory_bytes"] == trial.metrics["weight_memory_bits"] / 8
    assert result.baseline["val_accuracy"] > 0.5
    assert result.baseline["weight_memory_bits"] == 32 * result.baseline["parameters"]


def test_run_study_pareto_front_non_dominated(spec, storage):
    result = run_study(spec, storage=storage)

    front = result.pareto_front
    assert front
    for trial in front:
        for other in result.trials:
            assert not dominates(_signed(other), _signed(trial))
    assert result.best_trial.metrics["val_accuracy"] == max(
        t.metrics["val_accuracy"] for t in result.trials
    )


def test_run_study_reproducible(spec, tmp_path):
    first = run_study(spec, storage=f"sqlite:///{tmp_path / 'a.db'}")
    second = run_study(spec, storage=f"sqlite:///{tmp_path / 'b.db'}")

    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.metrics["val_accuracy"] for t in first.trials] == [
        t.metrics["val_accuracy"] for t in second.trials
    ]
    assert [t.curve for t in first.trials] == [t.curve for t in second.trials]


def test_run_study_resumes_to_budget(spec, storage):
    spec["n_trials"] = 2
    run_study(spec, storage=storage)
    result = run_study(spec, storage=storage, n_trials=3)

    assert len(result.trials) == 3
    again = run_study(spec, storage=storage, n_trials=3)
    assert len(again.trials) == 3


def test_run_study_conflicting_spec_rejected(spec, storage):
    spec["n_trials"] = 1
    run_study(spec, storage=storage)
    spec["training"]["epochs"] = 3

    with pytest.raises(StudyConflictError) as error:
        run_study(spec, storage=storage)
    assert str(error.value) == (
        f"study 'tiny' already exists in {storage} with a different spec (changed: training); "
        "give the new spec another name, or delete the old study first with: "
        "qsearch delete tiny"
    )


def test_run_study_resume_samples_new_params(spec, storage):
    spec["n_trials"] = 3
    first = run_study(spec, storage=storage)
    resumed = run_study(spec, storage=storage, n_trials=6)

    old = [t.params for t in first.trials]
    new = [t.params for t in resumed.trials[3:]]
    assert len(new) == 3
    for params in new:
        assert params not in old


def test_run_study_failed_setup_keeps_name_free(spec, storage):
    spec["model"]["params"] = {"channels": [4]}
    with pytest.raises(ValueError, match="digits_cnn parameter 'channels'"):
        run_study(spec, storage=storage)
    with pytest.raises(KeyError):
        optuna.load_study(study_name="tiny", storage=storage)

    spec["model"]["params"] = {"channels": [4, 8]}
    spec["n_trials"] = 1
    assert len(run_study(spec, storage=storage).trials) == 1


def test_empty_study_takes_new_spec(spec, storage):
    from qsearch.search.study import open_study

    open_study(load_spec(spec), storage)
    spec["training"]["epochs"] = 1
    spec["n_trials"] = 1
    result = run_study(spec, storage=storage)

    assert len(result.trials[0].curve) == 1


def test_model_factory_returning_none_rejected(spec, storage):
    with pytest.raises(ValueError, match="the model factory returned NoneType"):
        run_study(spec, storage=storage, model_factory=lambda shape, classes, qconfig: None)


def test_run_study_infeasible_not_trained(spec, storage):
    spec["constraints"] = {"max_weight_memory_bytes": 100}
    spec["n_trials"] = 2
    result = run_study(spec, storage=storage)

    for trial in result.trials:
        assert trial.state == "COMPLETE"
        assert not trial.feasible
        assert trial.curve == []
        assert trial.values["accuracy"] == 0.0
        assert trial.infeasible_reason.startswith("weight memory ")
        assert trial.infeasible_reason.endswith(" exceeds 100 B")
    assert result.pareto_front == []
    assert result.best_trial is None

    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.trials[0].user_attrs["constraints"][0] > 0


def test_infeasible_reason_in_kib(spec, storage):
    spec["constraints"] = {"max_weight_memory_bytes": 2048}
    spec["search_space"].update({"bw_w": 8, "bw_f": 8, "power_of_2": False})
    spec["n_trials"] = 1
    result = run_study(spec, storage=storage)

    # digits_cnn with channels [4, 8]: 36 + 288 + 1280 weights at 8 bits, 22 biases at 8.
    assert result.trials[0].metrics["weight_memory_bits"] == 1626 * 8
    assert result.trials[0].infeasible_reason is None
    spec["name"] = "tiny2"
    spec["constraints"] = {"max_weight_memory_bytes": 1024}
    result = run_study(spec, storage=storage)
    assert result.trials[0].infeasible_reason == "weight memory 1.6 KiB exceeds 1.0 KiB"


class _NaNModel(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.linear = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


def test_run_study_nan_loss_fails_trial(spec, storage):
    spec["n_trials"] = 1
    result = run_study(
        spec,
        storage=storage,
        model_factory=lambda shape, classes, qconfig: _NaNModel(shape, classes),
    )

    trial = result.trials[0]
    assert trial.state == "FAIL"
    assert trial.fail_reason == "training loss became nan in epoch 1"
    assert trial.values is None


class _LateNaNModel(_NaNModel):
    # Finite for the first two epochs of the tiny spec (10 batches each), NaN after.
    def __init__(self, input_shape, num_classes):
        super().__init__(input_shape, num_classes)
        self.training_calls = 0

    def forward(self, x):
        if self.training:
            self.training_calls += 1
        out = self.linear(x.flatten(1))
        return out * float("nan") if self.training_calls > 20 else out


def test_run_study_failed_trial_keeps_curve(spec, storage):
    spec["n_trials"] = 1
    spec["training"]["epochs"] = 4
    result = run_study(
        spec,
        storage=storage,
        model_factory=lambda shape, classes, qconfig: _LateNaNModel(shape, classes),
    )

    trial = result.trials[0]
    assert trial.fail_reason == "training loss became nan in epoch 3"
    assert len(trial.curve) == 2


def test_run_study_user_dataset_and_model(spec, storage):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(200, 6, generator=generator) * 2 - 1
    y = (x[:, 0] > 0).long()
    data = {"x_train": x[:150], "y_train": y[:150], "x_val": x[150:], "y_val": y[150:]}

    def factory(input_shape, num_classes, qconfig):
        from qsearch.models import build_model

        return build_model(
            "mlp",
            input_shape=input_shape,
            num_classes=num_classes,
            qconfig=qconfig,
            params={"hidden": [8]},
        )

    spec["n_trials"] = 1
    spec["search_space"].update({"bw_w": 8, "bw_f": 8, "power_of_2": False})
    spec["training"] = {"epochs": 20, "batch_size": 32, "lr": 0.02}
    result = run_study(spec, storage=storage, dataset=data, model_factory=factory)

    trial = result.trials[0]
    assert trial.state == "COMPLETE"
    assert trial.metrics["val_accuracy"] > 0.8
    assert "test_accuracy" not in trial.metrics
    # mlp 6 -> 8 -> 2: 64 weights at 8 bits and 10 biases at 8 bits.
    assert trial.metrics["weight_memory_bits"] == 74 * 8


def test_grid_sampler_exhausts_space(spec, storage):
    spec["sampler"] = {"name": "grid"}
    spec["search_space"].update(
        {
            "bw_w": {"type": "categorical", "choices": [4, 8]},
            "bw_f": 8,
            "power_of_2": False,
        }
    )
    spec["n_trials"] = 5
    result = run_study(spec, storage=storage)

    assert sorted(t.params["bw_w"] for t in result.trials) == [4, 8]


def test_single_objective_reports_epochs(spec, storage):
    spec["objectives"] = ["accuracy"]
    spec["pruner"] = {"name": "median", "n_startup_trials": 1}
    spec["n_trials"] = 3
    run_study(spec, storage=storage)

    study = optuna.load_study(study_name="tiny", storage=storage)
    first = study.trials[0]
    assert sorted(first.intermediate_values) == [1, 2]
    assert first.intermediate_values[2] == first.value


def test_export_round_trip(spec, storage, tmp_path):
    spec["n_trials"] = 1
    result = run_study(spec, storage=storage)
    out = export_trial("tiny", 0, tmp_path / "export", storage=storage)

    exported = load_exported_trial(out)
    assert exported.qconfig_block["_target_"] == (
        "hannah.models.factory.qconfig.get_trax_qat_qconfig"
    )
    assert exported.qconfig_block["config"]["bw_w"] == result.trials[0].params["bw_w"]
    splits = load_splits(load_spec(spec))
    accuracy = evaluate(exported.model, splits.x_val, splits.y_val)
    assert accuracy == result.trials[0].metrics["val_accuracy"]


def test_export_unknown_trial(spec, storage, tmp_path):
    spec["n_trials"] = 1
    run_study(spec, storage=storage)

    with pytest.raises(LookupError, match=r"study 'tiny' has no trial 7; its trials are 0\.\.0"):
        export_trial("tiny", 7, tmp_path / "export", storage=storage)


@pytest.mark.slow
def test_digits_cnn_8bit_reaches_97_percent(spec, storage):
    spec["model"]["params"] = {}
    spec["search_space"] = {"bw_w": 8, "bw_f": 8, "bw_b": 8, "power_of_2": False, "noise_prob": 1.0}
    spec["training"] = {"epochs": 15, "batch_size": 64, "lr": 0.005}
    spec["n_trials"] = 1
    result = run_study(spec, storage=storage)

    assert result.trials[0].metrics["val_accuracy"] >= 0.97


def test_qconfig_of_trial_matches_params(spec, storage):
    spec["n_trials"] = 1
    result = run_study(spec, storage=storage)
    params = result.trials[0].params
    qconfig = get_qat_qconfig(
        {
            "bw_w": params["bw_w"],
            "bw_f": params["bw_f"],
            "bw_b": 8,
            "power_of_2": params["power_of_2"],
        }
    )
    assert qconfig.weight.bits == params["bw_w"]
