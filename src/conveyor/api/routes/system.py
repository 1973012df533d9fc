"""Health, cluster information and configuration (OSCAR `/health`, `/system/info|config|status`)."""

from __future__ import annotations

import platform as host
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from conveyor import __version__
from conveyor.api.deps import AdminDep, PlatformDep

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


@router.get("/conveyor/v1/status", dependencies=[AdminDep], tags=["conveyor"])
def status(platform: PlatformDep) -> dict[str, Any]:
    counts = platform.ledger.count_jobs()
    return platform.status() | {
        "jobs": {service: {state.value: n for state, n in states.items()} for service, states in counts.items()}
    }
