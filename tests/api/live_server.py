"""A `qsearch serve` subprocess on 127.0.0.1 for tests, and the small specs they submit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from qsearch.client import Client

QSEARCH_SERVE = [sys.executable, "-m", "qsearch.cli", "serve"]
TOKEN = "test-token-0123456789"
STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """One `qsearch serve` subprocess and what a test needs to reach it."""

    folder: Path
    storage_url: str
    workers: int
    token: str | None
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> LiveServer:
        """Start `qsearch serve` on a free port and wait until all its workers are alive."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"

        env = {key: value for key, value in os.environ.items() if not key.startswith("QSEARCH_")}
        env.update(self.env)
        if self.token:
            env["QSEARCH_API_TOKEN"] = self.token
        # Two workers on two cores get one torch thread each.
        env.setdefault("OMP_NUM_THREADS", "1")

        data_root = self.folder / "data"
        data_root.mkdir(exist_ok=True)
        command = [*QSEARCH_SERVE, "--port", str(port), "--storage", self.storage_url]
        command += ["--workers", str(self.workers), "--data-root", str(data_root)]

        # Each start of the same server writes a new log: serve-0.log, serve-1.log, ...
        starts = len(list(self.folder.glob("serve-*.log")))
        self.log_path = self.folder / f"serve-{starts}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"qsearch serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(f"{self.url}/healthz", headers=self.headers, timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            workers = response.json().get("workers", {})
            if workers.get("alive") == self.workers:
                return
            time.sleep(0.2)
        pytest.fail(f"qsearch serve did not come up in {STARTUP_TIMEOUT_S} s:\n{self.log()}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self) -> Client:
        return Client(self.url, token=self.token, timeout=60)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Stop the server as `kill` would (SIGTERM) and return its exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"qsearch serve did not stop within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-6000:]
