"""Idempotency-Key: a retried POST returns the first answer instead of making a second job.

Stripe's rules: the same key from the same caller within 24 hours answers with what the first
request made (the same job or batch: no second upload, no second queue message); the same key
with a different request is an error. A key is reserved by inserting its row (Table Storage's
insert fails with ResourceExistsError when the row is there), so of two concurrent duplicates
exactly one does the work; the other waits for its answer. Rows live in the jobs table under a
partition of their own per (caller, key) and are purged with the jobs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from .records import utcnow

ROW_KEY = "idempotency"
WINDOW = timedelta(hours=24)
# A reservation whose request has not answered after this long died with its process: the key
# is free again rather than stuck for a day.
ABANDONED_AFTER = timedelta(seconds=60)
PENDING, DONE = "pending", "done"


class IdempotencyKeyReused(ValueError):
    """The key was used within 24 hours for a different request."""


class IdempotencyKeyInUse(RuntimeError):
    """The first request with this key is still being answered."""


@dataclass(frozen=True)
class Made:
    kind: str  # "job" | "batch"
    id: str


def fingerprint(*parts: bytes | str) -> str:
    """The request's identity: a hash over its parts (method and path, the form's fields, each
    file's name and bytes), each length-prefixed so no two different lists hash alike."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _aware(value) -> datetime:
    return value.replace(tzinfo=timezone.utc) if isinstance(value, datetime) and value.tzinfo is None else value


class IdempotencyKeys:
    def __init__(self, table: TableClient, wait_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.table = table
        self.wait_seconds = wait_seconds
        self.clock = clock

    @staticmethod
    def partition(caller: str, key: str) -> str:
        # Hashed: a key is the caller's free text, and a partition key may not hold / \\ # ?.
        return "idem-" + hashlib.sha256(f"{caller}\n{key}".encode("utf-8", "surrogatepass")).hexdigest()

    def once(self, caller: str, key: str, request: str, make: Callable[[], Made]) -> tuple[Made, bool]:
        """What ``make()`` made for the first request with this key, and whether this is a
        replay. Raises IdempotencyKeyReused (another request had the key), IdempotencyKeyInUse
        (the first is still running after ``wait_seconds``). If ``make`` raises, the key is
        released: a refused request (4xx, 503) may be sent again with the same key."""
        partition = self.partition(caller, key)
        deadline = self.clock() + self.wait_seconds
        while True:
            etag = self._reserve(partition, request)
            if etag is None:
                row = self._row(partition)
                if row is None:
                    continue  # it expired or was released meanwhile: reserve it again
                if row["request"] != request:
                    raise IdempotencyKeyReused(key)
                if row["state"] == DONE:
                    return Made(row["kind"], row["made"]), True
                if _aware(row["claimed_at"]) < utcnow() - ABANDONED_AFTER:
                    etag = self._take_over(row)
                if etag is None:
                    if self.clock() >= deadline:
                        raise IdempotencyKeyInUse(key)
                    time.sleep(0.1)
                    continue
            break
        try:
            made = make()
        except BaseException:
            self._release(partition, etag)
            raise
        self.table.update_entity({"PartitionKey": partition, "RowKey": ROW_KEY, "state": DONE, "kind": made.kind,
                                  "made": made.id}, mode=UpdateMode.MERGE)
        return made, False

    def _reserve(self, partition: str, request: str) -> str | None:
        now = utcnow()
        try:
            metadata = self.table.create_entity({"PartitionKey": partition, "RowKey": ROW_KEY, "request": request,
                                                 "state": PENDING, "claimed_at": now, "expires_at": now + WINDOW})
        except ResourceExistsError:
            return None
        return metadata.get("etag")

    def _row(self, partition: str):
        """The key's row, or None when there is none, or it is past its 24 hours (then removed)."""
        try:
            row = self.table.get_entity(partition, ROW_KEY)
        except ResourceNotFoundError:
            return None
        if _aware(row["expires_at"]) <= utcnow():
            self._release(partition, row.metadata.get("etag"))
            return None
        return row

    def _take_over(self, row) -> str | None:
        row["claimed_at"] = utcnow()
        try:
            metadata = self.table.update_entity(row, mode=UpdateMode.REPLACE, etag=row.metadata.get("etag"),
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return metadata.get("etag")

    def _release(self, partition: str, etag: str | None) -> None:
        try:
            self.table.delete_entity(partition, ROW_KEY, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass

    def purge_expired(self, now: datetime) -> int:
        rows = list(self.table.query_entities("RowKey eq @row and expires_at lt @now",
                                              parameters={"row": ROW_KEY, "now": now}, select=["PartitionKey"]))
        for row in rows:
            try:
                self.table.delete_entity(row["PartitionKey"], ROW_KEY)
            except ResourceNotFoundError:
                pass
        return len(rows)
