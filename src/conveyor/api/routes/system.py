"""Health, cluster information and configuration (OSCAR `/health`, `/system/info|config|status`)."""

from __future__ import annotations

import platform as host
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from conveyor import __version__
from conveyor.api.deps import AdminDep, StatusDep
from conveyor.backends.base import Resources
from conveyor.control.status import PlatformFigures
from conveyor.model.job import OSCAR_STATUS

router = APIRouter()


@router.get("/health", response_class=PlainTextResponse, tags=["system"])
def health() -> str:
    return "Ok"


@router.get("/ready", response_class=PlainTextResponse, tags=["system"], responses={503: {"description": "not ready"}})
def ready(status: StatusDep) -> Response:
    """Readiness, open as `/health` is (probes carry no credentials): 200 `ready` while the platform's
    store, the ledger and every backend answer, else 503 naming the parts that do not; the reasons are
    in `/conveyor/v1/health`. `/health` is liveness: the process answers."""
    readiness = status.readiness()
    if readiness.ready:
        return PlainTextResponse("ready")
    parts = ", ".join(readiness.problems)
    return PlainTextResponse(f"not ready: {parts}", status_code=503, headers={"Retry-After": "5"})


@router.get("/conveyor/v1/health", dependencies=[AdminDep], tags=["conveyor"])
def health_report(status: StatusDep) -> dict[str, Any]:
    """Readiness with its reasons, and the stores behind services that do not answer (their jobs wait)."""
    readiness = status.readiness()
    return {"ready": readiness.ready, "problems": readiness.problems, "waiting_for_stores": readiness.waiting}


@router.get("/system/info", dependencies=[AdminDep], tags=["system"])
def info() -> dict[str, Any]:
    return {
        "version": f"conveyor-{__version__}",
        "git_commit": "",
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(host.machine(), host.machine()),
        "kubernetes_version": "",
    }


@router.get("/system/config", dependencies=[AdminDep], tags=["system"])
def config(status: StatusDep) -> dict[str, Any]:
    return {
        "config": {
            "name": "conveyor",
            "namespace": "conveyor",
            "services_namespace": "conveyor",
            "gpu_available": False,
            "interLink_available": False,
            "yunikorn_enable": False,
            "kueue_enable": False,
            "volume_enable": False,
            "oidc_groups": [""],
            "minio_quota_enabled": False,
        },
        "minio_provider": status.store.model_dump(),
        "allowed_image_repositories": [],
    }


@router.get("/system/status", dependencies=[AdminDep], tags=["system"])
def oscar_status(status: StatusDep) -> dict[str, Any]:
    """OSCAR's StatusInfo for the one node Conveyor runs on: what jobs may use and what they hold now.

    Counts come from figures that cost the same whatever the store holds: jobs by state from the
    ledger, objects from the store's own counters (not a listing of every bucket)."""
    figures = status.figures()
    by_state: dict[str, int] = {}
    for state, number in figures.jobs.items():
        by_state[OSCAR_STATUS[state]] = by_state.get(OSCAR_STATUS[state], 0) + number
    return {
        "cluster": _cluster(figures),
        "oscar": {
            "deployment_name": "conveyor",
            "ready": True,
            "deployment": {
                "available_replicas": 1,
                "ready_replicas": 1,
                "replicas": 1,
                "creation_timestamp": status.started_at.isoformat(),
                "strategy": "embedded",
                "labels": {},
            },
            "jobs_count": sum(by_state.values()),
            "pods": {"total": by_state.get("Pending", 0) + by_state.get("Running", 0), "states": by_state},
            "oidc": {"enabled": False, "issuers": [], "groups": []},
        },
        "minio": {"buckets_count": figures.store.buckets, "total_objects": figures.store.objects},
    }


def _cluster(figures: PlatformFigures) -> dict[str, Any]:
    resources = figures.resources or Resources(cpus=0, memory=0, used_cpus=0, used_memory=0)
    free_cores = max(0.0, resources.cpus - resources.used_cpus)
    free_bytes = max(0, resources.memory - resources.used_memory)
    return {
        "nodes_count": 1,
        "metrics": {
            "cpu": {
                "total_free_cores": int(free_cores),
                "max_free_on_node_cores": int(free_cores),
                "total_schedulable_cores": int(resources.cpus),
                "total_schedulable_on_node_cores": int(resources.cpus),
            },
            "memory": {
                "total_free_bytes": free_bytes,
                "max_free_on_node_bytes": free_bytes,
                "total_schedulable_bytes": resources.memory,
                "max_schedulable_on_node_bytes": resources.memory,
            },
            "gpu": {"total_gpu": 0},
        },
        "nodes": [
            {
                "name": host.node(),
                "cpu": {
                    "capacity_cores": int(resources.cpus),
                    "usage_cores": int(resources.used_cpus),
                    "request_cores": int(resources.used_cpus),
                },
                "memory": {
                    "capacity_bytes": resources.memory,
                    "usage_bytes": resources.used_memory,
                    "request_bytes": resources.used_memory,
                },
                "gpu": 0,
                "is_interlink": False,
                "status": "Ready",
                "conditions": [{"type": "Ready", "status": True}],
            }
        ],
    }


@router.get("/conveyor/v1/status", dependencies=[AdminDep], tags=["conveyor"])
def status(board: StatusDep) -> dict[str, Any]:
    return board.summary()
