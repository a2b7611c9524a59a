"""Share of trial time spent outside training on the quick digits study.

Runs studies/digits_quick.yaml in one process on a fresh SQLite file and
times, for every trial, the whole `study.optimize` call and the part spent
inside `qsearch.training.train` (forward, backward, optimizer step and the
per-epoch validation pass), less the per-epoch callback. The rest is
overhead: sampling, model and qconfig construction, cost metrics,
constraint checks, storage writes (the per-epoch curve included), test
evaluation and saving the weights.

    .venv/bin/python benchmarks/search_overhead.py [--n-trials N] [--threads T]

Target: overhead under 5 % of trial time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch

import qsearch.search.objective as objective_module
from qsearch.search.spec import load_spec
from qsearch.search.study import run_study

SPEC = Path(__file__).resolve().parent.parent / "studies" / "digits_quick.yaml"
TARGET = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=None, help="trials (default: the spec's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    training_seconds: list[float] = []
    original_train = objective_module.train

    def timed_train(*args, **kwargs):
        # The per-epoch callback writes the learning curve to the storage and
        # asks the pruner, which is bookkeeping: its time counts as overhead.
        callback = kwargs.get("on_epoch")
        callback_seconds = [0.0]

        def timed_callback(result):
            started = time.perf_counter()
            try:
                callback(result)
            finally:
                callback_seconds[0] += time.perf_counter() - started

        if callback is not None:
            kwargs["on_epoch"] = timed_callback
        started = time.perf_counter()
        try:
            return original_train(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            training_seconds.append(elapsed - callback_seconds[0])

    # A trial's time runs from one progress callback to the next, so it
    # includes Optuna's ask and tell and the budget check.
    trial_seconds: list[float] = []
    objective_module.train = timed_train
    spec = load_spec(SPEC)
    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{Path(folder) / 'overhead.db'}"
        last = [time.perf_counter()]

        seen = [0]

        def progress(done: int, total: int | None, study: optuna.Study) -> None:
            now = time.perf_counter()
            # run_study also reports once before its first trial.
            if done > seen[0]:
                trial_seconds.append(now - last[0])
                seen[0] = done
            last[0] = now

        def run() -> None:
            # The float baseline is trained once per study; it is not a trial.
            from qsearch.search import study as study_module

            original_baseline = study_module.ensure_baseline

            def timed_baseline(*args, **kwargs):
                result = original_baseline(*args, **kwargs)
                training_seconds.clear()
                last[0] = time.perf_counter()
                return result

            study_module.ensure_baseline = timed_baseline
            try:
                run_study(spec, storage, n_trials=args.n_trials, progress=progress)
            finally:
                study_module.ensure_baseline = original_baseline

        run()
    objective_module.train = original_train

    total = sum(trial_seconds)
    training = sum(training_seconds)
    overhead = total - training
    share = overhead / total
    per_trial = [t - s for t, s in zip(trial_seconds, training_seconds, strict=False)]
    print(f"study: {spec.name}, {len(trial_seconds)} trials, {args.threads} torch threads")
    print(f"trial time (sum):         {total:8.2f} s")
    print(f"inside train() (sum):     {training:8.2f} s")
    print(f"outside training (sum):   {overhead:8.2f} s")
    print(
        f"overhead per trial:       median {statistics.median(per_trial) * 1000:.0f} ms, "
        f"max {max(per_trial) * 1000:.0f} ms"
    )
    print(
        f"overhead share:           {share:8.2%}  (target < {TARGET:.0%}: "
        f"{'PASS' if share < TARGET else 'FAIL'})"
    )


if __name__ == "__main__":
    main()
