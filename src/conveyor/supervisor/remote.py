"""Staging for jobs whose pod has neither Python nor store credentials (the Kubernetes backend).

    pod (busybox wget) ── GET  /conveyor/v1/jobs/{job}/script ──▶ the service's script
                       ── GET  /conveyor/v1/jobs/{job}/input  ──▶ the input object's bytes
                       ── POST /conveyor/v1/jobs/{job}/outputs/{name} ──▶ stored as stage_out stores it

Each call carries a token that is good for one job only: an HMAC of the job id and attempt under the
platform's secret, so a restarted platform recognises the tokens of the pods it adopts, and a pod
holds no credential of the store or of the admin. A job is open to its pod from `open_job` until
`close_job`; the outputs stored meanwhile are what the job's outcome lists.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from conveyor.errors import NotFound, UnsafeKeyError
from conveyor.model.event import ObjectInfo
from conveyor.model.job import JobSpec
from conveyor.storage.registry import ProviderRegistry
from conveyor.supervisor import contract
from conveyor.supervisor.stage import decode_request_body, safe_input_name, stage_in_object, stage_out, sync_response

_CHUNK = 1 << 20


class RemoteStaging:
    """The jobs open to their pods, and what their pods may read and write."""

    def __init__(self, storage: ProviderRegistry, secret: str) -> None:
        self.storage = storage
        self._key = hashlib.sha256(b"conveyor remote staging\x00" + secret.encode()).digest()
        self._jobs: dict[str, JobSpec] = {}
        self._outputs: dict[str, list[ObjectInfo]] = {}
        self._kept: dict[str, Path] = {}
        """Synchronous jobs (`/run`): every file their pod sent, for the response."""
        self._lock = threading.Lock()

    def token_for(self, spec: JobSpec) -> str:
        message = f"{spec.job_id}\x00{spec.attempt}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def open_job(self, spec: JobSpec) -> str:
        """Let the job's pod stage; returns its token."""
        with self._lock:
            self._jobs[spec.job_id] = spec
            self._outputs.setdefault(spec.job_id, [])
        return self.token_for(spec)

    def close_job(self, job_id: str) -> list[ObjectInfo]:
        """No more staging for the job; returns the outputs its pod stored."""
        with self._lock:
            self._jobs.pop(job_id, None)
            kept = self._kept.pop(job_id, None)
            outputs = self._outputs.pop(job_id, [])
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)
        return outputs

    def response(self, job_id: str, script_output: bytes) -> bytes:
        """What `/run` answers for a synchronous job, from the files its pod sent (call before close_job)."""
        with self._lock:
            kept = self._kept.get(job_id)
        return sync_response(kept, script_output) if kept is not None else script_output

    def outputs(self, job_id: str) -> list[ObjectInfo]:
        with self._lock:
            return list(self._outputs.get(job_id, []))

    def job(self, job_id: str, token: str | None) -> JobSpec:
        """The open job the token is for; NotFound otherwise (the same answer for a wrong token)."""
        with self._lock:
            spec = self._jobs.get(job_id)
        if spec is None or token is None or not secrets.compare_digest(token, self.token_for(spec)):
            raise NotFound(f"no job {job_id!r} is staging with this token")
        return spec

    def input_name(self, spec: JobSpec) -> str:
        """The file name of the input in the pod's input directory, as the local supervisor names it."""
        return safe_input_name(spec.event.ref.key) if spec.event is not None else f"event-file-{spec.job_id}"

    def read_script(self, job_id: str, token: str | None) -> bytes:
        return self.job(job_id, token).service.script.encode()

    def read_input(self, job_id: str, token: str | None) -> Iterator[bytes]:
        """The input's bytes (the object, or an HTTP invocation's decoded body), in chunks."""
        spec = self.job(job_id, token)
        if spec.event is None:
            if spec.request_path is None:
                raise NotFound(f"job {job_id} has neither an object nor a request body")
            yield decode_request_body(spec.request_path.read_bytes())
            return
        scratch = Path(tempfile.mkdtemp(prefix="conveyor-remote-in-"))
        try:
            path = stage_in_object(spec.event, self.storage.provider(spec.event.ref.provider, spec.service), scratch)
            with path.open("rb") as data:
                while chunk := data.read(_CHUNK):
                    yield chunk
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def store_output(self, job_id: str, token: str | None, relative: str, body: BinaryIO) -> list[ObjectInfo]:
        """One file the script wrote, stored in every output whose filters accept its name."""
        spec = self.job(job_id, token)
        parts = relative.split("/")
        if not relative or relative.startswith("/") or "\x00" in relative or any(p in ("", ".", "..") for p in parts):
            raise UnsafeKeyError(f"output name {relative!r} is not a relative path inside the output directory")
        scratch = Path(tempfile.mkdtemp(prefix="conveyor-remote-out-"))
        try:
            path = scratch.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                shutil.copyfileobj(body, out, _CHUNK)
            producer = {contract.PRODUCER_JOB_METADATA: spec.job_id, contract.PRODUCER_DEPTH_METADATA: str(spec.depth)}
            stored = stage_out(scratch, spec.service.output, self.storage.lookup_for(spec.service), producer)
            if spec.sync:
                self._keep(job_id, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        with self._lock:
            if job_id in self._outputs:
                self._outputs[job_id].extend(stored)
        return stored

    def _keep(self, job_id: str, scratch: Path) -> None:
        with self._lock:
            kept = self._kept.get(job_id)
            if kept is None:
                kept = self._kept[job_id] = Path(tempfile.mkdtemp(prefix="conveyor-remote-sync-"))
        shutil.copytree(scratch, kept, dirs_exist_ok=True)
