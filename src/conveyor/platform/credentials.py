"""Secrets the embedded platform makes for itself on first start and keeps in its data dir."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import BaseModel


class Credentials(BaseModel):
    admin_user: str
    admin_password: str
    s3_access_key: str
    s3_secret_key: str
    webhook_token: str
    """Shared with the embedded SeaweedFS, which sends it with every event."""

    @classmethod
    def load_or_create(cls, path: Path, *, admin_user: str, admin_password: str | None) -> Credentials:
        """Reuse what an earlier start generated, so clients keep working across restarts."""
        stored = json.loads(path.read_text()) if path.exists() else {}
        credentials = cls(
            admin_user=admin_user,
            admin_password=admin_password or stored.get("admin_password") or secrets.token_urlsafe(18),
            s3_access_key=stored.get("s3_access_key") or "cv" + secrets.token_hex(9),
            s3_secret_key=stored.get("s3_secret_key") or secrets.token_urlsafe(30),
            webhook_token=stored.get("webhook_token") or secrets.token_hex(32),
        )
        if credentials.model_dump() != stored:
            _write_private(path, credentials.model_dump_json(indent=2))
        return credentials


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
