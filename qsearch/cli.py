"""The `qsearch` command line: run, show and export studies, start the dashboard."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", default=None, help="SQLAlchemy database URL (default: sqlite:///qsearch.db)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsearch", description="Search quantization settings for small neural networks."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a study spec to its budget (resumes)")
    run.add_argument("spec", help="path of a study spec (.yaml or .json)")
    _add_storage(run)
    run.add_argument(
        "--n-trials", type=int, default=None, help="trial budget, overriding the spec's n_trials"
    )
    run.add_argument(
        "--data-root",
        default=None,
        help="folder that dataset paths resolve under "
        "(default: $QSEARCH_DATA_ROOT, else the working directory)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    show = commands.add_parser("show", help="print a study's trials, Pareto front and best trial")
    show.add_argument("name", help="study name")
    _add_storage(show)
    show.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )

    export = commands.add_parser(
        "export", help="write a trial's qconfig, spec, metrics and trained weights to a folder"
    )
    export.add_argument("name", help="study name")
    export.add_argument("--trial", type=int, required=True, help="trial number")
    export.add_argument("--out", required=True, help="output folder")
    _add_storage(export)

    delete = commands.add_parser("delete", help="delete a study, its trials and their weights")
    delete.add_argument("name", help="study name")
    _add_storage(delete)

    dashboard = commands.add_parser("dashboard", help="start optuna-dashboard on the storage")
    _add_storage(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind")
    dashboard.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    serve = commands.add_parser(
        "serve", help="start the HTTP API and a pool of worker processes on one storage"
    )
    _add_storage(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes that run trials (default: 1)"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address without QSEARCH_API_TOKEN",
    )
    serve.add_argument("--data-root", default=None, help="folder that dataset paths resolve under")

    worker = commands.add_parser(
        "worker", help="run trials of queued studies from the storage (any machine)"
    )
    worker.add_argument("--storage", required=True, help="SQLAlchemy database URL")
    worker.add_argument("--study", default=None, help="run only this study")
    worker.add_argument(
        "--concurrency", type=int, default=1, help="worker processes to start (default: 1)"
    )
    worker.add_argument("--data-root", default=None, help="folder that dataset paths resolve under")
    worker.add_argument(
        "--exit-when-idle", action="store_true", help="exit once no study has trials left to run"
    )
    return parser


def _cmd_serve(args: argparse.Namespace) -> int:
    from qsearch.service.serve import serve_command

    return serve_command(args)


def _cmd_worker(args: argparse.Namespace) -> int:
    from qsearch.service.worker import worker_command

    return worker_command(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from qsearch.cli_output import ProgressBar, print_study
    from qsearch.search import run_study
    from qsearch.search.spec import load_spec

    path = Path(args.spec)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "not found"
        raise ValueError(f"study spec file '{path}' {problem}; give a .yaml or .json file.")
    spec = load_spec(path)
    budget = args.n_trials if args.n_trials is not None else spec.n_trials
    if budget is not None and budget < 1:
        raise ValueError(f"--n-trials must be at least 1, but got {budget}.")
    bar = ProgressBar(budget, spec, disable=args.no_progress)
    interrupt = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        # The first Ctrl-C stops the running trial at the next batch, so its
        # failure is recorded cleanly; a second one interrupts at once.
        if interrupt.is_set():
            raise KeyboardInterrupt
        interrupt.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        result = run_study(
            spec,
            args.storage,
            n_trials=args.n_trials,
            data_root=args.data_root,
            progress=bar.update,
            interrupt=interrupt,
        )
    except KeyboardInterrupt:
        bar.close()
        print(
            "\nInterrupted: the running trial is recorded as failed; run the same command "
            "again to resume.",
            file=sys.stderr,
        )
        return 130
    bar.close()
    print_study(result, budget=budget)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    import optuna

    from qsearch.cli_output import print_study
    from qsearch.search.results import study_result
    from qsearch.storage import check_database_exists, open_optuna_storage

    check_database_exists(args.storage)
    storage = open_optuna_storage(args.storage)
    try:
        study = optuna.load_study(study_name=args.name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        print(
            f"error: study {args.name!r} not found; studies in this storage: "
            f"{', '.join(names) or 'none'}.",
            file=sys.stderr,
        )
        return 2
    result = study_result(study)
    if args.format == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print_study(result, all_trials=True)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from qsearch.search.export import export_trial
    from qsearch.storage import check_database_exists

    check_database_exists(args.storage)
    out = export_trial(args.name, args.trial, args.out, storage=args.storage)
    print(f"exported trial {args.trial} of study {args.name} to {out}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from qsearch.search.study import delete_study
    from qsearch.storage import check_database_exists

    check_database_exists(args.storage)
    delete_study(args.name, args.storage)
    print(f"deleted study {args.name}")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from qsearch.storage import check_database_exists, open_optuna_storage

    # A missing SQLite file is created: a dashboard may start before any study.
    check_database_exists(args.storage, allow_new=True)
    storage = open_optuna_storage(args.storage)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it)")
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


COMMANDS = {
    "run": _cmd_run,
    "show": _cmd_show,
    "export": _cmd_export,
    "delete": _cmd_delete,
    "dashboard": _cmd_dashboard,
    "serve": _cmd_serve,
    "worker": _cmd_worker,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        import optuna

        # Optuna logs every trial at INFO and every failed trial with its
        # traceback at WARNING; the result table shows both, with reasons.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    # SIGTERM stops like Ctrl-C, so the running trial is recorded as failed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, LookupError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, StorageInternalError, ModuleNotFoundError) as error:
        # A bad storage URL, an unreachable server or a missing driver.
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"error: cannot use the storage: {first_line}", file=sys.stderr)
        return 2


def _entry() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
