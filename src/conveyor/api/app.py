"""The FastAPI application. Built per platform (no import-time globals), so tests can run several.

The app exists before the platform's components do (the store's first event needs someone to
answer it), so it starts with no control plane and answers 503; `attach` hands it one when
everything runs and `detach` takes it away first thing at shutdown.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException  # FastAPI's is a subclass: unknown routes raise this one
from swagger_ui_bundle import swagger_ui_path

from conveyor import __version__
from conveyor.api.deps import BASIC_CHALLENGE, is_admin
from conveyor.api.limits import BodyLimit
from conveyor.control.plane import ControlPlane
from conveyor.errors import (
    Conflict,
    ConveyorError,
    DefinitionError,
    DeployError,
    InvalidRequest,
    NotFound,
    NotSupported,
    StorageUnavailable,
    no_space_left,
    validation_reasons,
)
from conveyor.events.intake import GroupedIntake
from conveyor.settings import ApiSettings

log = logging.getLogger(__name__)

DISK_FULL = "the platform's disk is full"
DOCS_ASSETS = "/docs-assets"

STATUS_OF: tuple[tuple[type[ConveyorError], int], ...] = (
    (NotFound, 404),
    (DefinitionError, 400),
    (DeployError, 400),
    (Conflict, 400),  # OSCAR answers a taken name with 400
    (InvalidRequest, 400),
    (NotSupported, 501),
)
"""The control plane's refusals as HTTP statuses; their message is the plain-text body. Any other
error is a failure of the platform (500)."""


def create_app(settings: ApiSettings) -> FastAPI:
    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description="OSCAR-compatible API for event-driven file processing with containers.",
        redirect_slashes=True,
        redoc_url=None,
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: ours serves it from the package
    )
    _serve_api_docs(app)
    app.state.control = None
    for router in _routers():
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_mb * 2**20)
    app.add_exception_handler(HTTPException, _plain_text_error)
    app.add_exception_handler(RequestValidationError, _plain_text_validation_error)
    for error_class, _ in STATUS_OF:
        app.add_exception_handler(error_class, _refusal)
    app.add_exception_handler(StorageUnavailable, _store_unavailable)
    app.add_exception_handler(OSError, _platform_failure)
    app.add_exception_handler(SQLAlchemyError, _platform_failure)
    return app


def _serve_api_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the swagger-ui-bundle package, so the page works offline."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Conveyor API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def attach(app: FastAPI, control: ControlPlane) -> None:
    """Start answering: every route reaches the part of `control` it needs."""
    app.state.webhook_intake = GroupedIntake(lambda events: control.intake.accept_many(events))
    app.state.control = control


def detach(app: FastAPI) -> None:
    """Answer 503 again, before the components stop."""
    app.state.control = None


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


async def _refusal(_request: Request, error: Exception) -> Response:
    status = next(code for error_class, code in STATUS_OF if isinstance(error, error_class))
    return PlainTextResponse(str(error), status_code=status)


async def _store_unavailable(request: Request, error: Exception) -> Response:
    """503 with one line: why the store is away when the platform knows (its store is restarting, its
    disk is full), else what the store answered. Never a 500: the request may succeed once the store is back."""
    problems = _problems(request)
    known = f"{DISK_FULL}: {problems['disk']}" if "disk" in problems else problems.get("store")
    return PlainTextResponse(known or str(error), status_code=503, headers={"Retry-After": "5"})


async def _platform_failure(request: Request, error: Exception) -> Response:
    """A file or the ledger could not be written: on a full disk, 503 with one line that says so (the
    request may succeed once there is room); anything else is a failure of the platform (500)."""
    if not no_space_left(error):
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return PlainTextResponse("Internal Server Error", status_code=500)
    reason = _problems(request).get("disk") or str(error).splitlines()[0]
    return PlainTextResponse(f"{DISK_FULL}: {reason}", status_code=503, headers={"Retry-After": "30"})


def _problems(request: Request) -> dict[str, str]:
    """What keeps the platform from working, by part, when it runs (readiness)."""
    control: ControlPlane | None = request.app.state.control
    return control.status.readiness().problems if control is not None else {}


async def _plain_text_validation_error(request: Request, error: Exception) -> Response:
    """A bad body is reported only to callers with credentials: OSCAR checks who asks first."""
    assert isinstance(error, RequestValidationError)
    control: ControlPlane | None = request.app.state.control
    if control is None:
        return PlainTextResponse("Conveyor is starting or stopping; try again shortly", status_code=503)
    if _needs_admin(request.url.path) and not is_admin(request, control.credentials):
        return PlainTextResponse("", status_code=401, headers=BASIC_CHALLENGE)
    lines = validation_reasons(list(error.errors()))
    return PlainTextResponse("\n".join(lines), status_code=400)
