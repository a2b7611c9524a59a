"""Server caps on a valid spec: budget, epochs, model size and the dataset path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.caps import check_caps, max_epochs_of
from api.config import Settings
from qsearch.models import build_model
from qsearch.search.spec import load_spec
from tests.tiny_spec import tiny_spec


def caps(tmp_path: Path, **changes: Any) -> list[tuple[str, str]]:
    settings = Settings(storage_url="sqlite://", data_root=tmp_path, **changes)
    return check_caps(load_spec(tiny_spec("capped")), settings)


def spec_caps(spec: dict[str, Any], tmp_path: Path, **changes: Any) -> list[tuple[str, str]]:
    settings = Settings(storage_url="sqlite://", data_root=tmp_path, **changes)
    return check_caps(load_spec(spec), settings)


def test_tiny_spec_fits_default_caps(tmp_path: Path) -> None:
    assert caps(tmp_path) == []


def test_model_at_parameter_cap_fits(tmp_path: Path) -> None:
    model = build_model(
        "digits_cnn", input_shape=(1, 8, 8), num_classes=10, params={"channels": [4, 8]}
    )
    parameters = sum(parameter.numel() for parameter in model.parameters())

    assert caps(tmp_path, max_model_parameters=parameters) == []
    assert caps(tmp_path, max_model_parameters=parameters - 1) == [
        (
            "model.params",
            f"the model must have at most {parameters - 1} parameters on this server, but these "
            f"params give {parameters}",
        )
    ]


def test_max_epochs_of_searched_epochs() -> None:
    spec = load_spec(
        tiny_spec(
            "searched", search_space={"epochs": {"type": "categorical", "choices": [3, 9, 5]}}
        )
    )

    assert max_epochs_of(spec) == 9


def test_max_epochs_of_fixed_training() -> None:
    assert max_epochs_of(load_spec(tiny_spec("fixed"))) == 2


def test_npz_shape_from_header(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "data.npz",
        x_train=rng.normal(size=(12, 6)).astype(np.float32),
        y_train=np.array([0, 1, 2] * 4),
        x_val=rng.normal(size=(3, 6)).astype(np.float32),
        y_val=np.array([0, 1, 4]),
    )
    spec = tiny_spec(
        "npz",
        dataset={"name": "npz", "path": "data.npz"},
        model={"name": "mlp", "params": {"hidden": [8]}},
    )
    # (6 inputs + 1) * 8 hidden + (8 + 1) * 5 classes, the largest label being 4.
    parameters = 7 * 8 + 9 * 5

    assert spec_caps(spec, tmp_path, max_model_parameters=parameters) == []
    assert spec_caps(spec, tmp_path, max_model_parameters=parameters - 1)[0][1].endswith(
        f"but these params give {parameters}"
    )


def test_unreadable_npz_rejected(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    spec = tiny_spec("npz", dataset={"name": "npz", "path": "broken.npz"}, model={"name": "mlp"})

    [(loc, message)] = spec_caps(spec, tmp_path)

    assert loc == "dataset.path"
    assert message.startswith("dataset 'broken.npz' cannot be read: ")


def test_speech_commands_classes_from_folders(tmp_path: Path) -> None:
    for word in ("yes", "no", "_background_noise_"):
        (tmp_path / "speech" / word).mkdir(parents=True)
    spec = tiny_spec(
        "kws", dataset={"name": "speech_commands", "path": "speech"}, model={"name": "tc_res8"}
    )
    model = build_model("tc_res8", input_shape=(40, 101), num_classes=2)
    parameters = sum(parameter.numel() for parameter in model.parameters())

    assert spec_caps(spec, tmp_path, max_model_parameters=parameters) == []


def test_missing_data_root_rejected(tmp_path: Path) -> None:
    spec = tiny_spec("npz", dataset={"name": "npz", "path": "data.npz"}, model={"name": "mlp"})

    assert spec_caps(spec, tmp_path / "missing") == [
        ("dataset.path", "the server has no data root folder; ask its operator")
    ]


@pytest.mark.parametrize("width", [10**30, 1e300])
def test_absurd_model_params_rejected(tmp_path: Path, width: Any) -> None:
    spec = tiny_spec(
        "huge",
        model={"name": "tc_res8", "params": {"width_multiplier": width}},
        dataset={"name": "speech_commands", "path": "speech"},
    )
    (tmp_path / "speech" / "yes").mkdir(parents=True)

    [(loc, _message)] = spec_caps(spec, tmp_path)

    assert loc == "model.params"
