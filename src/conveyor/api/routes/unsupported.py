"""OSCAR routes for Kubernetes-only features: answered 501 with the reason, never a fake success."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from fastapi import APIRouter, HTTPException, Path

from conveyor.api.deps import AdminDep

router = APIRouter(dependencies=[AdminDep], tags=["not supported"])

NO_VOLUMES = "Conveyor has no managed volumes: each job gets a private work directory"
NO_QUOTAS = "Conveyor has one admin account and no per-user quotas"
NO_FEDERATION = "federation and delegation between clusters are not supported by Conveyor"
NO_METRICS = "usage metrics are not collected yet; job times are in /conveyor/v1/jobs"
NO_EXPOSED = "exposed (long-running) services are not supported by Conveyor: services run one job per event"
NO_IMAGE_POLICY = "allowed image repositories are not supported by Conveyor"
NO_EXECUTION_LOG = "the execution log of /run and /job calls is not kept; every call is a job in /system/logs/SERVICE"

UNSUPPORTED: list[tuple[str, list[str], str]] = [
    ("/system/volumes", ["GET", "POST"], NO_VOLUMES),
    ("/system/volumes/{volume}", ["GET", "DELETE"], NO_VOLUMES),
    ("/system/quotas/user", ["GET"], NO_QUOTAS),
    ("/system/quotas/user/{user}", ["GET", "PUT"], NO_QUOTAS),
    ("/system/federation/{service}", ["GET", "POST", "PUT", "DELETE"], NO_FEDERATION),
    ("/system/metrics", ["GET"], NO_METRICS),
    ("/system/metrics/breakdown", ["GET"], NO_METRICS),
    ("/system/metrics/{service}", ["GET"], NO_METRICS),
    ("/system/services/{service}/deployment/logs", ["GET"], NO_EXPOSED),
    ("/system/services/{service}/stop", ["POST"], NO_EXPOSED),
    ("/system/services/{service}/start", ["POST"], NO_EXPOSED),
    ("/system/services/{service}/restart", ["POST"], NO_EXPOSED),
    ("/system/services/{service}/auth", ["GET"], NO_EXPOSED),
    ("/system/config", ["PUT"], NO_IMAGE_POLICY),
    ("/system/logs", ["GET"], NO_EXECUTION_LOG),
]


def _refuse(reason: str, path: str) -> Callable[..., None]:
    """An endpoint that answers 501, declaring the path's parameters so the OpenAPI document is valid."""

    def endpoint(**_: str) -> None:
        raise HTTPException(501, reason)

    parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str, default=Path())
        for name in re.findall(r"{(\w+)}", path)
    ]
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return endpoint


for path, methods, reason in UNSUPPORTED:
    for method in methods:
        slug = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
        router.add_api_route(
            path,
            _refuse(reason, path),
            methods=[method],
            summary=reason,
            status_code=501,
            operation_id=f"unsupported_{method.lower()}_{slug}",
        )
