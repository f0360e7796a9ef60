"""API keys: created and revoked with ``python -m processing keys create|revoke|list``.

A key is ``frk_<id>_<secret>``: the id (public, 12 hex digits) names the row, the secret
is 256 random bits. Only the SHA-256 of the whole key is stored, so the table never
holds a usable key; a fast hash is enough because the key is high-entropy, not a password.
Presenting a key costs one point read, remembered for ``API_KEY_CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from ..config import new_secret

KEY_PREFIX = "frk"
PARTITION = "apikey"
_KEY_SHAPE = re.compile(r"^frk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeys:
    """The key table: create, revoke, list, verify."""

    def __init__(self, table: TableClient, cache_seconds: float = 30.0, clock=time.monotonic):
        self.table = table
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()
        self._table_ready = False

    def _ensure_table(self) -> None:
        if not self._table_ready:
            try:
                self.table.create_table()
            except ResourceExistsError:
                pass
            self._table_ready = True

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and never stored."""
        name = name.strip()
        if not name or len(name) > 100:
            raise ValueError("a key needs a name of 1-100 characters")
        self._ensure_table()
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, name, datetime.now(timezone.utc))
        self.table.create_entity(
            {"PartitionKey": PARTITION, "RowKey": key_id, "name": name, "hash": _hash(secret),
             "created_at": record.created_at}
        )
        return record, secret

    def revoke(self, key_id: str) -> ApiKey | None:
        """Mark a key revoked (the row stays, for the record). None if there is no such key."""
        self._ensure_table()
        try:
            row = self.table.get_entity(PARTITION, key_id)
        except ResourceNotFoundError:
            return None
        if not row.get("revoked_at"):
            row["revoked_at"] = datetime.now(timezone.utc)
            self.table.update_entity(row, mode=UpdateMode.MERGE)
        with self._lock:
            self._cache.clear()
        return _record(row)

    def list(self) -> Iterator[ApiKey]:
        self._ensure_table()
        rows = self.table.query_entities("PartitionKey eq @p", parameters={"p": PARTITION})
        return iter(sorted((_record(row) for row in rows), key=lambda k: k.created_at))

    def verify(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or None (unknown, malformed or revoked)."""
        match = _KEY_SHAPE.match(presented.strip())
        if not match:
            return None
        digest = _hash(presented.strip())
        now = self.clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached and cached[0] > now:
            return cached[1]
        self._ensure_table()
        try:
            row = self.table.get_entity(PARTITION, match.group(1))
        except ResourceNotFoundError:
            row = None
        record = None
        if row is not None and hmac.compare_digest(str(row.get("hash", "")), digest):
            record = _record(row)
            if not record.active:
                record = None
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()  # random keys cannot grow memory without bound
            self._cache[digest] = (now + self.cache_seconds, record)
        return record


    def webhook_secret(self, key_id: str) -> str | None:
        """The secret that signs this key's webhooks (whsec_...), made on first use and kept
        on the key's row; None for an unknown key."""
        self._ensure_table()
        while True:
            try:
                row = self.table.get_entity(PARTITION, key_id)
            except ResourceNotFoundError:
                return None
            if row.get("webhook_secret"):
                return row["webhook_secret"]
            row["webhook_secret"] = new_secret()
            try:  # two first uses at once: one secret wins, and both answer with it
                self.table.update_entity(row, mode=UpdateMode.MERGE, etag=row.metadata.get("etag"),
                                         match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError:
                continue
            return row["webhook_secret"]


def signing_secret(owner: str, keys: ApiKeys, service_secret: str) -> str | None:
    """Whose secret signs a job's webhooks: its API key's own (owner ``key:<id>``), else the
    service's WEBHOOK_SECRET (anonymous and signed-in callers); None when there is none."""
    if owner.startswith("key:"):
        return keys.webhook_secret(owner[len("key:"):])
    return service_secret or None


def _record(row) -> ApiKey:
    def moment(value):
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value or None

    return ApiKey(row["RowKey"], row.get("name", ""), moment(row.get("created_at")), moment(row.get("revoked_at")))


# -- the `keys` command ------------------------------------------------------------------


def keys_command(keys: ApiKeys, action: str, value: str | None, out=None) -> int:
    out = out or sys.stdout
    if action == "create":
        if not value:
            print("keys create needs a NAME", file=sys.stderr)
            return 2
        try:
            record, secret = keys.create(value)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        print(f"created key {record.id} ({record.name}). It is shown once; store it now:", file=out)
        print(secret, file=out)
        return 0
    if action == "revoke":
        if not value:
            print("keys revoke needs a key ID", file=sys.stderr)
            return 2
        record = keys.revoke(value)
        if record is None:
            print(f"no key with id {value}", file=sys.stderr)
            return 1
        print(f"revoked key {record.id} ({record.name})", file=out)
        return 0
    for record in keys.list():
        state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "active"
        print(f"{record.id}  {record.created_at:%Y-%m-%d %H:%M}  {state:<24}  {record.name}", file=out)
    return 0
