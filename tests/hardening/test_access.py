"""Access and abuse: rate limits held in Table Storage, API keys, App Service principals,
job ownership, back-pressure, CORS and security headers."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time

import pytest

from processing.access.callers import client_address
from processing.access.keys import ApiKeys
from processing.access.ratelimit import Bucket, LocalRateLimiter, RateLimiter
from processing.storage import Storage
from tests.conftest import ROOT, env_for
from tests.hardening.helpers import app_client, blob_names, png_bytes, submit

LIMITED = {"rate_limit_per_minute": 6.0, "rate_limit_burst": 3}


def error_of(response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]


# -- rate limiting -------------------------------------------------------------------------


def test_submissions_over_the_burst_get_429_with_retry_after(settings, storage):
    with app_client(settings, storage, **LIMITED) as client:
        statuses = [submit(client, png_bytes()).status_code for _ in range(3)]
        refused = submit(client, png_bytes())
    assert statuses == [202, 202, 202]
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["code"] == "rate_limited" and "6 a minute" in error["message"]
    # 6 a minute = one token every 10 s.
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    # Refused before anything was stored: three inputs, three messages.
    assert len(blob_names(storage, settings.uploads_container)) == 3
    assert storage.jobs_queue.get_queue_properties().approximate_message_count == 3


def test_invalid_uploads_spend_tokens_too(settings, storage):
    """Refusal happens before the body is read, so garbage cannot be sent for free."""
    with app_client(settings, storage, **LIMITED) as client:
        statuses = [submit(client, b"not an image").status_code for _ in range(4)]
    assert statuses == [415, 415, 415, 429]


def test_bucket_refills_with_time(settings, storage):
    now = [1000.0]
    limiter = RateLimiter(storage.tables.get_table_client(settings.rate_limit_table), clock=lambda: now[0])
    bucket = Bucket("submit", per_minute=6, burst=2)
    assert [limiter.take("ip:1", bucket).allowed for _ in range(3)] == [True, True, False]
    assert limiter.take("ip:1", bucket).retry_after == 10
    now[0] += 9.0
    decision = limiter.take("ip:1", bucket)
    assert not decision.allowed and decision.retry_after == 1
    now[0] += 1.0
    assert limiter.take("ip:1", bucket).allowed
    assert not limiter.take("ip:1", bucket).allowed
    now[0] += 3600  # a long pause refills to the burst, no further
    assert [limiter.take("ip:1", bucket).allowed for _ in range(3)] == [True, True, False]
    # A clock that runs behind (another instance) never refills backwards.
    now[0] -= 30
    assert not limiter.take("ip:1", bucket).allowed


def test_read_buckets_live_in_memory_with_the_same_arithmetic():
    now = [0.0]
    limiter = LocalRateLimiter(clock=lambda: now[0])
    bucket = Bucket("read", per_minute=60, burst=2)
    assert [limiter.take("ip:1", bucket).allowed for _ in range(3)] == [True, True, False]
    assert limiter.take("ip:2", bucket).allowed  # another client, another bucket
    assert limiter.take("ip:1", bucket).retry_after == 1
    now[0] += 1.0
    assert limiter.take("ip:1", bucket).allowed and not limiter.take("ip:1", bucket).allowed


def test_the_limit_holds_across_instances_under_contention(settings):
    """Two API instances (separate clients, as in two processes) and 16 threads race for
    one client's bucket: the ETag compare-and-swap lets exactly ``burst`` through."""
    limiters = [RateLimiter(Storage(settings).tables.get_table_client(settings.rate_limit_table)) for _ in range(2)]
    bucket = Bucket("submit", per_minute=0.001, burst=20)  # no refill within the test
    allowed, errors = [], []

    def client(index: int) -> None:
        try:
            for _ in range(5):
                allowed.append(limiters[index % 2].take("ip:203.0.113.7", bucket).allowed)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(allowed) == 80 and sum(allowed) == 20


def test_two_api_instances_share_one_budget(settings, storage):
    other = Storage(settings)
    with app_client(settings, storage, **LIMITED) as first, app_client(settings, other, **LIMITED) as second:
        statuses = [submit(client, png_bytes()).status_code for client in (first, second, first, second)]
    assert statuses == [202, 202, 202, 429]


def test_forwarded_for_is_ignored_unless_trusted(settings, storage):
    with app_client(settings, storage, **LIMITED) as client:
        spoofed = [submit(client, png_bytes(), headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                   for i in range(4)]
    assert spoofed == [202, 202, 202, 429]  # one client however it names itself


def test_trusted_proxy_addresses_get_their_own_buckets(settings, storage):
    with app_client(settings, storage, trust_forwarded_for=True, **LIMITED) as client:
        def post(forwarded: str) -> int:
            return submit(client, png_bytes(), headers={"X-Forwarded-For": forwarded}).status_code

        # The proxy appends the address it saw; what the client wrote before it is ignored.
        first = [post(f"10.0.0.{i}, 198.51.100.1:5123") for i in range(4)]
        second = [post("198.51.100.2") for _ in range(3)]
    assert first == [202, 202, 202, 429]
    assert second == [202, 202, 202]


def test_client_addresses_are_normalised():
    assert client_address("127.0.0.1", "1.2.3.4", False) == "127.0.0.1"
    assert client_address("127.0.0.1", "6.6.6.6, 1.2.3.4:443", True) == "1.2.3.4"
    assert client_address(None, None, True) == "unknown"
    # One IPv6 subscriber usually holds a /64: it is one client.
    assert client_address(None, "[2001:db8:1:2::5]:80", True) == client_address(None, "2001:db8:1:2:ffff::9", True)
    assert client_address(None, "::ffff:192.0.2.4", True) == "192.0.2.4"


def test_status_reads_have_their_own_lighter_bucket(settings, storage):
    with app_client(settings, storage, rate_limit_reads_per_minute=60, rate_limit_reads_burst=2, **LIMITED) as client:
        job_id = submit(client, png_bytes()).json()["id"]
        reads = [client.get(f"/api/jobs/{job_id}").status_code for _ in range(3)]
        assert client.get("/api/health").status_code in (200, 503)  # never limited
        assert submit(client, png_bytes()).status_code == 202  # the submit bucket is separate
    assert reads == [200, 200, 429]


def test_idle_buckets_are_purged(settings, storage):
    now = [5000.0]
    limiter = RateLimiter(storage.tables.get_table_client(settings.rate_limit_table), clock=lambda: now[0])
    bucket = Bucket("submit", per_minute=6, burst=2)
    limiter.take("ip:a", bucket)
    now[0] += 5
    limiter.take("ip:b", bucket)
    assert limiter.purge_idle([bucket], now=now[0]) == 0
    assert limiter.purge_idle([bucket], now=5000 + 20 + 60 + 1) == 1  # full after 20 s, plus a minute
    rows = list(limiter.table.list_entities())
    assert len(rows) == 1


# -- API keys ------------------------------------------------------------------------------


def keys_cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "processing", "keys", *args], cwd=ROOT, env=env_for(settings),
                          capture_output=True, text=True, timeout=60)


def test_keys_command_creates_lists_and_revokes_hashed_keys(settings, storage):
    created = keys_cli(settings, "create", "photo lab")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("frk_") and len(key) >= 60
    key_id = key.split("_")[1]

    rows = list(storage.tables.get_table_client(settings.api_keys_table).list_entities())
    assert len(rows) == 1
    stored = json.dumps({k: str(v) for k, v in rows[0].items()})
    assert key not in stored and key.split("_", 2)[2] not in stored  # only the hash is kept
    assert rows[0]["hash"] == hashlib.sha256(key.encode()).hexdigest()

    listed = keys_cli(settings, "list")
    assert key_id in listed.stdout and "photo lab" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout

    with app_client(settings, storage, api_key_cache_seconds=0) as client:
        assert submit(client, png_bytes(), headers={"X-API-Key": key}).status_code == 202
        revoked = keys_cli(settings, "revoke", key_id)
        assert revoked.returncode == 0 and key_id in revoked.stdout
        after = submit(client, png_bytes(), headers={"X-API-Key": key})
    assert after.status_code == 401 and error_of(after)["code"] == "invalid_api_key"
    assert "revoked" in keys_cli(settings, "list").stdout
    assert keys_cli(settings, "revoke", "000000000000").returncode == 1
    assert keys_cli(settings, "create").returncode == 2


@pytest.mark.parametrize("presented", ["nonsense", "frk_0123456789ab_" + "A" * 43, ""])
def test_a_wrong_key_is_401_never_anonymous(settings, storage, presented):
    with app_client(settings, storage) as client:
        response = submit(client, png_bytes(), headers={"X-API-Key": presented})
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert "X-API-Key" in response.headers["WWW-Authenticate"]


def test_keyed_jobs_are_read_only_with_their_key(settings, storage):
    keys = ApiKeys(storage.tables.get_table_client(settings.api_keys_table))
    _, mine = keys.create("mine")
    _, theirs = keys.create("theirs")
    with app_client(settings, storage) as client:
        job_id = submit(client, png_bytes(), headers={"X-API-Key": mine}).json()["id"]
        anonymous_job = submit(client, png_bytes()).json()["id"]
        for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/input", f"/api/jobs/{job_id}/result"):
            for headers in ({}, {"X-API-Key": theirs}):
                response = client.get(path, headers=headers)
                assert response.status_code == 404, (path, headers)
                assert error_of(response)["code"] == "job_not_found"  # same as a job that never existed
        assert client.delete(f"/api/jobs/{job_id}", headers={"X-API-Key": theirs}).status_code == 404
        assert client.get(f"/api/jobs/{job_id}", headers={"X-API-Key": mine}).status_code == 200
        assert client.get(f"/api/jobs/{job_id}/input", headers={"X-API-Key": mine}).status_code == 200
        # Anonymous jobs stay readable by id alone, with or without a key.
        assert client.get(f"/api/jobs/{anonymous_job}").status_code == 200
        assert client.get(f"/api/jobs/{anonymous_job}", headers={"X-API-Key": theirs}).status_code == 200
        assert client.delete(f"/api/jobs/{job_id}", headers={"X-API-Key": mine}).status_code == 204


def test_keys_have_their_own_rate_bucket(settings, storage):
    keys = ApiKeys(storage.tables.get_table_client(settings.api_keys_table))
    _, first = keys.create("a")
    _, second = keys.create("b")
    with app_client(settings, storage, **LIMITED) as client:
        anonymous = [submit(client, png_bytes()).status_code for _ in range(4)]
        keyed = [submit(client, png_bytes(), headers={"X-API-Key": first}).status_code for _ in range(4)]
        other = submit(client, png_bytes(), headers={"X-API-Key": second}).status_code
    assert anonymous == [202, 202, 202, 429]
    assert keyed == [202, 202, 202, 429]
    assert other == 202


# -- REQUIRE_AUTH and App Service principals --------------------------------------------


def principal_header(object_id: str) -> str:
    payload = {"auth_typ": "aad", "claims": [
        {"typ": "name", "val": "Ada"},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": object_id},
    ]}
    return base64.b64encode(json.dumps(payload).encode()).decode()


def test_require_auth_refuses_anonymous_submissions(settings, storage):
    keys = ApiKeys(storage.tables.get_table_client(settings.api_keys_table))
    _, key = keys.create("ci")
    with app_client(settings, storage, require_auth=True) as client:
        anonymous = submit(client, png_bytes())
        # Without APP_SERVICE_AUTH the principal headers are just text anyone can send.
        forged = submit(client, png_bytes(), headers={"X-MS-CLIENT-PRINCIPAL-ID": "admin"})
        keyed = submit(client, png_bytes(), headers={"X-API-Key": key})
    for refused in (anonymous, forged):
        assert refused.status_code == 401
        assert error_of(refused)["code"] == "auth_required"
        assert "X-API-Key" in refused.headers["WWW-Authenticate"]
    assert keyed.status_code == 202


def test_app_service_principal_owns_its_jobs(settings, storage):
    alice = {"X-MS-CLIENT-PRINCIPAL": principal_header("11111111-aaaa"), "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
    bob = {"X-MS-CLIENT-PRINCIPAL-ID": "22222222-bbbb", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
    with app_client(settings, storage, require_auth=True, app_service_auth=True) as client:
        accepted = submit(client, png_bytes(), headers=alice)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert client.get(f"/api/jobs/{job_id}", headers=alice).status_code == 200
        assert client.get(f"/api/jobs/{job_id}", headers=bob).status_code == 404
        assert client.get(f"/api/jobs/{job_id}").status_code == 404
        assert submit(client, png_bytes()).status_code == 401
    from processing.jobs.records import JobRepository

    owner = JobRepository(storage.tables.get_table_client(settings.jobs_table)).get(job_id).owner
    assert owner == "user:aad:11111111-aaaa"


# -- back-pressure ---------------------------------------------------------------------------


def test_a_deep_queue_answers_503_with_retry_after(settings, storage):
    with app_client(settings, storage, max_queue_depth=2) as client:
        accepted = [submit(client, png_bytes()).status_code for _ in range(2)]
        refused = submit(client, png_bytes())
        assert accepted == [202, 202]
        assert refused.status_code == 503
        error = error_of(refused)
        assert error["code"] == "busy" and "2 jobs are waiting" in error["message"]
        assert int(refused.headers["Retry-After"]) > 0
        assert len(blob_names(storage, settings.uploads_container)) == 2  # nothing stored for the refused one
        for message in storage.jobs_queue.receive_messages(max_messages=32):
            storage.jobs_queue.delete_message(message)
        assert submit(client, png_bytes()).status_code == 202


# -- CORS and security headers ----------------------------------------------------------------


def test_cors_answers_only_configured_origins(settings, storage):
    allowed = "https://photos.example"
    with app_client(settings, storage, cors_origins=(allowed,)) as client:
        preflight = client.options("/api/jobs", headers={
            "Origin": allowed, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()

        hostile = client.options("/api/jobs", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert hostile.status_code == 400
        assert "access-control-allow-origin" not in hostile.headers

        simple = client.get("/api/info", headers={"Origin": "https://evil.example"})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
        ok = client.get("/api/info", headers={"Origin": allowed})
        assert ok.headers["access-control-allow-origin"] == allowed
        assert "retry-after" in ok.headers["access-control-expose-headers"].lower()
        # Credentials are never allowed cross-origin, and there is no wildcard.
        assert ok.headers.get("access-control-allow-credentials") != "true"

    with app_client(settings, storage, cors_origins=()) as client:
        response = client.get("/api/info", headers={"Origin": allowed})
        assert "access-control-allow-origin" not in response.headers


def test_security_headers_on_the_page_and_on_errors(settings, storage, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>t</title><script src='app.js'></script>")
    with app_client(settings, storage, static_site_dir=site, **LIMITED) as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        responses = [page, client.get("/api/jobs/" + "0" * 32), submit(client, b"x" * 10),
                     client.post("/api/jobs", content=b"x", headers={"Content-Length": str(10**9)})]
    assert [r.status_code for r in responses] == [200, 404, 415, 413]
    for response in responses:
        csp = response.headers["content-security-policy"]
        directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";")}
        assert directives["default-src"] == "default-src 'self'"
        assert directives["script-src"] == "script-src 'self'"  # no inline script, no eval
        assert directives["frame-ancestors"] == "frame-ancestors 'none'"
        assert directives["object-src"] == "object-src 'none'"
        assert "unsafe" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"


# -- batches ---------------------------------------------------------------------------------


def post_batch(client, count: int, headers: dict | None = None):
    files = [("files", (f"p{i}.png", png_bytes(), "image/png")) for i in range(count)]
    return client.post("/api/batches", files=files, headers=headers or {})


def test_a_batch_costs_one_submission_per_image(settings, storage):
    with app_client(settings, storage, rate_limit_per_minute=6, rate_limit_burst=5) as client:
        accepted = post_batch(client, 4)
        assert accepted.status_code == 202, accepted.text
        assert submit(client, png_bytes()).status_code == 202  # the fifth token
        refused = submit(client, png_bytes())
        assert refused.status_code == 429
        # A batch larger than what is left is still taken (it was accepted whole)...
    with app_client(settings, storage, rate_limit_per_minute=6, rate_limit_burst=5,
                    trust_forwarded_for=True) as client:
        other = {"X-Forwarded-For": "192.0.2.50"}
        assert post_batch(client, 8, other).status_code == 202
        # ...and paid for afterwards: 5 - 8 = -3 tokens, 4 tokens (40 s) before the next.
        after = submit(client, png_bytes(), headers=other)
    assert after.status_code == 429 and 35 <= int(after.headers["Retry-After"]) <= 40


def test_debt_is_not_forgiven_by_the_purge(settings, storage):
    now = [0.0]
    limiter = RateLimiter(storage.tables.get_table_client(settings.rate_limit_table), clock=lambda: now[0])
    bucket = Bucket("submit", per_minute=6, burst=2)  # a token every 10 s
    assert limiter.charge("ip:debtor", bucket, 500).remaining == -20  # debt is capped at ten bursts
    now[0] = 81.0  # past the purge's idea of idle (full after 20 s, plus a minute)...
    assert limiter.purge_idle([bucket], now=now[0]) == 0  # ...but still 11.9 tokens in debt
    decision = limiter.take("ip:debtor", bucket)
    assert not decision.allowed and decision.retry_after == 129
    now[0] = 81.0 + 129
    assert limiter.take("ip:debtor", bucket).allowed


def test_keyed_batches_are_read_only_with_their_key(settings, storage):
    keys = ApiKeys(storage.tables.get_table_client(settings.api_keys_table))
    _, mine = keys.create("mine")
    _, theirs = keys.create("theirs")
    with app_client(settings, storage) as client:
        batch_id = post_batch(client, 2, {"X-API-Key": mine}).json()["id"]
        assert client.get(f"/api/batches/{batch_id}", headers={"X-API-Key": mine}).status_code == 200
        for headers in ({}, {"X-API-Key": theirs}):
            response = client.get(f"/api/batches/{batch_id}", headers=headers)
            assert response.status_code == 404 and error_of(response)["code"] == "batch_not_found"
            assert client.delete(f"/api/batches/{batch_id}", headers=headers).status_code == 404
        job_ids = [job["id"] for job in client.get(f"/api/batches/{batch_id}", headers={"X-API-Key": mine}).json()["jobs"]]
        assert all(client.get(f"/api/jobs/{j}").status_code == 404 for j in job_ids)
        assert all(client.get(f"/api/jobs/{j}", headers={"X-API-Key": mine}).status_code == 200 for j in job_ids)
