"""A service: an image, a script, resources, environment, the paths that trigger it and where
its results go. The shape is OSCAR's (reference/oscar-api.md §1.3.1) so FDL files and API
bodies written for OSCAR validate unchanged; fields Conveyor does not use are kept as extras.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.model.kinds import BACKEND_KINDS, DEFAULT_PROVIDER, ProviderId, normalize_provider

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 39
DEFAULT_MEMORY = "256Mi"
DEFAULT_CPU = "0.2"
DEFAULT_TIMEOUT_S = 3600
DEFAULT_RETRIES = 2
LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_MEMORY_UNITS = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)([kMGTPE]|[KMGTPE]i)?$")
_CPU_RE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)(m)?$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def bucket_name_problem(bucket: str) -> str | None:
    """Why `bucket` cannot be an S3 bucket's name, or None."""
    if _BUCKET_RE.match(bucket):
        return None
    return (
        f"bucket {bucket!r} is not a valid S3 bucket name: 3 to 63 lower-case letters, digits, "
        "'.' or '-', starting and ending with a letter or digit"
    )


def parse_memory(value: str) -> int:
    """Bytes in a Kubernetes memory quantity ("256Mi", "1Gi", "500M", "1073741824")."""
    text = str(value).strip()
    match = _MEMORY_RE.match(text)
    if not match:
        hint = ""
        lowered = re.match(r"^(\d+(?:\.\d+)?)([mgtk])i?b?$", text, re.IGNORECASE)
        if lowered:
            hint = f" (did you mean {lowered.group(1)}{lowered.group(2).upper()}i?)"
        raise ValueError(f"{value!r} is not a memory quantity; use e.g. 256Mi, 1Gi or 512M{hint}")
    number, unit = match.groups()
    size = int(float(number) * _MEMORY_UNITS[unit or ""])
    if size <= 0:
        raise ValueError(f"{value!r} must be more than zero bytes")
    return size


def parse_cpu(value: str | float | int) -> float:
    """Cores in a Kubernetes CPU quantity ("0.2", "1", "500m")."""
    text = str(value).strip()
    match = _CPU_RE.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a CPU quantity; use e.g. '0.5', '2' or '500m'")
    number, milli = match.groups()
    cores = float(number) / (1000 if milli else 1)
    if cores <= 0:
        raise ValueError(f"{value!r} must be more than zero cores")
    return cores


class StorageIO(BaseModel):
    """An input (trigger) or output path on a storage provider: `bucket[/folder...]`."""

    model_config = ConfigDict(extra="ignore")

    storage_provider: str = DEFAULT_PROVIDER
    path: str
    suffix: list[str] = Field(default_factory=list)
    prefix: list[str] = Field(default_factory=list)

    @field_validator("storage_provider", mode="before")
    @classmethod
    def _provider(cls, value: Any) -> str:
        return normalize_provider(value or DEFAULT_PROVIDER)

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> str:
        text = str(value if value is not None else "").strip(" /")
        if not text:
            raise ValueError("must not be empty: give bucket or bucket/folder")
        if any(part in ("", ".", "..") for part in text.split("/")):
            raise ValueError(f"{value!r} has an empty, '.' or '..' segment")
        return text

    @model_validator(mode="after")
    def _s3_bucket_name(self) -> StorageIO:
        if self.kind in ("minio", "s3") and "/" in self.path and (problem := bucket_name_problem(self.bucket)):
            raise ValueError(problem)
        return self

    @field_validator("suffix", "prefix", mode="before")
    @classmethod
    def _string_list(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return [str(v) for v in value]

    @property
    def provider_id(self) -> ProviderId:
        return ProviderId.parse(self.storage_provider)

    @property
    def kind(self) -> str:
        return self.provider_id.kind

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def folder(self) -> str:
        """The key prefix inside the bucket, without slashes at either end ("" for a whole bucket)."""
        return self.path.partition("/")[2]

    def key_for(self, relative_name: str) -> str:
        return f"{self.folder}/{relative_name}" if self.folder else relative_name

    def contains_key(self, key: str) -> bool:
        """Whether an object key lies under this path (folder markers excluded)."""
        if key.endswith("/"):
            return False
        return not self.folder or key.startswith(self.folder + "/")

    def accepts(self, relative_name: str) -> bool:
        """The FDL output filters: any prefix AND any suffix (an empty list passes)."""
        prefix_ok = not self.prefix or any(relative_name.startswith(p) for p in self.prefix)
        suffix_ok = not self.suffix or any(relative_name.endswith(s) for s in self.suffix)
        return prefix_ok and suffix_ok

    def is_within(self, other: StorageIO) -> bool:
        """True when this path equals `other` or lies under it on the same provider."""
        if self.storage_provider != other.storage_provider:
            return False
        return self.path == other.path or self.path.startswith(other.path + "/")


class Environment(BaseModel):
    """`environment:` of a service; keys are matched in any case (old clients send `Variables`)."""

    model_config = ConfigDict(extra="ignore")

    variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _any_case(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {str(k).lower(): v for k, v in data.items()}

    @field_validator("variables", "secrets", mode="before")
    @classmethod
    def _string_values(cls, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of NAME: value")
        return {str(k): "" if v is None else str(v) for k, v in value.items()}


class SlurmJobOptions(BaseModel):
    """A service's own sbatch settings; they override the platform's `[slurm]` ones."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_options: list[str] = Field(default_factory=list)


class BatchOptions(BaseModel):
    """Run several queued inputs of a service in one job run (a Conveyor extension; off by default).

    Batches form only from what is already queued: a lone upload still starts at once, alone.
    """

    model_config = ConfigDict(extra="forbid")

    max_files: int = Field(20, ge=1, le=1000)
    """At most this many inputs per run."""
    mode: Literal["each", "directory"] = "each"
    """`each`: the script runs once per input, as without batching (scripts need no change; saves the
    platform's per-job work). `directory`: the script runs once for the whole batch, every input in
    `$TMP_INPUT_DIR` and listed in `$INPUT_FILE_PATHS` (saves the process start too)."""


OSCAR_FIELDS_NOT_ACTED_ON: dict[str, str] = {
    "expose": "no exposed HTTP endpoint is created; use /run for synchronous calls",
    "mount": "no volume is mounted in the job; stage files in through the service's inputs",
    "volume": "no persistent volume is created",
    "visibility": "every service is visible to the admin (one user for now)",
    "allowed_users": "every service is visible to the admin (one user for now)",
    "isolation_level": "one token per service, as OSCAR's default",
    "vo": "virtual organisations are not checked",
    "replicas": "the service runs on this platform only",
    "delegation": "jobs are not delegated to other clusters",
    "federation": "jobs are not delegated to other clusters",
    "interlink_node_name": "jobs run on this platform's backends",
    "kserve": "no model server is deployed",
    "synchronous": "synchronous calls (/run) start a job each; nothing is kept warm for them",
    "total_cpu": "jobs are admitted by cpu and memory alone",
    "total_memory": "jobs are admitted by cpu and memory alone",
    "ephemeral_storage_request": "jobs use the data directory's disk",
    "enable_sgx": "no SGX device is requested",
    "image_prefetch": "images are pulled when the first job needs them",
    "image_pull_secrets": "only the kubernetes backend gives them to its pods; elsewhere the engine's own "
    "credentials pull images",
}
"""OSCAR fields Conveyor keeps (and returns) but does not act on: `apply` warns once per field."""
NO_SCRIPT = "OSCAR runs an exposed or model-serving service's image as a server; Conveyor does not"


class Service(BaseModel):
    """One service of a workflow. Unknown OSCAR fields are kept and returned as they came."""

    model_config = ConfigDict(extra="allow")

    name: str
    image: str
    script: str = ""
    """Empty for OSCAR's exposed and model-serving services: their jobs run nothing (`apply` says so)."""
    memory: str = DEFAULT_MEMORY
    cpu: str = DEFAULT_CPU
    enable_gpu: bool = False
    log_level: str = "INFO"
    timeout: int = DEFAULT_TIMEOUT_S
    file_stage_in: bool = False
    retries: int = Field(DEFAULT_RETRIES, ge=0, le=100)
    """Further attempts after a failure of the platform around the script (storage, engine, image)."""
    retry_script_failures: bool = False
    """Also retry when the script itself fails or times out (for flaky scripts)."""
    backend: str | None = None
    """Where its jobs run: `local` or `slurm`; None: the platform's default."""
    warm: bool | None = None
    """False: one fresh container per job even where the platform keeps warm containers."""
    slurm: SlurmJobOptions | None = None
    batch: BatchOptions | None = None
    """Several queued inputs per run (local backend); None: one input per run, as OSCAR does."""
    cluster_id: str = ""
    token: str = ""
    environment: Environment = Field(default_factory=Environment)
    input: list[StorageIO] = Field(default_factory=list)
    output: list[StorageIO] = Field(default_factory=list)
    storage_providers: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    @property
    def user_labels(self) -> dict[str, str]:
        """OSCAR's `annotations` then `labels` (labels win), as strings: they label the job's containers
        and make its Slurm comment."""
        extra = self.model_extra or {}
        merged: dict[str, str] = {}
        for field_name in ("annotations", "labels"):
            given = extra.get(field_name)
            if isinstance(given, dict):
                merged.update({str(key): str(value) for key, value in given.items()})
        return merged

    def fields_not_acted_on(self) -> list[str]:
        """`<service>: <field> is ignored: what Conveyor does instead`, for the OSCAR fields it keeps only."""
        given = self.model_extra or {}
        no_script = [] if self.script.strip() else [f"{self.name}: has no script: its jobs run nothing ({NO_SCRIPT})"]
        return no_script + [
            f"{self.name}: {name} is kept but not acted on: {instead}"
            for name, instead in OSCAR_FIELDS_NOT_ACTED_ON.items()
            if given.get(name) not in (None, "", [], {}, False, 0)
        ]

    @model_validator(mode="before")
    @classmethod
    def _lower_environment_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "environment" not in data:
            for key in list(data):
                if str(key).lower() == "environment":
                    data = {k: v for k, v in data.items() if k != key} | {"environment": data[key]}
                    break
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not 1 <= len(value) <= NAME_MAX:
            raise ValueError(f"must be 1 to {NAME_MAX} characters long")
        if not NAME_RE.match(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits and '-', starting and ending alphanumeric")
        return value

    @field_validator("image")
    @classmethod
    def _required_text(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError("is required and must not be empty")
        return value

    @field_validator("script")
    @classmethod
    def _unix_newlines(cls, value: str) -> str:
        return value.replace("\r\n", "\n")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str:
        value = DEFAULT_MEMORY if value in (None, "") else str(value).strip()
        parse_memory(value)
        return value

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> str:
        value = DEFAULT_CPU if value in (None, "") else str(value).strip()
        parse_cpu(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> str:
        level = str(value or "INFO").upper()
        return level if level in LOG_LEVELS else "INFO"

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> str | None:
        if value in (None, ""):
            return None
        if value not in BACKEND_KINDS:
            raise ValueError(f"unknown backend {value!r}; expected one of {', '.join(BACKEND_KINDS)}")
        return str(value)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive number of seconds")
        return value

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("input", "output", mode="before")
    @classmethod
    def _no_paths(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("storage_providers", mode="before")
    @classmethod
    def _no_providers(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _prefix_bare_paths(self) -> Service:
        """OSCAR puts a bucket-less minio/s3 path into a bucket named after the service."""
        for io in self.paths:
            if io.kind in ("minio", "s3") and "/" not in io.path:
                if not _BUCKET_RE.match(self.name):
                    raise ValueError(
                        f"path {io.path!r} has no bucket, so it would go in a bucket named after the service, "
                        f"and {self.name!r} is too short for a bucket name: write bucket/{io.path}"
                    )
                io.path = f"{self.name}/{io.path}"
        return self

    @property
    def paths(self) -> tuple[StorageIO, ...]:
        """Every path the service reads or writes: its inputs, then its outputs."""
        return (*self.input, *self.output)

    def provider_settings(self, provider: str) -> dict[str, Any] | None:
        """The `storage_providers.<kind>.<id>` settings `provider` names (None when undefined)."""
        name = ProviderId.parse(provider)
        return self.storage_providers.get(name.kind, {}).get(name.ident)

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)

    @property
    def cpu_cores(self) -> float:
        return parse_cpu(self.cpu)

    def public(self) -> Service:
        """A copy safe to show: secret values blanked, names kept."""
        copy = self.model_copy(deep=True)
        copy.environment.secrets = dict.fromkeys(self.environment.secrets, "")
        for kind, providers in copy.storage_providers.items():
            for ident, creds in providers.items():
                copy.storage_providers[kind][ident] = _hide_credentials(creds)
        clusters = (copy.model_extra or {}).get("clusters")
        if isinstance(clusters, dict):  # oscar-cli sends every cluster's credentials along
            copy.model_extra["clusters"] = {
                name: _hide_credentials(c) if isinstance(c, dict) else c for name, c in clusters.items()
            }
        return copy


SECRET_CREDENTIAL_KEYS = frozenset({"secret_key", "access_key", "password", "auth_password", "token", "refresh_token"})


def _hide_credentials(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: ("hidden" if k in SECRET_CREDENTIAL_KEYS and v else v) for k, v in settings.items()}
