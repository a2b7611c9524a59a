"""Ten workers starting at the same instant against an empty PostgreSQL database."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import sqlalchemy as sa

from qsearch.service import registry

from .conftest import submit, trials_by_state, wait_for

# Each process imports everything first and then waits for the "go" file,
# so all of them create the schema (Optuna's tables, the registry, the
# weights table at the first trial) at the same moment. The study is
# registered once every worker exists. Ten processes on two cores starve
# each other's heartbeat thread for seconds, hence the long grace period.
START_WORKER = textwrap.dedent(
    """
    import logging, pathlib, sys, time
    import torch
    from qsearch.service.worker import Worker, WorkerSettings

    def wait_for_file(path):
        while not path.exists():
            time.sleep(0.005)

    url, folder, index = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("qsearch").setLevel(logging.INFO)
    (folder / f"ready-{index}").touch()
    wait_for_file(folder / "go")
    settings = WorkerSettings(poll_interval_s=0.1, heartbeat_interval_s=5, grace_period_s=60)
    worker = Worker(url, settings=settings)
    (folder / f"created-{index}").touch()
    wait_for_file(folder / "study")
    print(worker.run(exit_when_idle=True))
    """
)


def test_ten_workers_start_at_once_on_empty_database(empty_pg_url, tmp_path):
    n_workers = 10
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", START_WORKER, empty_pg_url, str(tmp_path), str(index)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(n_workers)
    ]
    try:
        wait_for(
            lambda: len(list(tmp_path.glob("ready-*"))) == n_workers,
            120,
            "not every worker got ready",
        )
        (tmp_path / "go").touch()
        wait_for(
            lambda: (
                len(list(tmp_path.glob("created-*"))) == n_workers
                or any(process.poll() is not None for process in processes)
            ),
            60,
            "not every worker was created",
        )
        submit(empty_pg_url, "crowd", n_trials=n_workers, epochs=1)
        (tmp_path / "study").touch()
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    assert sum(int(stdout) for stdout, _ in outputs) == n_workers
    logs = "".join(stderr for _, stderr in outputs)
    assert logs.count("training the float baseline") == 1
    assert "Traceback" not in logs
    trials = trials_by_state(empty_pg_url, "crowd")
    assert list(trials) == ["COMPLETE"]
    assert len(trials["COMPLETE"]) == n_workers
    assert registry.get_study(empty_pg_url, "crowd").status == registry.COMPLETED

    engine = sa.create_engine(empty_pg_url)
    try:
        with engine.connect() as connection:
            versions = connection.execute(sa.text("SELECT count(*) FROM version_info")).scalar()
            stamps = connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar()
            weights = connection.execute(
                sa.text("SELECT count(*) FROM qsearch_trial_weights")
            ).scalar()
    finally:
        engine.dispose()
    assert versions == 1
    assert stamps == 1
    assert weights == n_workers
