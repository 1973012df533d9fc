"""Dependencies of the routes: one part of the control plane each, and who is calling.

Routes never see the platform. `Platform` attaches a `ControlPlane` once every component runs and
takes it away before anything stops (api/app.py); without one, every route but /health answers 503.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ValidationError

from conveyor.control.buckets import Buckets
from conveyor.control.catalog import ServiceCatalog
from conveyor.control.credentials import Credentials
from conveyor.control.jobs import JobsDesk
from conveyor.control.plane import ControlPlane
from conveyor.control.status import StatusBoard
from conveyor.errors import validation_reasons
from conveyor.events.intake import EventIntake
from conveyor.events.reconciler import Reconciler

BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="Authorization Required"'}


def control_plane(request: Request) -> ControlPlane:
    control: ControlPlane | None = request.app.state.control
    if control is None:
        raise HTTPException(status_code=503, detail="Conveyor is starting or stopping; try again shortly")
    return control


def _catalog(request: Request) -> ServiceCatalog:
    return control_plane(request).catalog


def _jobs(request: Request) -> JobsDesk:
    return control_plane(request).jobs


def _buckets(request: Request) -> Buckets:
    return control_plane(request).buckets


def _status(request: Request) -> StatusBoard:
    return control_plane(request).status


def _credentials(request: Request) -> Credentials:
    return control_plane(request).credentials


def _intake(request: Request) -> EventIntake:
    return control_plane(request).intake


def _reconciler(request: Request) -> Reconciler:
    return control_plane(request).reconciler


CatalogDep = Annotated[ServiceCatalog, Depends(_catalog)]
JobsDep = Annotated[JobsDesk, Depends(_jobs)]
BucketsDep = Annotated[Buckets, Depends(_buckets)]
StatusDep = Annotated[StatusBoard, Depends(_status)]
CredentialsDep = Annotated[Credentials, Depends(_credentials)]
IntakeDep = Annotated[EventIntake, Depends(_intake)]
ReconcilerDep = Annotated[Reconciler, Depends(_reconciler)]


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


def is_admin(request: Request, credentials: Credentials) -> bool:
    given = basic_credentials(request)
    return given is not None and credentials.is_admin(*given)


def require_admin(request: Request, credentials: CredentialsDep) -> None:
    if not is_admin(request, credentials):
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
