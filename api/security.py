"""Bearer-token authentication and the request body limit, as ASGI middleware.

Both wrap the whole application, the Optuna dashboard included, so no
route can forget them. A browser cannot add an Authorization header to the
dashboard's own requests, so the token is also accepted from the
`qsearch_token` cookie that `GET /login?token=...` sets.
"""

from __future__ import annotations

import hmac
import logging
import re

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import BODY_TOO_LARGE, INVALID_TOKEN, MISSING_TOKEN

logger = logging.getLogger(__name__)

TOKEN_COOKIE = "qsearch_token"
LOGIN_PATH = "/login"

_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s]*")


def token_matches(presented: str, token: bytes) -> bool:
    """Compare in constant time, so response timing does not reveal a prefix of the token."""
    return hmac.compare_digest(presented.encode(), token)


class TokenAuthMiddleware:
    """Reject every HTTP request without the API token with 401; `/login` checks it itself."""

    def __init__(self, app: ASGIApp, *, token: bytes | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or scope["path"] == LOGIN_PATH:
            await self.app(scope, receive, send)
            return

        presented = _presented_token(Headers(scope=scope))
        if presented is None:
            detail, challenge = MISSING_TOKEN, "Bearer"
        elif not token_matches(presented, self.token):
            detail, challenge = INVALID_TOKEN, 'Bearer error="invalid_token"'
        else:
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"detail": detail}, status_code=401, headers={"WWW-Authenticate": challenge}
        )
        await response(scope, receive, send)


def _presented_token(headers: Headers) -> str | None:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE and value:
            return value
    return None


class BodySizeLimitMiddleware:
    """Reject a request body over `max_bytes` with 413, before any of it is parsed.

    A declared Content-Length over the limit is rejected at once. A chunked
    body is counted as it arrives, and the read that crosses the limit raises.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": BODY_TOO_LARGE}, status_code=413)
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status_code=413, detail=BODY_TOO_LARGE)
            return message

        await self.app(scope, limited_receive, send)


class RedactTokenFilter(logging.Filter):
    """Hide `token=...` in uvicorn's access log lines, which contain the login URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1<redacted>", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True
