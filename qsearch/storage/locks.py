"""Locks that every process on one database shares, and schema creation under them.

Many workers may start at once against an empty database. Optuna's RDB
storage and the qsearch tables are created with "check, then CREATE", so
two processes can both see a table missing and the second CREATE fails
(on PostgreSQL with a unique violation in pg_type, on SQLite with "table
already exists"). Creating the schema under one lock avoids that.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

try:
    import fcntl
except ImportError:  # Windows: SQLite files are then created without a lock.
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

SCHEMA_LOCK = "schema"
# Attempts at creating the schema where no lock serializes it (MySQL, Windows).
SCHEMA_ATTEMPTS = 5

T = TypeVar("T")


def _lock_key(name: str) -> int:
    # pg_advisory_lock takes one signed 64-bit key; a stable hash of the
    # name keeps the key the same in every process and Python version.
    digest = hashlib.sha256(f"qsearch:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@functools.lru_cache(maxsize=8)
def _lock_engine(url: str) -> Engine:
    # NullPool: the lock lives exactly as long as its own connection.
    return sa.create_engine(url, poolclass=NullPool)


def _wait(interrupt: threading.Event | None, seconds: float) -> None:
    if interrupt is None:
        time.sleep(seconds)
    elif interrupt.wait(seconds):
        raise KeyboardInterrupt


@contextmanager
def _postgresql_lock(
    url: str, name: str, interrupt: threading.Event | None, poll_interval_s: float
) -> Iterator[None]:
    key = _lock_key(name)
    with _lock_engine(url).connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        # A session-level advisory lock: the server drops it when the
        # holder's connection closes. A killed worker's socket closes at
        # once, but a lost machine's only when TCP keepalive gives up.
        while not connection.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
            _wait(interrupt, poll_interval_s)
        try:
            yield
        finally:
            connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))


@contextmanager
def _file_lock(
    database: Path, name: str, interrupt: threading.Event | None, poll_interval_s: float
) -> Iterator[None]:
    # The lock file goes to the temporary folder, not beside the database,
    # so that no stray files appear next to the user's qsearch.db. flock is
    # released by the kernel when its holder dies.
    token = hashlib.sha256(f"{database.resolve()}\0{name}".encode()).hexdigest()[:20]
    path = Path(tempfile.gettempdir()) / f"qsearch-{token}.lock"
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                _wait(interrupt, poll_interval_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    return Path(database)


@contextmanager
def database_lock(
    url: str,
    name: str,
    *,
    interrupt: threading.Event | None = None,
    poll_interval_s: float = 0.1,
) -> Iterator[None]:
    """Hold the lock `name` against every other process that uses the database at `url`.

    PostgreSQL uses an advisory lock, so the lock spans machines. A SQLite
    file uses flock on a file in the temporary folder, so it spans the
    processes of one machine. Other databases (MySQL, in-memory SQLite) get
    no lock. A process killed while it holds the lock releases it. Raises
    KeyboardInterrupt when `interrupt` is set while waiting.
    """
    backend = make_url(url).get_backend_name()
    database = _sqlite_file(url)
    if backend == "postgresql":
        lock = _postgresql_lock(url, name, interrupt, poll_interval_s)
    elif database is not None and fcntl is not None:
        lock = _file_lock(database, name, interrupt, poll_interval_s)
    else:
        logger.debug("no cross-process lock for %s on a %s database", name, backend)
        lock = _no_lock()
    with lock:
        yield


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def create_schema(url: str, create: Callable[[], T], *, attempts: int = SCHEMA_ATTEMPTS) -> T:
    """Call `create` (which creates tables in the database at `url`) under the schema lock.

    Where no lock exists (see `database_lock`), a concurrent CREATE can
    still fail because another process created the table first. Such an
    error is retried up to `attempts` times, and `create` must therefore
    skip what exists (SQLAlchemy's checkfirst, Optuna's RDBStorage).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, but got {attempts}.")
    for attempt in range(1, attempts):
        try:
            with database_lock(url, SCHEMA_LOCK):
                return create()
        except (IntegrityError, OperationalError, ProgrammingError) as error:
            logger.debug("schema creation raced with another process, retrying: %s", error)
            time.sleep(random.uniform(0.05, 0.2) * attempt)
    with database_lock(url, SCHEMA_LOCK):
        return create()
