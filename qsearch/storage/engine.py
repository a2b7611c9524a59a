"""Open the database behind a study: Optuna's RDB storage on a SQLAlchemy URL."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import Engine

from qsearch.storage.locks import create_schema

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///qsearch.db"
# Seconds a SQLite connection waits for another writer before it gives up.
SQLITE_BUSY_TIMEOUT_S = 60


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def check_database_exists(url: str | None, *, allow_new: bool = False) -> None:
    """Raise unless `url` names a database that can hold studies already.

    Opening a URL creates what is missing: an empty SQLite file, or
    Optuna's tables in someone else's database. Commands that only read or
    delete studies must not do that after a typo, so they call this first.
    An in-memory SQLite database (ValueError) never contains studies. With
    `allow_new`, a missing SQLite file is accepted; otherwise it raises
    FileNotFoundError, and a database without Optuna's tables LookupError.
    """
    url = url or DEFAULT_STORAGE
    if _is_sqlite(url):
        parsed = sqlalchemy.engine.make_url(url)
        database = parsed.database or ""
        if database.startswith("file:"):
            # A URI filename (file:PATH with uri=true); mode=memory keeps it in memory.
            database = database[len("file:") :]
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise ValueError(
                f"storage {url} is an in-memory database, which contains no studies; give "
                "the URL of the database file with --storage"
            )
        if not Path(database).exists():
            if allow_new:
                return
            raise FileNotFoundError(
                f"no database at {database!r} (storage {url}); give the URL of the database "
                "that holds the study with --storage"
            )
    if allow_new:
        return
    # A plain engine: the cached one would switch a SQLite file to WAL mode.
    engine = sqlalchemy.create_engine(url)
    try:
        has_tables = sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()
    if not has_tables:
        raise LookupError(
            f"storage {url} contains no qsearch studies (it has no Optuna tables); give the URL "
            "of the database that holds the study with --storage"
        )


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine options that suit the database behind `url`."""
    if _is_sqlite(url):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    # pool_pre_ping drops connections that the server closed while idle.
    return {"pool_pre_ping": True}


def _enable_sqlite_wal(engine: Engine) -> None:
    # WAL lets readers (the dashboard, the API) run while a worker writes.
    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        # In WAL mode, NORMAL syncs at checkpoints instead of every commit.
        # The database stays consistent after a crash; a power cut may lose
        # the last commits. A trial writes about 30 small rows, and a full
        # sync each took about 2 ms here.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


@functools.lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """Return one shared engine per URL for qsearch's own tables."""
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    if _is_sqlite(url):
        _enable_sqlite_wal(engine)
    return engine


def open_optuna_storage(
    url: str | None = None, **storage_options: Any
) -> optuna.storages.RDBStorage:
    """Open (and create on first use) Optuna's RDB storage at `url`.

    `storage_options` go to RDBStorage (heartbeat_interval, grace_period,
    heartbeat_stale_trial_callback). The tables are created under a lock,
    so many processes can open an empty database at once.
    """
    url = url or DEFAULT_STORAGE
    if _is_sqlite(url):
        # WAL mode stays with the database file, so set it before Optuna's
        # engine (which lacks the connect hook until below) first writes.
        with get_engine(url).connect():
            pass
    options = {"engine_kwargs": engine_kwargs(url), **storage_options}
    storage = create_schema(url, lambda: optuna.storages.RDBStorage(url, **options))
    if _is_sqlite(url):
        _enable_sqlite_wal(storage.engine)
        # Drop the connections opened before the hook existed.
        storage.engine.dispose()
    logger.debug("opened storage %s", url)
    return storage
