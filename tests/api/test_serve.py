"""`qsearch serve`: the bind-address check and the worker pool's restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer, free_port

from qsearch.service.serve import bind_error, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_is_loopback_true(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_is_loopback_false(host: str) -> None:
    assert not is_loopback(host)


def test_bind_error_without_token() -> None:
    assert bind_error("0.0.0.0", has_token=False, insecure=False) == (
        "refusing to bind 0.0.0.0 without an API token, because anyone who can reach it could "
        "submit and delete studies; set QSEARCH_API_TOKEN, or pass --insecure to serve "
        "without authentication"
    )


@pytest.mark.parametrize(
    ("host", "has_token", "insecure"),
    [("127.0.0.1", False, False), ("0.0.0.0", True, False), ("0.0.0.0", False, True)],
)
def test_bind_allowed(host: str, has_token: bool, insecure: bool) -> None:
    assert bind_error(host, has_token=has_token, insecure=insecure) is None


def test_serve_refuses_public_address_without_token(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "QSEARCH_API_TOKEN"}
    command = [sys.executable, "-m", "qsearch.cli", "serve", "--host", "0.0.0.0"]
    command += ["--port", str(free_port()), "--storage", f"sqlite:///{tmp_path / 'q.db'}"]

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0 without an API token" in result.stderr
    assert not (tmp_path / "q.db").exists()


def worker_pids(server: LiveServer) -> list[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def health(server: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{server.url}/healthz", headers=server.headers).json()


def test_dead_worker_is_replaced(launch: Any) -> None:
    server = launch(workers=1)
    # spawn starts a resource tracker too; the worker is the child that is not it.
    before = health(server)
    pids = [pid for pid in worker_pids(server) if "resource_tracker" not in _cmdline(pid)]

    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        after = health(server)
        if after["workers"]["restarts"] == 1 and after["workers"]["alive"] == 1:
            break
        time.sleep(0.2)

    assert before["workers"] == {"alive": 1, "expected": 1, "restarts": 0}
    assert after == {
        "status": "ok",
        "storage": "ok",
        "workers": {"alive": 1, "expected": 1, "restarts": 1},
    }
    assert "exited with code -9; starting a new one" in server.log()


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
