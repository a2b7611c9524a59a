"""Fixtures that start live `qsearch serve` processes for the API tests.

Starting a server with workers takes seconds, and each worker's first trial
warms up PyTorch. So one session-wide server with two workers runs the
studies that most tests read, and modules that need other settings start their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import TOKEN, LiveServer

from qsearch.client import Client
from tests.tiny_spec import tiny_spec


@pytest.fixture(scope="session")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Return a function that starts a server; every server is stopped at the end."""
    servers: list[LiveServer] = []

    def start(
        *,
        workers: int,
        token: str | None = TOKEN,
        env: dict[str, str] | None = None,
        storage_url: str | None = None,
        folder: Path | None = None,
    ) -> LiveServer:
        folder = folder or tmp_path_factory.mktemp("server")
        server = LiveServer(
            folder=folder,
            storage_url=storage_url or f"sqlite:///{folder / 'qsearch.db'}",
            workers=workers,
            token=token,
            env=env or {},
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(launch: Any) -> LiveServer:
    """A token-protected server with two worker processes, shared by the session."""
    return launch(workers=2)


@pytest.fixture(scope="session")
def client(server: LiveServer) -> Iterator[Client]:
    with server.client() as api_client:
        yield api_client


@pytest.fixture(scope="session")
def finished_tiny(client: Client) -> dict[str, Any]:
    """The tiny study, run to completion on the session server."""
    client.create_study(tiny_spec("tiny"))
    study = client.wait("tiny", timeout=180)
    assert study["status"] == "completed", study
    return study
