"""The one configuration object.

Built once at the edge (the CLI callback or a test) and passed down explicitly. Sources, highest
first: explicit arguments (CLI options), environment (`CONVEYOR_*`, nested with `__`, e.g.
`CONVEYOR_API__PORT=9090`), the TOML file (`CONVEYOR_CONFIG`, else
`~/.config/conveyor/conveyor.toml`), defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from conveyor.errors import ConfigError
from conveyor.model.kinds import BackendKind

Runtime = Literal["auto", "container", "process"]
SlurmRuntime = Literal["process", "podman", "docker", "apptainer", "singularity"]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "conveyor"


def config_file() -> Path:
    explicit = os.environ.get("CONVEYOR_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "conveyor" / "conveyor.toml"


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    public_url: str | None = Field(None, description="URL clients use, when it differs from host:port")
    max_body_mb: int = Field(256, ge=1, description="largest request body accepted (413 above)")


class StorageSettings(BaseModel):
    s3_port: int = Field(8333, ge=0, le=65535, description="embedded SeaweedFS S3 port; 0 picks a free port")
    s3_public_endpoint: str | None = Field(None, description="S3 URL clients use, when it differs")
    region: str = "us-east-1"
    start_timeout_s: float = 60.0


class LocalBackendSettings(BaseModel):
    runtime: Runtime = Field("auto", description="container, process, or auto (container when an engine answers)")
    docker_host: str | None = Field(None, description="Docker Engine API URL (default: DOCKER_HOST, then sockets)")
    network: str | None = Field(None, description="container network mode (default: the engine's)")
    cpus: float | None = Field(None, gt=0, description="CPUs jobs may use together (default: all)")
    memory: str | None = Field(None, description="memory jobs may use together (default: all RAM)")
    max_jobs: int = Field(64, ge=1, description="jobs running at once, whatever their size")
    warm: bool = Field(True, description="run successive jobs of a service in running containers (exec)")
    warm_max_jobs: int = Field(100, ge=1, description="a warm container is replaced after this many jobs")
    warm_idle_s: float = Field(60.0, gt=0, description="a warm container without work this long is removed")


class SlurmSettings(BaseModel):
    """How jobs of services with `backend: slurm` reach a Slurm cluster (sbatch/squeue on this host)."""

    enabled: bool = Field(False, description="submit jobs to Slurm (implied by backend = 'slurm')")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_options: list[str] = Field(default_factory=list, description="more sbatch options, e.g. ['--nice=10']")
    runtime: SlurmRuntime = Field("process", description="how nodes run scripts: process, podman, docker, apptainer")
    engine_options: list[str] = Field(
        default_factory=list, description="options before the engine's `run`, e.g. ['--storage-driver', 'vfs']"
    )
    run_options: list[str] = Field(default_factory=list, description="options of `podman/docker run`, `apptainer exec`")
    python: str | None = Field(None, description="the nodes' Python with Conveyor installed (default: this one)")
    shared_dir: Path | None = Field(None, description="a directory the nodes see at the same path (default: data dir)")
    scratch_dir: str | None = Field(None, description="node-local directory for work dirs (default: $TMPDIR or /tmp)")
    max_pending_per_service: int = Field(100, ge=1, description="jobs of one service in Slurm at once; the rest wait")
    poll_interval_s: float = Field(2.0, gt=0, description="how often squeue is asked (one call for all jobs)")
    array_window_s: float = Field(
        0.0, ge=0, description="> 0: jobs submitted within this window go as one job array (one sbatch call)"
    )
    time_margin_s: int = Field(300, ge=0, description="walltime = the service's timeout + this, for staging")
    forget_after_s: float = Field(30.0, gt=0, description="a job squeue no longer shows is declared lost after this")


class KubernetesSettings(BaseModel):
    """How jobs of services with `backend: kubernetes` become batch/v1 Jobs in a cluster."""

    enabled: bool = Field(False, description="run jobs as Kubernetes Jobs (implied by backend = 'kubernetes')")
    kubeconfig: Path | None = Field(None, description="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    context: str | None = Field(None, description="the kubeconfig's context (default: its current one)")
    namespace: str = "default"
    api_url: str | None = Field(None, description="the platform's API as pods reach it (default: its public URL)")
    stager_image: str = Field("localhost/busybox:local", description="image with busybox sh + wget: stages files")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="for every container (default: Kubernetes' own)"
    )
    host_network: bool = Field(False, description="pods on the node's network (e.g. to reach a loopback API)")
    service_account: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="as in a pod spec")
    image_pull_secrets: list[str] = Field(default_factory=list, description="names of Secrets in the namespace")
    ttl_s: int = Field(300, ge=0, description="a finished Job is deleted by Kubernetes after this")
    time_margin_s: int = Field(60, ge=0, description="activeDeadlineSeconds = the service's timeout + this")
    max_pending_per_service: int = Field(100, ge=1, description="jobs of one service in the cluster at once")
    image_pull_timeout_s: float = Field(
        120.0, ge=0, description="a pod that cannot pull an image this long fails its job (at once: never pullable)"
    )
    unschedulable_timeout_s: float = Field(300.0, ge=0, description="a pod unschedulable this long fails its job")


class DispatchSettings(BaseModel):
    retry_base_s: float = Field(2.0, gt=0, description="first retry waits about this long; doubles each attempt")
    retry_max_s: float = Field(300.0, gt=0, description="longest wait between attempts")
    lineage_limit: int = Field(16, ge=1, description="jobs in a row that may trigger each other")
    reconcile_interval_s: float = Field(60.0, ge=0, description="how often inputs are listed for lost events; 0: never")
    min_free_mb: int = Field(
        64, ge=0, description="no job starts while the data directory's disk has less free (MB); 0: only when full"
    )


class ClientSettings(BaseModel):
    """How the CLI reaches a platform other than the one `conveyor up` runs on this data dir."""

    endpoint: str | None = Field(None, description="API URL of a Conveyor or an OSCAR cluster")
    user: str | None = None
    password: str | None = None
    api: Literal["auto", "conveyor", "oscar"] = Field(
        "auto", description="oscar: use OSCAR's routes only (auto detects them)"
    )
    cluster_id: str | None = Field(
        None, description="this platform's cluster id: which entries of a multi-cluster FDL `apply` deploys"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    ledger_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in the data dir")
    admin_user: str = "conveyor"
    admin_password: str | None = Field(None, description="default: generated on first start, kept in data dir")
    api: ApiSettings = Field(default_factory=ApiSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    backend: BackendKind = Field("local", description="where jobs of services that name no backend run")
    local: LocalBackendSettings = Field(default_factory=LocalBackendSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    client: ClientSettings = Field(default_factory=ClientSettings)
    providers: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="storage providers for put/get/ls, as in an FDL's storage_providers"
    )
    clusters: dict[str, ClientSettings] = Field(
        default_factory=dict,
        description="other clusters by id (endpoint, user, password), as in oscar-cli's config: an FDL's "
        "minio.<cluster-id> is that cluster's store",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file()
        try:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}; fix it or set CONVEYOR_CONFIG") from None
        except OSError as error:
            raise ConfigError(f"{path} cannot be read: {error.strerror}") from None
        return (init_settings, env_settings, toml)

    @property
    def enabled_backends(self) -> list[str]:
        """The local backend always runs; Slurm and Kubernetes when enabled, or when the default."""
        return [
            "local",
            *(["slurm"] if self.slurm.enabled or self.backend == "slurm" else []),
            *(["kubernetes"] if self.kubernetes.enabled or self.backend == "kubernetes" else []),
        ]

    @property
    def resolved_ledger_url(self) -> str:
        return self.ledger_url or f"sqlite:///{self.data_dir / 'conveyor.db'}"
