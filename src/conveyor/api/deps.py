"""Dependencies shared by the routes: the platform, and who is calling."""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ValidationError

from conveyor.errors import validation_reasons
from conveyor.platform.platform import Platform

BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="Authorization Required"'}


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    if not platform.ready.is_set():
        raise HTTPException(status_code=503, detail="Conveyor is starting or stopping; try again shortly")
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def bearer_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def is_admin(request: Request, platform: Platform) -> bool:
    given = basic_credentials(request)
    if given is None:
        return False
    expected = platform.credentials
    return secrets.compare_digest(given[0], expected.admin_user) & secrets.compare_digest(
        given[1], expected.admin_password
    )


def require_admin(request: Request, platform: PlatformDep) -> None:
    if not is_admin(request, platform):
        raise HTTPException(status_code=401, detail="", headers=BASIC_CHALLENGE)


AdminDep = Depends(require_admin)

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: Any, what: str) -> M:
    """A JSON body as `model`, or 400 with every reason in plain text, as OSCAR answers."""
    if not isinstance(body, dict):
        raise HTTPException(400, f"The {what} is not valid: expected a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        reasons = "; ".join(validation_reasons(error.errors()))
        raise HTTPException(400, f"The {what} is not valid: {reasons}") from None
