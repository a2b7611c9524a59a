"""The qsearch command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from tests.tiny_spec import tiny_spec

QSEARCH = [sys.executable, "-m", "qsearch.cli"]

TINY_SPEC = tiny_spec("cli_tiny", n_trials=3)


def _write_spec(tmp_path: Path, **changes) -> Path:
    spec = {**TINY_SPEC, **changes}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(args, cwd, **kwargs):
    env = {**os.environ, "QSEARCH_TEST_THREADS": "1"}
    return subprocess.run(
        [*QSEARCH, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env, **kwargs
    )


def test_cli_run_prints_pareto_front(tmp_path):
    spec = _write_spec(tmp_path)
    result = _run(["run", str(spec), "--no-progress"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Study cli_tiny: 3 trials done of 3" in result.stdout
    assert "Pareto front over accuracy (maximize), weight_memory (minimize):" in result.stdout
    assert "Best trial: " in result.stdout
    # The default storage is qsearch.db in the working directory.
    assert (tmp_path / "qsearch.db").exists()


def test_cli_run_n_trials_override(tmp_path):
    spec = _write_spec(tmp_path)
    storage = f"sqlite:///{tmp_path / 'other.db'}"
    result = _run(
        ["run", str(spec), "--storage", storage, "--n-trials", "1", "--no-progress"], cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="cli_tiny", storage=storage)
    assert len(study.trials) == 1


def test_cli_show_json(tmp_path):
    spec = _write_spec(tmp_path)
    assert _run(["run", str(spec), "--no-progress"], cwd=tmp_path).returncode == 0
    result = _run(["show", "cli_tiny", "--format", "json"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "cli_tiny"
    assert len(data["trials"]) == 3
    assert data["objectives"] == ["accuracy", "weight_memory"]
    assert data["directions"] == ["maximize", "minimize"]
    assert data["best_trial"]["number"] in [t["number"] for t in data["trials"]]
    assert data["pareto_front"]


def test_cli_show_unknown_study(tmp_path):
    spec = _write_spec(tmp_path, n_trials=1)
    assert _run(["run", str(spec), "--no-progress"], cwd=tmp_path).returncode == 0
    result = _run(["show", "nope"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: study 'nope' not found; studies in this storage: cli_tiny."
    )


def test_cli_export_writes_files(tmp_path):
    spec = _write_spec(tmp_path, n_trials=1)
    assert _run(["run", str(spec), "--no-progress"], cwd=tmp_path).returncode == 0
    result = _run(["export", "cli_tiny", "--trial", "0", "--out", "out"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["metrics.json", "model.pt", "qconfig.yaml", "spec.yaml"]
    qconfig = yaml.safe_load((tmp_path / "out" / "qconfig.yaml").read_text())["qconfig"]
    assert qconfig["_target_"] == "hannah.models.factory.qconfig.get_trax_qat_qconfig"
    assert qconfig["config"]["bw_b"] == 8


def test_cli_invalid_spec_message(tmp_path):
    spec = _write_spec(tmp_path, training={"epochz": 2})
    result = _run(["run", str(spec)], cwd=tmp_path)

    assert result.returncode == 2
    assert "training.epochz" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_ctrl_c_records_failed_trial_and_resumes(tmp_path):
    spec = _write_spec(tmp_path, n_trials=2, training={"epochs": 60, "batch_size": 256})
    storage = f"sqlite:///{tmp_path / 'q.db'}"
    env = {**os.environ, "QSEARCH_TEST_THREADS": "1"}
    process = subprocess.Popen(
        [*QSEARCH, "run", str(spec), "--storage", storage, "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        running = False
        while time.monotonic() < deadline and not running:
            time.sleep(0.1)
            try:
                study = optuna.load_study(study_name="cli_tiny", storage=storage)
            except KeyError:
                continue
            running = any(t.state.name == "RUNNING" for t in study.trials)
        assert running, "no trial started within 120 s"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 130
    assert "Interrupted: the running trial is recorded as failed" in stderr
    study = optuna.load_study(study_name="cli_tiny", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL"]
    assert study.trials[0].user_attrs["fail_reason"] == "interrupted"
    assert "baseline" in study.user_attrs

    # The interrupted trial does not count: one more trial completes a budget of 1.
    rerun = _run(
        ["run", str(spec), "--storage", storage, "--n-trials", "1", "--no-progress"], cwd=tmp_path
    )
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="cli_tiny", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_dashboard_serves_study(tmp_path):
    spec = _write_spec(tmp_path, n_trials=1)
    assert _run(["run", str(spec), "--no-progress"], cwd=tmp_path).returncode == 0
    port = _free_port()
    process = subprocess.Popen(
        [*QSEARCH, "dashboard", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/studies", timeout=5
                ) as response:
                    body = json.load(response)
            except OSError:
                time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert body is not None, "the dashboard did not answer within 60 s"
    names = [study["study_name"] for study in body["study_summaries"]]
    assert names == ["cli_tiny"]


def test_cli_missing_spec_file(tmp_path):
    result = _run(["run", "studies/digits_quik"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: study spec file 'studies/digits_quik' not found; give a .yaml or .json file."
    )


def test_cli_bad_storage_url(tmp_path):
    spec = _write_spec(tmp_path, n_trials=1)
    result = _run(["run", str(spec), "--storage", "notaurl", "--no-progress"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot use the storage: ")
    assert "Traceback" not in result.stderr


def test_cli_delete_study(tmp_path):
    spec = _write_spec(tmp_path, n_trials=1)
    assert _run(["run", str(spec), "--no-progress"], cwd=tmp_path).returncode == 0
    result = _run(["delete", "cli_tiny"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deleted study cli_tiny"
    again = _run(["delete", "cli_tiny"], cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == "error: study 'cli_tiny' not found in sqlite:///qsearch.db"


@pytest.mark.parametrize(
    "command",
    [
        ["show", "x"],
        ["export", "x", "--trial", "0", "--out", "out"],
        ["delete", "x"],
    ],
)
def test_cli_missing_database_not_created(tmp_path, command):
    result = _run([*command, "--storage", "sqlite:///typo.db"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: no database at 'typo.db' (storage sqlite:///typo.db); give the URL of the "
        "database that holds the study with --storage"
    )
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///file:m?mode=memory&uri=true"],
)
def test_cli_in_memory_storage_rejected(tmp_path, url):
    result = _run(["show", "x", "--storage", url], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: storage {url} is an in-memory database, which contains no studies; give the "
        "URL of the database file with --storage"
    )


def test_cli_show_leaves_foreign_database_alone(tmp_path):
    other = tmp_path / "other.db"
    other.write_bytes(b"")
    uri = f"sqlite:///file:{tmp_path / 'missing.db'}?uri=true"

    foreign = _run(["show", "x", "--storage", f"sqlite:///{other}"], cwd=tmp_path)
    missing = _run(["show", "x", "--storage", uri], cwd=tmp_path)

    assert foreign.returncode == 2
    assert foreign.stderr.strip() == (
        f"error: storage sqlite:///{other} contains no qsearch studies (it has no Optuna "
        "tables); give the URL of the database that holds the study with --storage"
    )
    assert other.read_bytes() == b""
    assert missing.returncode == 2
    assert "no database at" in missing.stderr
    assert not (tmp_path / "missing.db").exists()
