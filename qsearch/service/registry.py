"""The study registry: which studies the workers run, and their trial slots.

A table beside Optuna's in the same database holds each submitted study's
spec, status and trial-slot ledger. `claimed` counts trial slots handed to
workers: a worker takes a slot with one conditional UPDATE before it asks
Optuna for a trial, so however many workers share a study, no more than
`n_trials` trials run. A slot whose trial does not count (interrupted,
cancelled, or failed by the heartbeat after a worker crash) is released.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from qsearch.storage.engine import get_engine

logger = logging.getLogger(__name__)

QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
ACTIVE_STATUSES = (QUEUED, RUNNING)

_metadata = sa.MetaData()
studies_table = sa.Table(
    "qsearch_studies",
    _metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("n_trials", sa.Integer, nullable=True),
    sa.Column("claimed", sa.Integer, nullable=False, default=0),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)


class StorageUnavailableError(RuntimeError):
    """Raised when the database cannot be reached or answers with an error."""


class StudyExistsError(ValueError):
    """Raised when a study name is taken by a different spec."""


class StudyNotFoundError(LookupError):
    """Raised when no study has the given name."""


class StudyStateError(ValueError):
    """Raised when an action does not fit the study's status (cancel a finished study)."""


class StudyLimitError(ValueError):
    """Raised when a new study would exceed the number of queued and running studies allowed."""


@dataclass(frozen=True)
class StudyRow:
    """One registered study."""

    name: str
    spec: dict[str, Any]
    fingerprint: str
    status: str
    n_trials: int | None
    claimed: int
    cancel_requested: bool
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _row(mapping: Any) -> StudyRow:
    return StudyRow(
        name=mapping.name,
        spec=json.loads(mapping.spec_json),
        fingerprint=mapping.fingerprint,
        status=mapping.status,
        n_trials=mapping.n_trials,
        claimed=mapping.claimed,
        cancel_requested=bool(mapping.cancel_requested),
        error=mapping.error,
        created_at=mapping.created_at,
        updated_at=mapping.updated_at,
    )


def create_tables(url: str) -> None:
    """Create the registry table if missing; safe when many processes start at once."""
    engine = get_engine(url)
    try:
        _metadata.create_all(engine, checkfirst=True)
    except (IntegrityError, OperationalError, sa.exc.ProgrammingError) as error:
        # Two processes can both see the table missing; the loser's CREATE
        # fails because the table now exists, which is what it wanted.
        if not sa.inspect(engine).has_table(studies_table.name):
            raise
        logger.debug("registry table created concurrently: %s", error)


@contextmanager
def _transaction(url: str) -> Iterator[sa.Connection]:
    try:
        with get_engine(url).begin() as connection:
            yield connection
    except (StudyExistsError, StudyLimitError, StudyNotFoundError, StudyStateError):
        raise
    except SQLAlchemyError as error:
        raise StorageUnavailableError(
            f"storage error: {error.__class__.__name__}: {str(error).splitlines()[0]}"
        ) from error


def submit_study(
    url: str,
    name: str,
    spec: dict[str, Any],
    fingerprint: str,
    n_trials: int | None,
    *,
    max_active: int | None = None,
) -> tuple[StudyRow, bool]:
    """Queue a study; return (row, created). The same spec again returns the existing row.

    Raises StudyExistsError when the name holds a different spec or budget,
    and StudyLimitError when `max_active` studies are already queued or running.
    """
    try:
        return _submit_once(url, name, spec, fingerprint, n_trials, max_active)
    except StorageUnavailableError as error:
        # Two submissions of one new name can both find it free. The second
        # INSERT then fails on the primary key, and the retry finds the first row.
        if not isinstance(error.__cause__, IntegrityError):
            raise
        logger.debug("study %s was submitted concurrently: %s", name, error)
        return _submit_once(url, name, spec, fingerprint, n_trials, max_active)


def _submit_once(
    url: str,
    name: str,
    spec: dict[str, Any],
    fingerprint: str,
    n_trials: int | None,
    max_active: int | None,
) -> tuple[StudyRow, bool]:
    now = _now()
    with _transaction(url) as connection:
        existing = connection.execute(
            sa.select(studies_table).where(studies_table.c.name == name)
        ).first()
        if existing is not None:
            if existing.fingerprint != fingerprint or existing.n_trials != n_trials:
                raise StudyExistsError(
                    f"study {name!r} already exists with a different spec; choose another "
                    "name or delete the existing study first."
                )
            return _row(existing), False
        if max_active is not None:
            active = connection.execute(_count_active_query()).scalar_one()
            if active >= max_active:
                raise StudyLimitError(
                    f"the server runs at most {max_active} queued or running studies, and "
                    f"{active} are active; wait for one to finish or cancel one."
                )
        connection.execute(
            sa.insert(studies_table).values(
                name=name,
                spec_json=json.dumps(spec),
                fingerprint=fingerprint,
                status=QUEUED,
                n_trials=n_trials,
                claimed=0,
                cancel_requested=False,
                created_at=now,
                updated_at=now,
            )
        )
        row = connection.execute(sa.select(studies_table).where(studies_table.c.name == name)).one()
    logger.info("queued study %s (%s trials)", name, n_trials)
    return _row(row), True


def get_study(url: str, name: str) -> StudyRow:
    with _transaction(url) as connection:
        row = connection.execute(
            sa.select(studies_table).where(studies_table.c.name == name)
        ).first()
    if row is None:
        raise StudyNotFoundError(f"study {name!r} not found")
    return _row(row)


def list_studies(
    url: str, *, offset: int = 0, limit: int = 100, status: str | None = None
) -> tuple[list[StudyRow], int]:
    """Return one page of studies, newest first, and the total count."""
    query = sa.select(studies_table)
    count_query = sa.select(sa.func.count()).select_from(studies_table)
    if status is not None:
        query = query.where(studies_table.c.status == status)
        count_query = count_query.where(studies_table.c.status == status)
    query = query.order_by(studies_table.c.created_at.desc(), studies_table.c.name)
    with _transaction(url) as connection:
        rows = connection.execute(query.offset(offset).limit(limit)).all()
        count = connection.execute(count_query).scalar_one()
    return [_row(row) for row in rows], count


def _count_active_query() -> sa.Select[Any]:
    return (
        sa.select(sa.func.count())
        .select_from(studies_table)
        .where(studies_table.c.status.in_(ACTIVE_STATUSES))
    )


def count_active(url: str) -> int:
    """Return the number of queued and running studies."""
    with _transaction(url) as connection:
        return connection.execute(_count_active_query()).scalar_one()


def ping(url: str) -> None:
    """Run one trivial query; raise StorageUnavailableError if the database does not respond."""
    with _transaction(url) as connection:
        connection.execute(sa.select(studies_table.c.name).limit(1)).all()


def next_runnable_study(url: str, only: str | None = None) -> str | None:
    """Name of the oldest queued or running study with a free trial slot."""
    query = (
        sa.select(studies_table.c.name)
        .where(studies_table.c.status.in_(ACTIVE_STATUSES))
        .where(studies_table.c.cancel_requested.is_(False))
        .where(
            sa.or_(
                studies_table.c.n_trials.is_(None),
                studies_table.c.claimed < studies_table.c.n_trials,
            )
        )
        .order_by(studies_table.c.created_at, studies_table.c.name)
        .limit(1)
    )
    if only is not None:
        query = query.where(studies_table.c.name == only)
    with _transaction(url) as connection:
        return connection.execute(query).scalar()


def claim_trial_slot(url: str, name: str) -> bool:
    """Take one trial slot of a study; False when the budget is handed out or it stopped."""
    table = studies_table
    statement = (
        sa.update(table)
        .where(table.c.name == name)
        .where(table.c.status.in_(ACTIVE_STATUSES))
        .where(table.c.cancel_requested.is_(False))
        .where(sa.or_(table.c.n_trials.is_(None), table.c.claimed < table.c.n_trials))
        .values(claimed=table.c.claimed + 1, status=RUNNING, updated_at=_now())
    )
    with _transaction(url) as connection:
        return connection.execute(statement).rowcount == 1


def release_trial_slot(url: str, name: str) -> None:
    """Give back a slot whose trial does not count against the budget."""
    table = studies_table
    with _transaction(url) as connection:
        connection.execute(
            sa.update(table)
            .where(table.c.name == name)
            .where(table.c.claimed > 0)
            .values(claimed=table.c.claimed - 1, updated_at=_now())
        )


def reset_trial_slots(
    url: str, name: str, claimed: int, *, seen_claimed: int, seen_updated_at: dt.datetime
) -> bool:
    """Set a study's claimed slots to `claimed` if its row is unchanged since it was read.

    Workers use it to return slots that no trial holds (their worker died
    between claiming the slot and creating the trial). The row must still
    show `seen_claimed` and `seen_updated_at`, so a slot claimed or
    released in the meantime makes it return False and change nothing.
    """
    table = studies_table
    with _transaction(url) as connection:
        result = connection.execute(
            sa.update(table)
            .where(table.c.name == name)
            .where(table.c.claimed == seen_claimed)
            .where(table.c.updated_at == seen_updated_at)
            .values(claimed=claimed, updated_at=_now())
        )
    return result.rowcount == 1


def set_status(
    url: str,
    name: str,
    status: str,
    error: str | None = None,
    *,
    only_from: tuple[str, ...] = ACTIVE_STATUSES,
) -> bool:
    """Move a study to `status` if it is in one of `only_from`; True if it moved."""
    table = studies_table
    with _transaction(url) as connection:
        result = connection.execute(
            sa.update(table)
            .where(table.c.name == name)
            .where(table.c.status.in_(only_from))
            .values(status=status, error=error, updated_at=_now())
        )
    if result.rowcount == 1:
        logger.info("study %s is now %s%s", name, status, f": {error}" if error else "")
    return result.rowcount == 1


def request_cancel(url: str, name: str) -> StudyRow:
    """Cancel a queued or running study; raise StudyStateError if it already finished."""
    table = studies_table
    with _transaction(url) as connection:
        row = connection.execute(sa.select(table).where(table.c.name == name)).first()
        if row is None:
            raise StudyNotFoundError(f"study {name!r} not found")
        if row.status not in ACTIVE_STATUSES:
            raise StudyStateError(
                f"study {name!r} has already finished with status "
                f"{row.status}; there is nothing to cancel."
            )
        connection.execute(
            sa.update(table)
            .where(table.c.name == name)
            .values(cancel_requested=True, status=CANCELLED, updated_at=_now())
        )
    logger.info("study %s cancelled", name)
    return get_study(url, name)


def is_cancelled(url: str, name: str) -> bool:
    with _transaction(url) as connection:
        value = connection.execute(
            sa.select(studies_table.c.cancel_requested).where(studies_table.c.name == name)
        ).scalar()
    return bool(value) if value is not None else True


def delete_study_row(url: str, name: str) -> None:
    """Remove a study from the registry; raise StudyStateError while it runs."""
    table = studies_table
    with _transaction(url) as connection:
        row = connection.execute(sa.select(table).where(table.c.name == name)).first()
        if row is None:
            raise StudyNotFoundError(f"study {name!r} not found")
        if row.status in ACTIVE_STATUSES:
            raise StudyStateError(f"study {name!r} is {row.status}; cancel it before deleting it.")
        connection.execute(sa.delete(table).where(table.c.name == name))
