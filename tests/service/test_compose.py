"""docker/: the compose file's structure, and each service's command run as a process.

No Docker engine runs where these tests run, so the services' commands and
health checks run as local processes against a PostgreSQL test database,
with the compose host names and ports swapped for local ones.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from qsearch.cli import build_parser
from qsearch.quant import fused

from .conftest import TINY_SPEC, Processes, wait_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE_STORAGE = "postgresql+psycopg://qsearch:qsearch@postgres:5432/qsearch"
QSEARCH_SERVICES = ("api", "worker", "dashboard")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_declares_services(compose):
    services = compose["services"]

    assert set(services) == {"postgres", *QSEARCH_SERVICES}
    assert re.fullmatch(r"postgres:1[5-9]", services["postgres"]["image"])
    for name in QSEARCH_SERVICES:
        service = services[name]
        assert service["image"] == "qsearch:latest"
        assert (COMPOSE_FILE.parent / service["build"]["context"]).resolve() == ROOT
        assert (ROOT / service["build"]["dockerfile"]) == DOCKERFILE
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert service["command"][0] == "qsearch"
        assert service["command"][1] == ("serve" if name == "api" else name)


def test_compose_healthchecks(compose):
    services = compose["services"]

    for name, service in services.items():
        check = service["healthcheck"]
        assert check["test"][0] == "CMD", name
        assert check["retries"] >= 3, name
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert services["api"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8000/healthz"
    assert services["dashboard"]["healthcheck"]["test"][-1].startswith("http://127.0.0.1:8080/")
    assert services["worker"]["healthcheck"]["test"][-1] == COMPOSE_STORAGE


def test_compose_database_and_volume(compose):
    postgres = compose["services"]["postgres"]
    environment = postgres["environment"]

    assert compose["volumes"] == {"qsearch-db": None}
    assert "qsearch-db:/var/lib/postgresql/data" in postgres["volumes"]
    assert "ports" not in postgres
    user, password, host_port_db = re.fullmatch(
        r"postgresql\+psycopg://(\w+):(\w+)@(.+)", COMPOSE_STORAGE
    ).groups()
    assert (user, password) == (environment["POSTGRES_USER"], environment["POSTGRES_PASSWORD"])
    assert host_port_db == f"postgres:5432/{environment['POSTGRES_DB']}"
    for name in QSEARCH_SERVICES:
        assert _option(compose["services"][name]["command"], "--storage") == COMPOSE_STORAGE


def test_compose_ports_and_scaling(compose):
    services = compose["services"]

    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    assert _option(services["api"]["command"], "--port") == "8000"
    assert _option(services["dashboard"]["command"], "--port") == "8080"
    # `--scale worker=N` needs a worker without fixed names or host ports.
    worker = services["worker"]
    assert "ports" not in worker
    assert "container_name" not in worker
    assert worker["environment"]["OMP_NUM_THREADS"] == "1"
    assert _option(services["api"]["command"], "--workers") == "0"
    assert "--insecure" in services["api"]["command"]


def test_compose_commands_parse(compose):
    parser = build_parser()

    for name in QSEARCH_SERVICES:
        args = parser.parse_args(compose["services"][name]["command"][1:])
        assert args.storage == COMPOSE_STORAGE
    worker = parser.parse_args(compose["services"]["worker"]["command"][1:])
    assert worker.concurrency == 1
    assert not worker.exit_when_idle


def test_dockerfile_installs_cpu_torch_and_copies_existing_files():
    text = DOCKERFILE.read_text()
    makefile = (ROOT / "Makefile").read_text()

    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    (torch_version,) = re.findall(r"ARG TORCH_VERSION=(\S+)", text)
    assert f"TORCH_SPEC ?= torch=={torch_version}" in makefile
    assert re.search(r"^FROM python:3\.11", text, flags=re.MULTILINE)
    assert re.search(r"^USER (?!root)", text, flags=re.MULTILINE)
    sources = [
        source
        for line in re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    for source in sources:
        assert f"!{source.rstrip('/')}" in ignore or f"!{source}/" in ignore, source


def test_dockerfile_builds_kernels_as_user():
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]

    assert "&& apt-get install --yes --no-install-recommends g++ \\" in lines
    # Built after USER, so the kernels land in the cache of the user who runs them.
    user_line = next(i for i, line in enumerate(lines) if re.match(r"USER (?!root)", line))
    assert lines.index("RUN python -m qsearch.quant") > user_line
    # `pip install .` must ship the kernels' source with the package.
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    (pattern,) = package_data["qsearch.quant"]
    assert [path.name for path in (ROOT / "qsearch" / "quant").glob(pattern)] == [fused.SOURCE.name]


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def _healthcheck(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "docker/healthcheck.py", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_healthcheck_script_exit_status(pg_url):
    server = http.server.HTTPServer(("127.0.0.1", 0), _StatusHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert _healthcheck(f"{base}/ok").returncode == 0
        failing = _healthcheck(f"{base}/down")
    finally:
        server.shutdown()
    assert failing.returncode == 1
    assert "responded with status 503" in failing.stderr
    assert _healthcheck(f"http://127.0.0.1:{_free_port()}/").returncode == 1
    assert _healthcheck(pg_url).returncode == 0
    assert _healthcheck(pg_url.rsplit("/", 1)[0] + "/no_such_database").returncode == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local(argv: list[str], storage_url: str, ports: dict[str, str]) -> list[str]:
    """A compose command or health check with the local interpreter, database and ports."""
    local = []
    for arg in argv:
        arg = storage_url if arg == COMPOSE_STORAGE else arg
        arg = "127.0.0.1" if arg == "0.0.0.0" else arg
        for compose_port, port in ports.items():
            arg = re.sub(rf"(127\.0\.0\.1:){compose_port}\b", rf"\g<1>{port}", arg)
        local.append(ports.get(arg, arg))
    if local[0] == "qsearch":
        return [sys.executable, "-m", "qsearch.cli", *local[1:]]
    if local[0] == "python":
        return [sys.executable, *local[1:]]
    return local


def _healthy(compose_service: dict[str, Any], storage_url: str, ports: dict[str, str]) -> bool:
    argv = _local(compose_service["healthcheck"]["test"][1:], storage_url, ports)
    return subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60).returncode == 0


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_api_serves_study_run_by_compose_workers(compose, pg_url, processes: Processes):
    """The compose services as processes: the API (no workers of its own) queues a study
    that two worker processes run, while the dashboard reads the same database."""
    services = compose["services"]
    ports = {"8000": str(_free_port()), "8080": str(_free_port())}

    def start(name: str) -> subprocess.Popen:
        service = services[name]
        env = {key: str(value) for key, value in service.get("environment", {}).items()}
        return processes.start(_local(service["command"], pg_url, ports), env=env, cwd=ROOT)

    api = start("api")
    wait_for(lambda: _healthy(services["api"], pg_url, ports), 120, "the API is not healthy")
    api_url = f"http://127.0.0.1:{ports['8000']}"
    spec = {**TINY_SPEC, "name": "compose", "n_trials": 6}
    request = urllib.request.Request(
        f"{api_url}/studies",
        data=json.dumps(spec).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        assert json.load(response)["status"] == "queued"

    workers = [start("worker") for _ in range(2)]  # --scale worker=2
    dashboard = start("dashboard")
    wait_for(
        lambda: _get_json(f"{api_url}/studies/compose")["status"] == "completed",
        180,
        "the workers did not complete the study",
        interval_s=0.5,
    )
    wait_for(
        lambda: _healthy(services["dashboard"], pg_url, ports), 60, "the dashboard is not healthy"
    )
    assert _healthy(services["worker"], pg_url, ports)

    study = _get_json(f"{api_url}/studies/compose")
    assert study["progress"]["n_trials"] == 6
    assert study["progress"]["complete"] == 6
    assert study["progress"]["failed"] == 0
    assert study["progress"]["running"] == 0
    assert study["baseline"]["val_accuracy"] > 0.5
    health = _get_json(f"{api_url}/healthz")
    assert health["workers"] == {"alive": 0, "expected": 0, "restarts": 0}
    names = [
        summary["study_name"]
        for summary in _get_json(f"http://127.0.0.1:{ports['8080']}/api/studies")["study_summaries"]
    ]
    assert names == ["compose"]
    trials = _get_json(f"{api_url}/studies/compose/trials")
    assert trials["count"] == 6

    for process in (*workers, api, dashboard):
        process.terminate()
    for process in workers:
        assert processes.wait(process, 30) == 0, processes.log(process)
    for process in (api, dashboard):
        processes.wait(process, 30)
