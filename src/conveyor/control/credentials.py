"""Who may call the platform: the admin account and the stores' webhook token.

The embedded platform makes these secrets on first start and keeps them in its data dir.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from conveyor.files import write_atomically


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
            write_atomically(path, credentials.model_dump_json(indent=2), mode=0o600)
        return credentials

    def is_admin(self, user: str, password: str) -> bool:
        """In constant time, so a wrong guess tells nothing about how close it came."""
        return _same(user, self.admin_user) & _same(password, self.admin_password)

    def is_webhook_token(self, token: str) -> bool:
        return _same(token, self.webhook_token)


class StoreAccess(BaseModel):
    """The platform's own store as clients reach it: OSCAR's `minio_provider`, all five keys (its
    clients need every one)."""

    endpoint: str
    verify: bool = False
    access_key: str
    secret_key: str
    region: str

    def without_keys(self) -> dict[str, Any]:
        """As a service's description shows it: where the store is, not how to get in."""
        return self.model_dump() | {"access_key": "hidden", "secret_key": "hidden"}


def _same(given: str, expected: str) -> bool:
    """compare_digest on bytes: on str it refuses anything but ASCII."""
    return secrets.compare_digest(given.encode(), expected.encode())
