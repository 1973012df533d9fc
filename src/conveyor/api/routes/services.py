"""Services: OSCAR's CRUD under /system/services, and Conveyor's atomic multi-service apply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from conveyor.api.deps import AdminDep, PlatformDep, parse_body
from conveyor.errors import FDLError
from conveyor.model.job import JobState
from conveyor.model.service import Service
from conveyor.platform.deploy import ApplyReport
from conveyor.platform.platform import Platform

router = APIRouter(dependencies=[AdminDep])


def parse_service(body: Any) -> Service:
    return parse_body(Service, body, "service specification")


def public_json(service: Service, platform: Platform) -> dict[str, Any]:
    """The service as OSCAR returns it: secrets blanked, the platform's store described, keys hidden."""
    shown = service.public().model_dump(mode="json")
    store = platform.minio_provider()
    shown["storage_providers"].setdefault("minio", {})["default"] = store | {
        "access_key": "hidden",
        "secret_key": "hidden",
    }
    return shown


@router.get("/system/services", tags=["services"])
def list_services(platform: PlatformDep) -> list[dict[str, Any]]:
    return [public_json(s, platform) for s in platform.ledger.list_services()]


@router.get("/system/services/{name}", tags=["services"])
def read_service(name: str, platform: PlatformDep) -> Any:
    service = platform.ledger.fetch_service(name)
    if service is None:
        return Response(status_code=404)
    return public_json(service, platform)


@router.post("/system/services", status_code=201, tags=["services"])
def create_service(platform: PlatformDep, body: Annotated[Any, Body()]) -> Response:
    service = parse_service(body)
    if platform.ledger.fetch_service(service.name) is not None:
        raise HTTPException(400, "A service with the provided name already exists")
    _apply(platform, [service])
    return Response(status_code=201)


@router.put("/system/services", status_code=204, tags=["services"])
def update_service(platform: PlatformDep, body: Annotated[Any, Body()]) -> Response:
    service = parse_service(body)
    existing = platform.ledger.fetch_service(service.name)
    if existing is None:
        raise HTTPException(404, f"the service {service.name!r} does not exist")
    _apply(platform, [service.model_copy(update={"token": existing.token})])
    return Response(status_code=204)


@router.delete("/system/services/{name}", status_code=204, tags=["services"])
def delete_service(name: str, platform: PlatformDep) -> Response:
    """Removes the service; unlike OSCAR, its buckets and the data in them are kept."""
    if not platform.delete_service(name):
        raise HTTPException(404, f"the service {name!r} does not exist")
    return Response(status_code=204)


@router.get("/system/services/{name}/deployment", tags=["services"])
def deployment_status(name: str, platform: PlatformDep) -> dict[str, Any]:
    """What OSCAR reports for a Knative/Deployment: here, whether the service's jobs can run now."""
    service = platform.ledger.fetch_service(name)
    if service is None:
        raise HTTPException(404, f"the service {name!r} does not exist")
    running = platform.ledger.count_jobs(name).get(name, {}).get(JobState.RUNNING, 0)
    return {
        "service_name": name,
        "namespace": "conveyor",
        "state": "ready",
        "reason": "jobs start on demand, one per event; there is no long-running deployment",
        "last_transition_time": platform.started_at.isoformat(),
        "active_instances": running,
        "affected_instances": 0,
        "resource_kind": "job",
    }


class ApplyRequest(BaseModel):
    services: list[dict[str, Any]]


class ApplyAnswer(BaseModel):
    created: list[str]
    updated: list[str]
    warnings: list[str]


@router.post("/conveyor/v1/apply", tags=["conveyor"], response_model=ApplyAnswer)
def apply_services(request: ApplyRequest, platform: PlatformDep) -> Any:
    """Deploy several services at once: all of them, or none when any has a problem.

    Problems come back as `400 {"problems": [{"field", "message"}]}`.
    """
    services = [parse_service(body) for body in request.services]
    try:
        report = platform.apply(services)
    except FDLError as error:
        problems = [{"field": p.field, "message": p.message} for p in error.problems]
        return JSONResponse(status_code=400, content={"problems": problems})
    return ApplyAnswer(created=report.created, updated=report.updated, warnings=report.warnings)


@router.get("/conveyor/v1/services", tags=["conveyor"])
def services_overview(platform: PlatformDep) -> list[dict[str, Any]]:
    counts = platform.ledger.count_jobs()
    return [
        {
            "service": public_json(service, platform),
            "jobs": {state.value: n for state, n in counts.get(service.name, {}).items()},
            "event_sources": {
                f"{io.storage_provider}:{io.path}": platform.sources.describe(service, io) for io in service.input
            },
        }
        for service in platform.ledger.list_services()
    ]


def _apply(platform: Platform, services: list[Service]) -> ApplyReport:
    try:
        return platform.apply(services)
    except FDLError as error:
        raise HTTPException(400, "; ".join(str(p) for p in error.problems)) from None
