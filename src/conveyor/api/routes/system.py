"""Health, cluster information and configuration (OSCAR `/health`, `/system/info|config|status`)."""

from __future__ import annotations

import platform as host
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from conveyor import __version__
from conveyor.api.deps import AdminDep, PlatformDep
from conveyor.model.job import OSCAR_STATUS

router = APIRouter()


@router.get("/health", response_class=PlainTextResponse, tags=["system"])
def health() -> str:
    return "Ok"


@router.get("/system/info", dependencies=[AdminDep], tags=["system"])
def info() -> dict[str, Any]:
    return {
        "version": f"conveyor-{__version__}",
        "git_commit": "",
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(host.machine(), host.machine()),
        "kubernetes_version": "",
    }


@router.get("/system/config", dependencies=[AdminDep], tags=["system"])
def config(platform: PlatformDep) -> dict[str, Any]:
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
        "minio_provider": platform.minio_provider(),
        "allowed_image_repositories": [],
    }


@router.get("/system/status", dependencies=[AdminDep], tags=["system"])
def oscar_status(platform: PlatformDep) -> dict[str, Any]:
    """OSCAR's StatusInfo for the one node Conveyor runs on: what jobs may use and what they hold now."""
    capacity = platform.backend.capacity
    free_cores = max(0.0, capacity.cpus - capacity.used_cpus)
    free_bytes = max(0, capacity.memory - capacity.used_memory)
    counts = platform.ledger.count_jobs()
    by_state: dict[str, int] = {}
    for states in counts.values():
        for state, number in states.items():
            oscar_state = OSCAR_STATUS[state]
            by_state[oscar_state] = by_state.get(oscar_state, 0) + number
    store = platform.storage.default
    buckets = store.list_buckets()
    return {
        "cluster": {
            "nodes_count": 1,
            "metrics": {
                "cpu": {
                    "total_free_cores": int(free_cores),
                    "max_free_on_node_cores": int(free_cores),
                    "total_schedulable_cores": int(capacity.cpus),
                    "total_schedulable_on_node_cores": int(capacity.cpus),
                },
                "memory": {
                    "total_free_bytes": free_bytes,
                    "max_free_on_node_bytes": free_bytes,
                    "total_schedulable_bytes": capacity.memory,
                    "max_schedulable_on_node_bytes": capacity.memory,
                },
                "gpu": {"total_gpu": 0},
            },
            "nodes": [
                {
                    "name": host.node(),
                    "cpu": {
                        "capacity_cores": int(capacity.cpus),
                        "usage_cores": int(capacity.used_cpus),
                        "request_cores": int(capacity.used_cpus),
                    },
                    "memory": {
                        "capacity_bytes": capacity.memory,
                        "usage_bytes": capacity.used_memory,
                        "request_bytes": capacity.used_memory,
                    },
                    "gpu": 0,
                    "is_interlink": False,
                    "status": "Ready",
                    "conditions": [{"type": "Ready", "status": True}],
                }
            ],
        },
        "oscar": {
            "deployment_name": "conveyor",
            "ready": True,
            "deployment": {
                "available_replicas": 1,
                "ready_replicas": 1,
                "replicas": 1,
                "creation_timestamp": platform.started_at.isoformat(),
                "strategy": "embedded",
                "labels": {},
            },
            "jobs_count": sum(by_state.values()),
            "pods": {"total": by_state.get("Pending", 0) + by_state.get("Running", 0), "states": by_state},
            "oidc": {"enabled": False, "issuers": [], "groups": []},
        },
        "minio": {
            "buckets_count": len(buckets),
            "total_objects": sum(1 for bucket in buckets for _ in store.list(bucket)),
        },
    }


@router.get("/conveyor/v1/status", dependencies=[AdminDep], tags=["conveyor"])
def status(platform: PlatformDep) -> dict[str, Any]:
    counts = platform.ledger.count_jobs()
    return platform.status() | {
        "jobs": {service: {state.value: n for state, n in states.items()} for service, states in counts.items()}
    }
