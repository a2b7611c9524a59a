"""Container health check: exit 0 if a URL responds, 1 if it does not.

    python docker/healthcheck.py http://127.0.0.1:8000/healthz
    python docker/healthcheck.py postgresql+psycopg://qsearch:qsearch@postgres:5432/qsearch

An http(s) URL must respond with status 200 within the timeout. Any other URL is a
SQLAlchemy database URL that must run `SELECT 1`; the workers use it,
because they serve no HTTP.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_S = 5


def check_http(url: str) -> str | None:
    """Return why `url` is unhealthy, or None if it responded with status 200."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        return f"{url} did not respond: {error}"
    if status != 200:
        return f"{url} responded with status {status}, expected 200"
    return None


def check_database(url: str) -> str | None:
    """Return why the database at `url` is unhealthy, or None if it ran SELECT 1."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args=_connect_timeout(url))
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as error:
        return f"the database did not respond: {str(error).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


def _connect_timeout(url: str) -> dict[str, int]:
    if url.startswith("postgresql"):
        return {"connect_timeout": TIMEOUT_S}
    return {}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: healthcheck.py URL (http://... or a database URL)", file=sys.stderr)
        return 2
    url = argv[0]
    problem = check_http(url) if url.startswith(("http://", "https://")) else check_database(url)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
