"""Per-client rate limiting: a token bucket per (client, bucket) kept in Table Storage.

Every API instance reads the client's row, refills it for the time since its last
update, takes a token and writes it back on the condition that nobody changed it in
between (ETag compare-and-swap). Two instances racing for a client's last token cannot
both win it: the loser re-reads and finds the bucket empty. So the limit holds however
many instances serve the API, with no state in any one of them.

Rows are keyed by a hash of the client (an address, an API key id, a principal), so
the table holds no addresses in the clear. Idle rows are deleted by ``purge_idle`` (the
timer): a bucket untouched for long enough is full again, which is what no row means.

Status reads use the same bucket arithmetic in memory (``LocalRateLimiter``): they are
frequent and cheap, and a storage round trip per poll cost more than the poll itself.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

log = logging.getLogger(__name__)

# A losing compare-and-swap retries with a short random pause; a client whose own
# requests contend this hard is refused (as if its bucket were empty) rather than
# holding a worker thread.
MAX_ATTEMPTS = 12
# How far into debt ``charge`` may take a bucket, in bursts.
MAX_DEBT = 10


@dataclass(frozen=True)
class Bucket:
    name: str  # the RowKey: "submit", "read"
    per_minute: float  # refill rate; 0 = unlimited
    burst: int  # capacity: how many requests a full bucket allows back to back

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0

    @property
    def full_after(self) -> float:
        """Seconds after which an untouched bucket is full again."""
        return self.burst / self.per_second if self.enabled else 0.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: float = 0.0
    retry_after: int = 0  # whole seconds until a token is there (for Retry-After)


ALLOWED = Decision(True, math.inf)


def client_key(client: str) -> str:
    """The table key for a client: a hash, so no address or key id is stored as such and
    no character of it can clash with Table Storage's key rules."""
    return hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class RateLimiter:
    def __init__(self, table: TableClient, clock=time.time):
        self.table = table
        self.clock = clock
        self._table_ready = False
        self._lock = threading.Lock()

    def _ensure_table(self) -> None:
        if not self._table_ready:
            with self._lock:
                if not self._table_ready:
                    _create_if_missing(self.table)
                    self._table_ready = True

    def take(self, client: str, bucket: Bucket, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from ``client``'s ``bucket``, or say how long to wait."""
        return self._spend(client, bucket, cost, on_credit=False)

    def charge(self, client: str, bucket: Bucket, cost: float) -> Decision:
        """Spend ``cost`` tokens for work already accepted (a batch's further images),
        into debt if need be: the client's next requests wait until it is paid off."""
        return self._spend(client, bucket, cost, on_credit=True)

    def _spend(self, client: str, bucket: Bucket, cost: float, on_credit: bool) -> Decision:
        if not bucket.enabled or cost <= 0:
            return ALLOWED
        self._ensure_table()
        key = client_key(client)
        for attempt in range(MAX_ATTEMPTS):
            try:
                row = self.table.get_entity(key, bucket.name)
            except ResourceNotFoundError:
                row = None
            now = self.clock()
            if row is None:
                tokens, stamp = float(bucket.burst), now
            else:
                last = float(row.get("updated", now))
                # Instances' clocks differ a little: never refill backwards, never move the
                # stamp back.
                tokens = min(float(bucket.burst), float(row.get("tokens", 0.0)) + max(0.0, now - last) * bucket.per_second)
                stamp = max(now, last)
            if tokens < cost and not on_credit:
                wait = (cost - tokens) / bucket.per_second
                return Decision(False, tokens, max(1, math.ceil(wait)))
            left = max(tokens - cost, -MAX_DEBT * bucket.burst)
            entity = {"PartitionKey": key, "RowKey": bucket.name, "tokens": left, "updated": stamp}
            try:
                if row is None:
                    self.table.create_entity(entity)
                else:
                    self.table.update_entity(
                        entity, mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                return Decision(True, left)
            except (ResourceModifiedError, ResourceExistsError):
                # Another request (here or on another instance) spent from this bucket
                # between our read and our write: look again.
                time.sleep(random.uniform(0.002, 0.01 * (attempt + 1)))
            except ResourceNotFoundError:
                # The row was purged between read and write, or the table is gone.
                self._table_ready = False
                self._ensure_table()
        log.warning("rate limit row for %s too contended; refusing this request", key[:8])
        return Decision(False, 0.0, 1)

    def purge_idle(self, buckets: list[Bucket], now: float | None = None) -> int:
        """Delete rows of buckets that have been full for a while (no row = full)."""
        if not any(b.enabled for b in buckets):
            return 0
        now = self.clock() if now is None else now
        self._ensure_table()
        removed = 0
        for bucket in buckets:
            if not bucket.enabled:
                continue
            cutoff = now - bucket.full_after - 60
            rows = self.table.query_entities(
                "RowKey eq @name and updated lt @cutoff", parameters={"name": bucket.name, "cutoff": cutoff},
                select=["PartitionKey", "RowKey", "tokens", "updated"],
            )
            for row in rows:
                refilled = float(row.get("tokens", 0.0)) + (now - float(row.get("updated", now))) * bucket.per_second
                if refilled < bucket.burst:
                    continue  # still paying off a debt
                try:
                    self.table.delete_entity(row["PartitionKey"], row["RowKey"])
                    removed += 1
                except ResourceNotFoundError:
                    pass
        return removed


class LocalRateLimiter:
    """The same bucket kept in this process's memory: for status reads, which are cheap
    and frequent. A Table round trip per poll doubled the storage traffic of polling
    (see BENCHMARKS.md, Load test); a client spread over N instances may read N times
    the limit, which is still a limit. Submissions use ``RateLimiter``."""

    MAX_CLIENTS = 50_000

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._rows: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str, bucket: Bucket, cost: float = 1.0) -> Decision:
        if not bucket.enabled:
            return ALLOWED
        now = self.clock()
        key = (client, bucket.name)
        with self._lock:
            tokens, last = self._rows.get(key, (float(bucket.burst), now))
            tokens = min(float(bucket.burst), tokens + max(0.0, now - last) * bucket.per_second)
            if tokens < cost:
                self._rows[key] = (tokens, now)
                return Decision(False, tokens, max(1, math.ceil((cost - tokens) / bucket.per_second)))
            if len(self._rows) >= self.MAX_CLIENTS and key not in self._rows:
                self._forget_full(now, bucket)
            self._rows[key] = (tokens - cost, now)
            return Decision(True, tokens - cost)

    def _forget_full(self, now: float, bucket: Bucket) -> None:
        idle = [k for k, (_, last) in self._rows.items() if now - last > bucket.full_after]
        for k in idle or list(self._rows)[: len(self._rows) // 2]:
            del self._rows[k]


def _create_if_missing(table: TableClient) -> None:
    try:
        table.create_table()
    except ResourceExistsError:
        pass


def buckets(settings) -> tuple[Bucket, Bucket]:
    """The API's two buckets per client, from the settings: submissions (Table Storage)
    and reads (in memory)."""
    return (
        Bucket("submit", settings.rate_limit_per_minute, settings.rate_limit_burst),
        Bucket("read", settings.rate_limit_reads_per_minute, settings.rate_limit_reads_burst),
    )


def purge_idle_buckets(settings, storage) -> int:
    """The timer's share: forget clients whose buckets have long been full again."""
    limiter = RateLimiter(storage.tables.get_table_client(settings.rate_limit_table))
    return limiter.purge_idle([buckets(settings)[0]])
