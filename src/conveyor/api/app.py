"""The FastAPI application. Built per platform (no import-time globals), so tests can run several."""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import PlainTextResponse, Response

from conveyor import __version__
from conveyor.api.deps import BASIC_CHALLENGE, is_admin
from conveyor.api.limits import BodyLimit
from conveyor.errors import validation_reasons
from conveyor.events.intake import GroupedIntake
from conveyor.platform.platform import Platform


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description="OSCAR-compatible API for event-driven file processing with containers.",
        redirect_slashes=True,
        redoc_url=None,
    )
    app.state.platform = platform
    app.state.webhook_intake = GroupedIntake(lambda events: platform.intake.accept_many(events))
    for router in _routers():
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=platform.settings.api.max_body_mb * 2**20)
    app.add_exception_handler(HTTPException, _plain_text_error)
    app.add_exception_handler(RequestValidationError, _plain_text_validation_error)
    return app


def _routers() -> list[APIRouter]:
    """Every module in api/routes contributes its `router`: a new resource is a new module."""
    import conveyor.api.routes as package

    modules = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    return [importlib.import_module(f"conveyor.api.routes.{name}").router for name in modules]


def _needs_admin(path: str) -> bool:
    return path.startswith("/system") or (
        path.startswith("/conveyor/v1") and not path.startswith("/conveyor/v1/events")
    )


async def _plain_text_error(_request: Request, error: Exception) -> Response:
    """OSCAR's error bodies are plain text, and some clients show them as they are."""
    assert isinstance(error, HTTPException)
    return PlainTextResponse(str(error.detail or ""), status_code=error.status_code, headers=error.headers)


async def _plain_text_validation_error(request: Request, error: Exception) -> Response:
    """A bad body is reported only to callers with credentials: OSCAR checks who asks first."""
    assert isinstance(error, RequestValidationError)
    if _needs_admin(request.url.path) and not is_admin(request, request.app.state.platform):
        return PlainTextResponse("", status_code=401, headers=BASIC_CHALLENGE)
    lines = validation_reasons(list(error.errors()))
    return PlainTextResponse("\n".join(lines), status_code=400)
