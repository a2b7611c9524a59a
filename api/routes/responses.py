"""JSON responses built from bytes that a study snapshot has already serialized.

A route that returns a Response skips FastAPI's validation and encoding of
its `response_model`, which still documents the body in OpenAPI. The bytes
come from the same pydantic models, so the body matches that schema.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Response


def json_response(
    content: bytes, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Return `content`, which is JSON already, as an application/json response."""
    return Response(
        content, status_code=status_code, headers=headers, media_type="application/json"
    )
