"""Study operations on one database: the registry table, Optuna's tables and stored weights.

Nothing here depends on HTTP. Errors are the registry's exceptions
(StudyNotFoundError, StudyExistsError, StudyStateError, StudyLimitError,
StorageUnavailableError), which `api.errors` maps to status codes.
"""

from __future__ import annotations

import logging
import threading

import optuna
from sqlalchemy.exc import SQLAlchemyError

from api.config import Settings
from api.snapshots import SnapshotCache, StudySnapshot, take_snapshot
from qsearch.search.spec import NAME_PATTERN, StudySpec
from qsearch.service import registry
from qsearch.service.worker import WorkerSettings
from qsearch.storage import open_optuna_storage
from qsearch.storage.artifacts import delete_study_weights

logger = logging.getLogger(__name__)


def check_name(name: str) -> None:
    """Raise StudyNotFoundError for a name that no spec can have, before any query.

    Such a name cannot exist, and some databases reject parts of it (PostgreSQL
    rejects NUL characters), which would otherwise surface as a storage error.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise registry.StudyNotFoundError(f"study {name!r} not found")


class StudyStore:
    """The registry and the Optuna storage behind the API, opened on first use.

    The storage may be down when the server starts, so nothing here touches
    the database in the constructor; each use retries the connection.
    """

    def __init__(self, settings: Settings) -> None:
        self.url = settings.storage_url
        self.max_active = settings.max_active_studies
        self.snapshots = SnapshotCache(lambda row: take_snapshot(row, self.optuna_storage()))
        self._optuna: optuna.storages.BaseStorage | None = None
        self._tables_ready = False
        self._open_lock = threading.Lock()
        # Serializes the active-study count and the insert, so concurrent POSTs
        # cannot both take the last free place (one API process per database).
        self.submit_lock = threading.Lock()

    def ensure_tables(self) -> None:
        """Create the registry table once; raise StorageUnavailableError if it cannot."""
        if self._tables_ready:
            return
        try:
            registry.create_tables(self.url)
        except SQLAlchemyError as error:
            raise registry.StorageUnavailableError(
                f"cannot create the registry table: {type(error).__name__}"
            ) from error
        self._tables_ready = True

    def optuna_storage(self) -> optuna.storages.BaseStorage:
        """Return Optuna's storage, cached across requests, with the workers' heartbeat settings.

        The heartbeat settings let DELETE fail the trials of a worker that died.
        """
        with self._open_lock:
            if self._optuna is None:
                worker = WorkerSettings.from_env()
                rdb = open_optuna_storage(
                    self.url,
                    heartbeat_interval=worker.heartbeat_interval_s,
                    grace_period=worker.grace_period_s,
                )
                # The cache keeps finished trials in memory and reads only unfinished
                # ones again, which makes repeated reads of a large study cheap.
                self._optuna = optuna.storages._CachedStorage(rdb)
            return self._optuna

    def row(self, name: str) -> registry.StudyRow:
        """Return the registry row of study `name`; raise StudyNotFoundError."""
        check_name(name)
        self.ensure_tables()
        return registry.get_study(self.url, name)

    def snapshot(self, name: str) -> StudySnapshot:
        """Return a snapshot of study `name` at most `TTL_S` old; raise StudyNotFoundError."""
        return self.snapshots.get_by_name(name, lambda: self.row(name))


def submit_study(store: StudyStore, spec: StudySpec) -> tuple[StudySnapshot, bool]:
    """Queue `spec` as a new study; return (snapshot, created).

    The identical spec under an existing name returns that study with created
    False; a different one raises StudyExistsError.
    """
    store.ensure_tables()
    with store.submit_lock:
        row, created = registry.submit_study(
            store.url,
            spec.name,
            spec.to_json_dict(),
            spec.fingerprint(),
            spec.n_trials,
            max_active=store.max_active,
        )
    return store.snapshots.get(row), created


def list_studies(
    store: StudyStore, *, skip: int, limit: int, status: str | None
) -> tuple[list[StudySnapshot], int]:
    """Return one page of studies, newest first, and the number of matching studies."""
    store.ensure_tables()
    rows, count = registry.list_studies(store.url, offset=skip, limit=limit, status=status)
    return [store.snapshots.get(row) for row in rows], count


def cancel_study(store: StudyStore, name: str) -> StudySnapshot:
    """Cancel a queued or running study; raise StudyStateError once it has finished.

    Running trials stop at the end of an epoch (they check at most once per
    second) and are recorded as failed with the reason "cancelled". No new
    trial starts.
    """
    check_name(name)
    store.ensure_tables()
    row = registry.request_cancel(store.url, name)
    store.snapshots.invalidate(name)
    return store.snapshots.get(row)


def delete_study(store: StudyStore, name: str) -> None:
    """Delete a finished study with its trials and weights; raise StudyStateError while it runs.

    A cancelled study counts as running until its last trial has stopped.
    """
    row = store.row(name)
    if row.status in registry.ACTIVE_STATUSES:
        raise registry.StudyStateError(
            f"study {name!r} is {row.status}; cancel it before deleting it."
        )

    storage = store.optuna_storage()
    try:
        study = optuna.load_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
    except KeyError:
        study = None
    if study is not None:
        # A trial whose worker died stays RUNNING until a heartbeat check fails it.
        optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if running:
            raise registry.StudyStateError(
                f"study {name!r} still has {len(running)} running trial(s), which stop at "
                "the end of an epoch; retry in a few seconds."
            )
        # Optuna's data goes first: if a later step fails, the registry row is
        # still there and a second DELETE finishes the job.
        optuna.delete_study(study_name=name, storage=storage)
    delete_study_weights(store.url, name)
    registry.delete_study_row(store.url, name)
    store.snapshots.invalidate(name)
    logger.info("deleted study %s", name)
