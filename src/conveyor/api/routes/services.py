"""Services: OSCAR's CRUD under /system/services, and Conveyor's atomic multi-service apply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from conveyor.api.deps import AdminDep, CatalogDep, StatusDep, parse_body
from conveyor.control.catalog import ServiceSummary
from conveyor.errors import DefinitionError, DeployError
from conveyor.model.service import Service

router = APIRouter(dependencies=[AdminDep])


def parse_service(body: Any) -> Service:
    return parse_body(Service, body, "service specification")


@router.get("/system/services", tags=["services"])
def list_services(catalog: CatalogDep) -> list[dict[str, Any]]:
    return [catalog.describe(service) for service in catalog.services()]


@router.get("/system/services/{name}", tags=["services"])
def read_service(name: str, catalog: CatalogDep) -> Any:
    service = catalog.fetch(name)
    if service is None:
        return Response(status_code=404)
    return catalog.describe(service)


@router.post("/system/services", status_code=201, tags=["services"])
def create_service(catalog: CatalogDep, body: Annotated[Any, Body()]) -> Response:
    catalog.create(parse_service(body))
    return Response(status_code=201)


@router.put("/system/services", status_code=204, tags=["services"])
def update_service(catalog: CatalogDep, body: Annotated[Any, Body()]) -> Response:
    catalog.update(parse_service(body))
    return Response(status_code=204)


@router.delete("/system/services/{name}", status_code=204, tags=["services"])
def delete_service(name: str, catalog: CatalogDep) -> Response:
    """Removes the service; unlike OSCAR, its buckets and the data in them are kept."""
    catalog.delete(name)
    return Response(status_code=204)


@router.get("/system/services/{name}/deployment", tags=["services"])
def deployment_status(name: str, catalog: CatalogDep, status: StatusDep) -> dict[str, Any]:
    """What OSCAR reports for a Knative/Deployment: here, whether the service's jobs can run now."""
    catalog.require(name)
    return {
        "service_name": name,
        "namespace": "conveyor",
        "state": "ready",
        "reason": "jobs start on demand, one per event; there is no long-running deployment",
        "last_transition_time": status.started_at.isoformat(),
        "active_instances": catalog.running_jobs(name),
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
def apply_services(request: ApplyRequest, catalog: CatalogDep) -> Any:
    """Deploy several services at once: all of them, or none when any has a problem.

    Problems come back as `400 {"problems": [{"field", "message"}]}`.
    """
    services = [parse_service(body) for body in request.services]
    try:
        report = catalog.apply(services)
    except (DefinitionError, DeployError) as error:
        problems = [{"field": p.field, "message": p.message} for p in error.problems]
        return JSONResponse(status_code=400, content={"problems": problems})
    return ApplyAnswer(created=report.created, updated=report.updated, warnings=report.warnings)


@router.get("/conveyor/v1/services", tags=["conveyor"])
def services_overview(catalog: CatalogDep) -> list[ServiceSummary]:
    return catalog.summaries()
