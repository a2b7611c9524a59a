"""Export a trial (qconfig, spec, metrics, weights) to a folder, and load it back."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from torch import nn

from qsearch.models import build_model
from qsearch.quant import get_qat_qconfig, qconfig_from_target
from qsearch.search.results import trial_record
from qsearch.search.spec import StudySpec, load_spec
from qsearch.search.study import DATA_ATTR
from qsearch.storage import DEFAULT_STORAGE, load_state_dict, open_optuna_storage

logger = logging.getLogger(__name__)

# Existing hannah configurations name this factory; qsearch accepts it as an alias.
UPSTREAM_TARGET = "hannah.models.factory.qconfig.get_trax_qat_qconfig"
QCONFIG_FILE = "qconfig.yaml"
SPEC_FILE = "spec.yaml"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True)
class ExportedTrial:
    """A trial loaded back from an export folder."""

    spec: StudySpec
    qconfig_block: dict[str, Any]
    metrics: dict[str, Any]
    model: nn.Module


def trial_qconfig_block(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """Return the trial's qconfig in the upstream `_target_` + `config` format."""
    block = spec.qconfig_block_for(params)
    if not spec.is_torch_qconfig:
        block = {**block, "_target_": UPSTREAM_TARGET}
    return block


def export_trial(
    name: str, number: int, out_dir: str | os.PathLike, storage: str | None = None
) -> Path:
    """Write a trained trial's qconfig, spec, metrics and state_dict into `out_dir`."""
    storage_url = storage or DEFAULT_STORAGE
    study = optuna.load_study(study_name=name, storage=open_optuna_storage(storage_url))
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise LookupError(
            f"study {name!r} has no trial {number}; its trials are 0..{len(trials) - 1}."
        )
    spec = load_spec(study.user_attrs["spec"])
    record = trial_record(trials[number], spec.objectives)
    state_dict = load_state_dict(storage_url, name, number)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    block = trial_qconfig_block(spec, record.params)
    (out / QCONFIG_FILE).write_text(yaml.safe_dump({"qconfig": block}, sort_keys=False))
    (out / SPEC_FILE).write_text(yaml.safe_dump(spec.to_json_dict(), sort_keys=False))
    data = study.user_attrs.get(DATA_ATTR, {})
    metrics = {"study": name, **data, **record.to_dict()}
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    torch.save(state_dict, out / WEIGHTS_FILE)
    logger.info("exported trial %d of study %s to %s", number, name, out)
    return out


def load_exported_trial(folder: str | os.PathLike) -> ExportedTrial:
    """Rebuild the QAT model of an exported trial with its trained weights."""
    folder = Path(folder)
    spec = load_spec(folder / SPEC_FILE)
    block = yaml.safe_load((folder / QCONFIG_FILE).read_text())["qconfig"]
    metrics = json.loads((folder / METRICS_FILE).read_text())
    state_dict = torch.load(folder / WEIGHTS_FILE, weights_only=True)

    if spec.is_torch_qconfig:
        qconfig = qconfig_from_target(block)
    else:
        qconfig = get_qat_qconfig(block["config"])
    missing = [key for key in ("input_shape", "num_classes") if key not in metrics]
    if missing:
        raise ValueError(f"{folder / METRICS_FILE} lacks {missing[0]!r}; export the trial again.")
    model = build_model(
        spec.model.name,
        input_shape=tuple(metrics["input_shape"]),
        num_classes=metrics["num_classes"],
        qconfig=qconfig,
        params=spec.model.params,
    )
    model.load_state_dict(state_dict)
    model.eval()
    return ExportedTrial(spec=spec, qconfig_block=block, metrics=metrics, model=model)
