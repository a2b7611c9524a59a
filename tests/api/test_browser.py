"""Headless Chromium opens /docs and /dashboard through the token login.

Skipped where Debian's `chromium` is missing; .ci/run installs it and sets
QSEARCH_REQUIRE_ALL_TESTS=1, which turns the skip into a failure.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from live_server import TOKEN, LiveServer

from tests.conftest import require_service

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Resolve no host name but the loopback address, so the page reaches nothing else.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    # Lets the page's scripts run (and fetch their data) before the DOM is dumped.
    "--virtual-time-budget=10000",
]


def rendered_dom(url: str, profile: Path) -> str:
    require_service(CHROMIUM is not None, "Debian's chromium is not installed")
    result = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def login_url(server: LiveServer, page: str) -> str:
    return f"{server.url}/login?token={TOKEN}&next={page}"


def test_docs_page_lists_routes(server: LiveServer, tmp_path: Path) -> None:
    dom = rendered_dom(login_url(server, "/docs"), tmp_path)

    assert 'data-path="/studies/{name}/cancel"' in dom
    assert 'data-path="/studies/{name}/trials"' in dom


def test_dashboard_shows_study(server: LiveServer, finished_tiny: Any, tmp_path: Path) -> None:
    dom = rendered_dom(login_url(server, "/dashboard"), tmp_path)

    assert finished_tiny["name"] in dom


def test_docs_without_login_rejected(server: LiveServer, tmp_path: Path) -> None:
    dom = rendered_dom(f"{server.url}/docs", tmp_path)

    assert "missing API token" in dom
    assert "swagger-ui" not in dom
