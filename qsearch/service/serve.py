"""`qsearch serve`: the HTTP API under uvicorn beside a pool of worker processes.

The API process never trains. The pool starts its worker processes once,
with the "spawn" start method so that no process inherits the server's
threads or database connections, and starts a new one when a worker dies.
Workers ignore SIGINT: Ctrl-C stops the server, which then sends each
worker one SIGTERM, so a running trial is recorded as interrupted and its
trial slot released.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess

from qsearch.service.worker import WorkerSettings, run_worker_process, threads_per_worker

logger = logging.getLogger(__name__)

# Seconds a worker may take to record its interrupted trial before it is killed.
STOP_TIMEOUT_S = 30.0
# A worker that dies sooner than this after its start is restarted with a growing delay,
# so a worker that cannot start (a broken storage URL) does not restart in a tight loop.
MIN_HEALTHY_RUN_S = 60.0
MAX_RESTART_DELAY_S = 60.0


def is_loopback(host: str) -> bool:
    """True if `host` is a loopback address, or a name whose every address is loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def bind_error(host: str, *, has_token: bool, insecure: bool) -> str | None:
    """Return why the server must not bind `host`, or None if it may."""
    if has_token or insecure or is_loopback(host):
        return None
    return (
        f"refusing to bind {host} without an API token, because anyone who can reach it "
        "could submit and delete studies; set QSEARCH_API_TOKEN, or pass --insecure to "
        "serve without authentication"
    )


def _worker_main(storage_url: str, threads: int, settings: WorkerSettings) -> None:
    # in_pool: the worker ignores SIGINT and leaves Ctrl-C to the server, which
    # sends SIGTERM once; the worker also stops by itself if the server dies.
    sys.exit(run_worker_process(storage_url, None, threads, settings, in_pool=True))


class WorkerPool:
    """`size` worker processes on one storage, started once and replaced when one dies."""

    def __init__(
        self,
        storage_url: str,
        size: int,
        settings: WorkerSettings,
        *,
        check_interval_s: float = 1.0,
    ) -> None:
        if size < 0:
            raise ValueError(f"the number of workers must be at least 0, but got {size}")
        self.storage_url = storage_url
        self.size = size
        self.settings = settings
        self.threads = threads_per_worker(size) if size else 0
        self._check_interval_s = check_interval_s
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess | None] = [None] * size
        self._started_at = [0.0] * size
        self._restart_at = [0.0] * size
        self._quick_deaths = [0] * size
        self._restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name="qsearch-worker-pool", daemon=True
        )

    def start(self) -> None:
        """Start every worker process and the thread that replaces dead ones."""
        with self._lock:
            for slot in range(self.size):
                self._start(slot)
        if self.size:
            self._supervisor.start()
        logger.info("started %d worker processes with %d threads each", self.size, self.threads)

    def counts(self) -> tuple[int, int, int]:
        """Return (alive, expected, restarts)."""
        with self._lock:
            alive = sum(1 for process in self._processes if process and process.is_alive())
            return alive, self.size, self._restarts

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Send every worker SIGTERM, wait up to `timeout_s`, then kill those still running."""
        self._stopping.set()
        with self._lock:
            processes = [process for process in self._processes if process is not None]
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning(
                    "worker %s did not stop within %.0f s; killing it", process.pid, timeout_s
                )
                process.kill()
                process.join()
        logger.info("stopped %d worker processes", len(processes))

    def _start(self, slot: int) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(self.storage_url, self.threads, self.settings),
            name=f"qsearch-worker-{slot}",
            daemon=True,
        )
        process.start()
        self._processes[slot] = process
        self._started_at[slot] = time.monotonic()

    def _supervise(self) -> None:
        while not self._stopping.wait(self._check_interval_s):
            with self._lock:
                if self._stopping.is_set():
                    return
                for slot, process in enumerate(self._processes):
                    if process is None or process.is_alive():
                        continue
                    self._replace(slot, process)

    def _replace(self, slot: int, process: BaseProcess) -> None:
        now = time.monotonic()
        if self._restart_at[slot] == 0.0:
            if now - self._started_at[slot] < MIN_HEALTHY_RUN_S:
                self._quick_deaths[slot] += 1
            else:
                self._quick_deaths[slot] = 0
            delay = min(MAX_RESTART_DELAY_S, 2.0 ** self._quick_deaths[slot] - 1.0)
            self._restart_at[slot] = now + delay
            logger.warning(
                "worker %s exited with code %s; starting a new one in %.0f s",
                process.pid,
                process.exitcode,
                delay,
            )
        if now < self._restart_at[slot]:
            return
        self._restart_at[slot] = 0.0
        self._restarts += 1
        self._start(slot)


def serve_command(args: argparse.Namespace) -> int:
    """Run `qsearch serve`: check the bind address, start the workers, then serve the API."""
    import uvicorn

    from api.config import Settings
    from api.main import create_app
    from api.security import RedactTokenFilter

    settings = Settings.from_env(storage_url=args.storage, data_root=args.data_root)
    has_token = settings.api_token is not None
    problem = bind_error(args.host, has_token=has_token, insecure=args.insecure)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.workers < 0:
        print(f"error: --workers must be at least 0, but got {args.workers}", file=sys.stderr)
        return 2
    if not has_token and args.insecure and not is_loopback(args.host):
        logger.warning("serving %s without authentication (--insecure)", args.host)

    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)  # lifecycle lines of the API and the pool

    worker_settings = WorkerSettings.from_env(data_root=str(settings.data_root))
    pool = WorkerPool(settings.storage_url, args.workers, worker_settings)
    config = uvicorn.Config(
        create_app(settings, workers=pool), host=args.host, port=args.port, log_level="info"
    )
    logging.getLogger("uvicorn.access").addFilter(RedactTokenFilter())
    server = uvicorn.Server(config)

    pool.start()
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn shuts down on SIGINT or SIGTERM, then raises the signal again for us.
        pass
    finally:
        pool.stop()
    return 0
