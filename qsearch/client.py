"""A Python client for the qsearch HTTP API (`qsearch serve`).

    from qsearch.client import Client

    with Client("http://127.0.0.1:8000", token="...") as client:
        client.create_study(Path("studies/digits_quick.yaml"))
        study = client.wait("digits_quick", timeout=600)
        front = client.pareto("digits_quick")

Responses are returned as the JSON the server sends (dicts and lists). An
error response raises ApiError with the status code and the server's message.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

logger = logging.getLogger(__name__)

__all__ = ["FINISHED_STATUSES", "ApiError", "Client"]

FINISHED_STATUSES = ("completed", "failed", "cancelled")


class ApiError(Exception):
    """An error response of the API.

    `status` is the HTTP status code and `detail` the response's `detail`
    field: a message, or for an invalid spec a list of {"loc", "msg"}
    problems. `message` joins it into one line.
    """

    def __init__(self, status: int, detail: Any, *, retry_after: float | None = None) -> None:
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}: {self.message}")

    @property
    def message(self) -> str:
        """The server's message; the problems of an invalid spec joined with '; '."""
        if isinstance(self.detail, list):
            return "; ".join(_problem_text(problem) for problem in self.detail)
        return str(self.detail)


def _problem_text(problem: Any) -> str:
    if not isinstance(problem, Mapping):
        return str(problem)
    loc = problem.get("loc", "")
    # FastAPI's own validation errors give loc as a list, such as ["query", "limit"].
    path = ".".join(str(part) for part in loc) if isinstance(loc, list) else str(loc)
    return f"{path}: {problem.get('msg', '')}" if path else str(problem.get("msg", ""))


class Client:
    """Submit studies to a qsearch server and read their trials and Pareto fronts."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def create_study(self, spec: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
        """Submit a study and return it; submitting the identical spec again returns it too.

        `spec` is a mapping (sent as JSON), YAML text, or the path of a
        .yaml, .yml or .json file. A path must be a `pathlib.Path`, because a
        `str` is always sent as text.
        """
        if isinstance(spec, Mapping):
            return self._request("POST", "/studies", json=dict(spec))
        if isinstance(spec, os.PathLike):
            path = Path(spec)
            is_json = path.suffix.lower() == ".json"
            content, content_type = path.read_bytes(), "application/json" if is_json else None
        else:
            content, content_type = spec.encode(), None
        headers = {"Content-Type": content_type or "application/yaml"}
        return self._request("POST", "/studies", content=content, headers=headers)

    def get_study(self, name: str) -> dict[str, Any]:
        """Return a study with its status, progress, baseline, best trial and Pareto front."""
        return self._request("GET", f"/studies/{name}")

    def list_studies(
        self, *, skip: int = 0, limit: int = 20, status: str | None = None
    ) -> dict[str, Any]:
        """Return one page of studies as {"data": [...], "count": total}."""
        params: dict[str, Any] = {"skip": skip, "limit": limit}
        if status is not None:
            params["status"] = status
        return self._request("GET", "/studies", params=params)

    def list_trials(
        self,
        name: str,
        *,
        skip: int = 0,
        limit: int = 100,
        state: str | None = None,
        sort_by: str = "number",
        order: str = "asc",
    ) -> dict[str, Any]:
        """Return one page of a study's trials as {"data": [...], "count": total}."""
        params: dict[str, Any] = {"skip": skip, "limit": limit, "sort_by": sort_by, "order": order}
        if state is not None:
            params["state"] = state
        return self._request("GET", f"/studies/{name}/trials", params=params)

    def get_trial(self, name: str, number: int) -> dict[str, Any]:
        """Return one trial of a study."""
        return self._request("GET", f"/studies/{name}/trials/{number}")

    def pareto(self, name: str) -> list[dict[str, Any]]:
        """Return the trials on the study's Pareto front."""
        return self._request("GET", f"/studies/{name}/pareto")["data"]

    def best(self, name: str) -> dict[str, Any]:
        """Return the feasible trial with the highest validation accuracy."""
        return self._request("GET", f"/studies/{name}/best")

    def trials_csv(self, name: str) -> str:
        """Return every trial of the study as CSV text."""
        response = self._http.get(f"/studies/{name}/trials.csv")
        _raise_for_error(response)
        return response.text

    def cancel(self, name: str) -> dict[str, Any]:
        """Cancel a queued or running study and return it."""
        return self._request("POST", f"/studies/{name}/cancel")

    def delete(self, name: str) -> None:
        """Delete a finished study with its trials and weights."""
        response = self._http.delete(f"/studies/{name}")
        _raise_for_error(response)

    def health(self) -> dict[str, Any]:
        """Return the health check; an unhealthy server raises ApiError with status 503."""
        return self._request("GET", "/healthz")

    def wait(self, name: str, timeout: float, *, poll_interval: float = 1.0) -> dict[str, Any]:
        """Poll the study until it is completed, failed or cancelled, and return it.

        Raises TimeoutError if it is still queued or running after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            study = self.get_study(name)
            if study["status"] in FINISHED_STATUSES:
                return study
            if time.monotonic() >= deadline:
                progress = study["progress"]
                raise TimeoutError(
                    f"study {name!r} is still {study['status']} after {timeout} s "
                    f"({progress['complete']} of {progress['n_trials']} trials complete)"
                )
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        _raise_for_error(response)
        return response.json()


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text or response.reason_phrase
    retry_after = response.headers.get("Retry-After")
    raise ApiError(
        response.status_code,
        detail,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )
