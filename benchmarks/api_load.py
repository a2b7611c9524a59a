"""Latency and throughput of the HTTP API on a study with 2,000 stored trials.

Stores a finished study of 2,000 synthetic trials in a fresh SQLite file
(no training), starts `qsearch serve --workers 0` on it, and drives
`GET /studies/{name}/trials?limit=100` and `GET /studies/{name}` with 8
concurrent clients on 127.0.0.1, each on its own keep-alive connection.
The ceiling is a minimal FastAPI endpoint under the same uvicorn settings
that reads one SQLite row of the same file. Every request sends the API
token, as a deployed server requires.

    .venv/bin/python benchmarks/api_load.py [--requests N] [--clients C]

Targets: p99 latency under 50 ms, and at least half the ceiling's requests/s.
The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from qsearch.search.spec import load_spec
from qsearch.search.study import BASELINE_ATTR, FINGERPRINT_ATTR, SPEC_ATTR
from qsearch.service import registry
from qsearch.storage import open_optuna_storage

QSEARCH_SERVE = [sys.executable, "-m", "qsearch.cli", "serve", "--workers", "0"]
STUDY = "load"
N_TRIALS = 2000
TOKEN = "benchmark-token"
P99_TARGET_S = 0.050
THROUGHPUT_TARGET = 0.5
SPEC = {
    "name": STUDY,
    "dataset": {"name": "digits"},
    "model": {"name": "digits_cnn", "params": {"channels": [4, 8]}},
    "sampler": {"name": "random"},
    "training": {"epochs": 8},
    "n_trials": N_TRIALS,
}


def store_study(url: str) -> None:
    """Store a completed study of N_TRIALS trials with realistic parameters and metrics."""
    spec = load_spec(SPEC)
    rng = random.Random(0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY, storage=open_optuna_storage(url), directions=spec.directions()
    )
    study.set_user_attr(SPEC_ATTR, spec.to_json_dict())
    study.set_user_attr(FINGERPRINT_ATTR, spec.fingerprint())
    study.set_user_attr(BASELINE_ATTR, {"val_accuracy": 0.93, "train_seconds": 2.0})
    distributions = {
        "bw_w": IntDistribution(2, 8),
        "bw_f": IntDistribution(2, 8),
        "bw_b": IntDistribution(2, 16),
        "power_of_2": CategoricalDistribution([False, True]),
        "noise_prob": FloatDistribution(0.7, 0.9),
    }
    trials = []
    for _ in range(N_TRIALS):
        params = {
            "bw_w": rng.randint(2, 8),
            "bw_f": rng.randint(2, 8),
            "bw_b": rng.randint(2, 16),
            "power_of_2": rng.random() < 0.5,
            "noise_prob": rng.uniform(0.7, 0.9),
        }
        accuracy = min(0.95, 0.4 + 0.07 * params["bw_w"] + rng.uniform(-0.05, 0.05))
        memory = 1626 * params["bw_w"] / 8
        curve = [accuracy * (1 - 0.5**epoch) for epoch in range(1, 9)]
        attrs = {
            "val_accuracy": accuracy,
            "test_accuracy": accuracy - 0.01,
            "accuracy_drop": 0.93 - accuracy,
            "weight_memory_bits": memory * 8,
            "weight_memory_bytes": memory,
            "bitops": 22016 * params["bw_w"] * params["bw_f"],
            "macs": 22016,
            "parameters": 1626,
            "train_seconds": rng.uniform(1.0, 2.0),
            "curve": curve,
            "seed": 0,
        }
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                values=[accuracy, memory],
                user_attrs=attrs,
            )
        )
    study.add_trials(trials)

    registry.create_tables(url)
    registry.submit_study(url, STUDY, spec.to_json_dict(), spec.fingerprint(), N_TRIALS)
    registry.set_status(url, STUDY, registry.COMPLETED)


def ceiling_server(url: str, port: int) -> None:
    """Serve GET /row: a minimal FastAPI endpoint that reads one SQLite row."""
    import sqlalchemy as sa
    import uvicorn
    from fastapi import FastAPI

    from qsearch.storage.engine import get_engine

    app = FastAPI()
    engine = get_engine(url)
    query = sa.select(registry.studies_table.c.status).where(registry.studies_table.c.name == STUDY)

    @app.get("/row")
    def read_row() -> dict[str, str]:
        with engine.connect() as connection:
            return {"status": connection.execute(query).scalar_one()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], log: Path, url: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
            return process
        except httpx.TransportError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command[:4]} did not start; its log:\n{log.read_text()[-3000:]}")


@dataclass
class Result:
    label: str
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _client(host: str, port: int, request: bytes, count: int, latencies: list[float]) -> None:
    # A raw keep-alive HTTP/1.1 connection: an HTTP library would spend more
    # CPU per request than the server does, on the same two cores.
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"{request.splitlines()[0]!r} returned {status}")
    finally:
        writer.close()


async def drive(url: str, path: str, clients: int, requests: int) -> Result:
    """Send `requests` requests for `path` over `clients` connections at once."""
    parsed = httpx.URL(url)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parsed.host}:{parsed.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    per_client = requests // clients
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(parsed.host, parsed.port, request, per_client, latencies) for _ in range(clients))
    )
    return Result(path, per_client * clients, time.perf_counter() - started, latencies)


def measure(runs: list[tuple[str, str]], clients: int, requests: int, rounds: int) -> list[Result]:
    """Measure every run in `rounds` interleaved rounds, so that other load on the
    machine slows all of them alike, after one warm-up round."""
    for base, path in runs:
        asyncio.run(drive(base, path, clients, 10 * clients))
    totals = [Result(path, 0, 0.0, []) for _, path in runs]
    for _ in range(rounds):
        for total, (base, path) in zip(totals, runs, strict=True):
            result = asyncio.run(drive(base, path, clients, requests // rounds))
            total.requests += result.requests
            total.seconds += result.seconds
            total.latencies.extend(result.latencies)
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per endpoint")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per endpoint")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--ceiling-server", nargs=2, metavar=("URL", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.ceiling_server:
        ceiling_server(args.ceiling_server[0], int(args.ceiling_server[1]))
        return 0

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'load.db'}"
        started = time.perf_counter()
        store_study(url)
        print(f"stored {N_TRIALS} trials in {time.perf_counter() - started:.1f} s")

        env = {key: value for key, value in os.environ.items() if not key.startswith("QSEARCH_")}
        env["QSEARCH_API_TOKEN"] = TOKEN
        api_url = f"http://127.0.0.1:{free_port()}"
        ceiling_url = f"http://127.0.0.1:{free_port()}"
        api = start(
            [*QSEARCH_SERVE, "--storage", url, "--port", api_url.rsplit(":", 1)[1]],
            env,
            Path(folder) / "api.log",
            f"{api_url}/healthz",
        )
        ceiling = start(
            [sys.executable, __file__, "--ceiling-server", url, ceiling_url.rsplit(":", 1)[1]],
            env,
            Path(folder) / "ceiling.log",
            f"{ceiling_url}/row",
        )
        try:
            started = time.perf_counter()
            httpx.get(f"{api_url}/studies/{STUDY}", headers={"Authorization": f"Bearer {TOKEN}"})
            print(f"first read of the study (cold snapshot): {time.perf_counter() - started:.2f} s")
            runs = [
                (ceiling_url, "/row"),
                (api_url, f"/studies/{STUDY}/trials?limit=100"),
                (api_url, f"/studies/{STUDY}"),
            ]
            results = measure(runs, args.clients, args.requests, args.rounds)
        finally:
            for process in (api, ceiling):
                process.send_signal(signal.SIGTERM)
                process.wait(30)
    return report(results, args)


def report(results: list[Result], args: argparse.Namespace) -> int:
    ceiling = results[0]
    print(
        f"\n{args.clients} clients, {args.requests} requests per endpoint, {os.cpu_count()} cores\n"
    )
    print("| endpoint | requests/s | p50 ms | p99 ms | share of ceiling |")
    print("|---|---:|---:|---:|---:|")
    missed = []
    for result in results:
        share = result.rate / ceiling.rate
        print(
            f"| `{result.label}` | {result.rate:.0f} | {1000 * result.percentile(0.5):.1f} | "
            f"{1000 * result.percentile(0.99):.1f} | {share:.2f} |"
        )
        if result is not ceiling and result.percentile(0.99) >= P99_TARGET_S:
            missed.append(f"{result.label}: p99 is not under {1000 * P99_TARGET_S:.0f} ms")
        if result is not ceiling and share < THROUGHPUT_TARGET:
            missed.append(f"{result.label}: below {THROUGHPUT_TARGET:.0%} of the ceiling")
    if args.json:
        rows = [
            {
                "endpoint": r.label,
                "requests_per_s": r.rate,
                "p50_ms": 1000 * r.percentile(0.5),
                "p99_ms": 1000 * r.percentile(0.99),
                "mean_ms": 1000 * statistics.fmean(r.latencies),
            }
            for r in results
        ]
        args.json.write_text(json.dumps(rows, indent=2))
    print("\n" + ("\n".join(f"missed: {line}" for line in missed) or "all targets met"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
