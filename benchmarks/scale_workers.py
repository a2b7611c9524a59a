"""Trials per minute of the quick digits study with 1 and 2 worker processes.

For each storage (PostgreSQL, SQLite) and worker count, the benchmark
creates a fresh database, creates studies/digits_quick.yaml in it and
trains its float baseline (not timed), starts N `qsearch worker`
processes with one torch thread each (OMP_NUM_THREADS=1), and registers
the study once every worker is polling, so that all of them start
together. Throughput is the number of trials divided by the time from
the first trial's start to the last trial's completion, taken from the
trials' own timestamps: process start-up is not timed. Each round runs
every worker count back to back, in reverse order every other round, and
the speed-up is the median over rounds of the ratio within a round:
the machine's speed drifts by about 10 % between runs (other tenants of
the host), more than the effects measured, and runs close in time share it.

    .venv/bin/python benchmarks/scale_workers.py [--n-trials 24] [--rounds 4] [--workers 1 2]

PostgreSQL: a temporary database on the server that --postgres-admin
(a libpq connection string) reaches, dropped afterwards.
Target: 2 workers reach at least 1.8 times the throughput of 1 worker.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from qsearch.search.results import trial_record
from qsearch.search.spec import load_spec
from qsearch.search.study import builtin_model_factory, ensure_baseline, load_splits, open_study
from qsearch.service import registry
from qsearch.service.worker import WORKER_ATTR

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "studies" / "digits_quick.yaml"
TARGET_SPEED_UP = 1.8
WORKER_ENV = {"OMP_NUM_THREADS": "1", "QSEARCH_POLL_INTERVAL": "0.1"}


@contextlib.contextmanager
def postgres_database(admin: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    name = f"qsearch_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        user, host, port = connection.info.user, connection.info.host, connection.info.port
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{folder}/qsearch.db"


def prepare_study(url: str, n_trials: int) -> tuple[str, dict]:
    """Create the study with its float baseline; return its name and registry spec."""
    spec = load_spec(SPEC).model_copy(update={"n_trials": n_trials})
    splits = load_splits(spec)
    study = open_study(spec, url)
    ensure_baseline(study, spec, splits, builtin_model_factory(spec))
    return spec.name, spec.to_json_dict()


@dataclass(frozen=True)
class Run:
    """One run's throughput and where a trial's time went, as medians over its trials.

    `outside_train_s` is a trial's time outside `train` (sampling, storage
    writes, test evaluation, saving the weights), and `gap_s` the time
    from a worker's trial completion to the start of its next trial.
    """

    trials_per_min: float
    train_s: float
    outside_train_s: float
    gap_s: float


def run_workers(url: str, n_workers: int, n_trials: int, log_dir: Path) -> Run:
    """Run the study with `n_workers` worker processes and measure it."""
    name, spec_json = prepare_study(url, n_trials)
    registry.create_tables(url)
    logs = [log_dir / f"worker-{n_workers}-{index}.log" for index in range(n_workers)]
    workers = []
    for log in logs:
        with log.open("wb") as handle:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "qsearch.cli", "worker", "--storage", url],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **WORKER_ENV},
                )
            )
    try:
        while not all("started on" in log.read_text() for log in logs):
            time.sleep(0.1)
        spec = load_spec(spec_json)
        registry.submit_study(url, name, spec_json, spec.fingerprint(), n_trials)
        while registry.get_study(url, name).status != registry.COMPLETED:
            if any(worker.poll() is not None for worker in workers):
                raise RuntimeError(f"a worker exited early; see the logs in {log_dir}")
            # The trials' own timestamps are measured, not this loop, so a
            # slow poll costs no accuracy and leaves the cores to the workers.
            time.sleep(1.0)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)

    trials = optuna.load_study(study_name=name, storage=url).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,)
    )
    if len(trials) != n_trials:
        raise RuntimeError(f"expected {n_trials} complete trials, found {len(trials)}")
    started = min(trial.datetime_start for trial in trials)
    completed = max(trial.datetime_complete for trial in trials)
    durations = {t.number: (t.datetime_complete - t.datetime_start).total_seconds() for t in trials}
    train = {t.number: trial_record(t, spec.objectives).metrics["train_seconds"] for t in trials}
    by_worker: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in sorted(trials, key=lambda t: t.datetime_start):
        by_worker.setdefault(trial.user_attrs[WORKER_ATTR], []).append(trial)
    gaps = [
        (later.datetime_start - earlier.datetime_complete).total_seconds()
        for runs in by_worker.values()
        for earlier, later in itertools.pairwise(runs)
    ]
    return Run(
        trials_per_min=n_trials / ((completed - started).total_seconds() / 60),
        train_s=statistics.median(train.values()),
        outside_train_s=statistics.median(durations[n] - train[n] for n in durations),
        gap_s=statistics.median(gaps) if gaps else 0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n-trials",
        type=int,
        default=None,
        help="trials per run (default: the spec's n_trials, 24)",
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="rounds of runs (default: 4); the speed-up is the median over rounds",
    )
    parser.add_argument(
        "--backends", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"]
    )
    parser.add_argument(
        "--postgres-admin",
        default="host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        help="libpq connection string of an administrative PostgreSQL database; the "
        "benchmark creates its own database on that server and drops it afterwards",
    )
    args = parser.parse_args()
    if args.n_trials is None:
        args.n_trials = load_spec(SPEC).n_trials
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} cores, {args.n_trials} trials per run, {args.rounds} rounds")
    best: dict[tuple[str, int], Run] = {}
    # (backend, workers) -> speed-up of each round against that round's first worker count.
    speed_ups: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as log_dir:
        for round_index in range(args.rounds):
            for backend in args.backends:
                # Odd rounds run the worker counts in reverse, so a machine
                # that speeds up or slows down favours neither count.
                order = args.workers if round_index % 2 == 0 else args.workers[::-1]
                runs: dict[int, Run] = {}
                for n_workers in order:
                    database = (
                        postgres_database(args.postgres_admin)
                        if backend == "postgresql"
                        else sqlite_database()
                    )
                    load = os.getloadavg()[0]
                    with database as url:
                        run = run_workers(url, n_workers, args.n_trials, Path(log_dir))
                    print(
                        f"round {round_index + 1}: {backend}, {n_workers} workers: "
                        f"{run.trials_per_min:.1f} trials/min, median training "
                        f"{run.train_s:.2f} s and outside training "
                        f"{run.outside_train_s * 1000:.0f} ms per trial, "
                        f"{run.gap_s * 1000:.0f} ms between trials, "
                        f"load average {load:.2f} before",
                        flush=True,
                    )
                    key = (backend, n_workers)
                    if key not in best or run.trials_per_min > best[key].trials_per_min:
                        best[key] = run
                    runs[n_workers] = run
                reference = runs[args.workers[0]].trials_per_min
                for n_workers, run in runs.items():
                    key = (backend, n_workers)
                    speed_ups.setdefault(key, []).append(run.trials_per_min / reference)

    print()
    print(
        "| storage | workers | median speed-up | speed-up per round | best trials/min "
        "| training s/trial | outside training ms/trial | ms between trials |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for backend in args.backends:
        for n_workers in args.workers:
            run = best[(backend, n_workers)]
            ratios = speed_ups[(backend, n_workers)]
            rounds = ", ".join(f"{value:.2f}" for value in ratios)
            print(
                f"| {backend} | {n_workers} | {statistics.median(ratios):.2f} | {rounds} | "
                f"{run.trials_per_min:.1f} | {run.train_s:.2f} | "
                f"{run.outside_train_s * 1000:.0f} | {run.gap_s * 1000:.0f} |"
            )
    print()
    for backend in args.backends:
        median = statistics.median(speed_ups[(backend, args.workers[-1])])
        verdict = "PASS" if median >= TARGET_SPEED_UP else "FAIL"
        print(
            f"{verdict}: {backend}, {args.workers[-1]} workers at {median:.2f}x the throughput "
            f"of {args.workers[0]} (target {TARGET_SPEED_UP}x, median over rounds)"
        )


if __name__ == "__main__":
    main()
