"""Where things live under the data directory. One place decides every path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @property
    def lock_file(self) -> Path:
        """Locked by the running platform from the start of `conveyor up` to its end."""
        return self.root / ".lock"

    @property
    def database(self) -> Path:
        return self.root / "conveyor.db"

    @property
    def credentials(self) -> Path:
        """Admin password, S3 keys and the internal webhook token (mode 600)."""
        return self.root / "credentials.json"

    @property
    def platform_file(self) -> Path:
        """Where a running `conveyor up` says how to reach it."""
        return self.root / "platform.json"

    @property
    def seaweedfs(self) -> Path:
        return self.root / "seaweedfs"

    @property
    def requests(self) -> Path:
        """Bodies of HTTP invocations, kept until their job is gone."""
        return self.root / "requests"

    def work_dir(self, service: str, job_id: str, attempt: int) -> Path:
        """One directory per attempt: a script an earlier attempt left running cannot touch the next.
        Grouped by service: a warm container mounts its service's directory, no other."""
        return self.root / "work" / service / f"{job_id}-{attempt}"

    def batch_dir(self, service: str, job_id: str, attempt: int) -> Path:
        """Work dir of a batch run in one folder (Service.batch mode `directory`), led by `job_id`.
        Not the job's own work dir: after a crash, no job adopts a batch's run; each runs again."""
        return self.root / "work" / service / f"{job_id}-{attempt}-batch"

    def log_path(self, service: str, job_id: str) -> Path:
        return self.root / "logs" / service / f"{job_id}.log"

    def request_path(self, job_id: str) -> Path:
        return self.requests / f"{job_id}.body"

    def create(self) -> None:
        for directory in (self.root, self.root / "work", self.root / "logs", self.requests, self.seaweedfs):
            directory.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
