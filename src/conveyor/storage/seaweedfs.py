"""The platform's own SeaweedFS: S3 for everything, but objects read through the filer's HTTP API.

Every job stages its input in, so one GET per file is on the per-file path. A 1 KB GET through
boto3 and SeaweedFS' S3 gateway costs ~1.8 ms of the platform's CPU and ~1.2 ms of SeaweedFS' (SigV4
signed and verified, botocore's hooks, the gateway's hop to the filer) and 4.8 ms of wall time; the
same read from the filer, under half of each and 1.5 ms (bench/results/filer-reads.md). Reads only:
an object written through the filer would miss the S3 user metadata (the producer job) and the owner
that the S3 gateway records.

The filer listens where the platform runs; Slurm nodes and clients keep using S3.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx

from conveyor.model.event import ObjectRef
from conveyor.storage.s3 import S3Credentials, S3Provider

_CHUNK = 1024 * 1024


class FilerReadS3Provider(S3Provider):
    def __init__(self, credentials: S3Credentials, *, filer_url: str, public_endpoint: str | None = None) -> None:
        super().__init__(credentials, public_endpoint=public_endpoint)
        self.filer_url = filer_url.rstrip("/")
        self._filer = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), limits=httpx.Limits(max_connections=64))

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        """From the filer; anything but a file's 200 (a missing object, a folder, which the filer
        lists, without an ETag; a filer error) goes the S3 way, so it fails as any S3 store does."""
        try:
            with self._filer.stream("GET", self._filer_path(ref)) as response:
                if response.status_code != 200 or "etag" not in response.headers:
                    return super().download(ref, dest)
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
            return dest
        except httpx.HTTPError:
            return super().download(ref, dest)

    def _filer_path(self, ref: ObjectRef) -> str:
        return f"{self.filer_url}/buckets/{quote(ref.bucket, safe='')}/{quote(ref.key, safe='/')}"

    def close(self) -> None:
        super().close()
        self._filer.close()
