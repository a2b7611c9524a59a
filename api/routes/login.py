"""Route that stores the API token in a cookie, so that a browser can open /docs and /dashboard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import RedirectResponse

from api.deps import SettingsDep
from api.errors import INVALID_TOKEN
from api.schemas import Message
from api.security import LOGIN_PATH, TOKEN_COOKIE, token_matches

router = APIRouter(tags=["login"])

# A path on this server only: "//host" and "/\host" would redirect elsewhere.
LOCAL_PATH_PATTERN = r"^/([^/\\].*)?$"


@router.get(
    LOGIN_PATH,
    status_code=303,
    response_class=RedirectResponse,
    responses={303: {"description": "Token accepted"}, 401: {"model": Message}},
)
def login(
    settings: SettingsDep,
    token: Annotated[str, Query(max_length=1000)] = "",
    next_path: Annotated[
        str, Query(alias="next", max_length=2000, pattern=LOCAL_PATH_PATTERN)
    ] = "/dashboard",
) -> RedirectResponse:
    """Set the token cookie and redirect to `next` (default /dashboard)."""
    expected = settings.token_bytes()
    response = RedirectResponse(next_path, status_code=303)
    if expected is None:
        return response
    if not token_matches(token, expected):
        raise HTTPException(
            status_code=401, detail=INVALID_TOKEN, headers={"WWW-Authenticate": "Bearer"}
        )
    # HttpOnly keeps scripts from reading the token; SameSite=Strict keeps other
    # sites from sending requests that carry it.
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
    return response
