"""Idempotency-Key on the three POSTs that make work, against the real API process on Azurite:
a retry answers with the first job (no second row, blob or queue message), a different request
with the same key is a 422, and concurrent duplicates make exactly one job."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from processing.access.keys import ApiKeys
from processing.jobs.idempotency import ROW_KEY, IdempotencyKeys
from processing.jobs.records import utcnow
from tests.conftest import LiveStack, wait_for_status


@pytest.fixture
def api(settings, storage, tmp_path):
    """The API alone: no worker takes the queue's messages, so they can be counted."""
    stack = LiveStack(settings, tmp_path)
    stack.start_api()
    yield stack
    stack.stop()


def job_rows(storage, settings) -> list[str]:
    table = storage.tables.get_table_client(settings.jobs_table)
    return [row["PartitionKey"] for row in table.query_entities("RowKey eq 'job'", select=["PartitionKey"])]


def messages(storage) -> int:
    return len(storage.jobs_queue.peek_messages(max_messages=32))


def uploads(storage, settings) -> int:
    return len(list(storage.container(settings.uploads_container).list_blobs()))


def submit(url: str, png: bytes, key: str | None, headers: dict | None = None, **fields) -> httpx.Response:
    headers = {**({"Idempotency-Key": key} if key else {}), **(headers or {})}
    return httpx.post(f"{url}/api/jobs", files={"file": ("me.png", png)}, data=fields, headers=headers, timeout=60)


def test_a_retry_with_the_same_key_answers_with_the_first_job(api, storage, settings, astronaut_png):
    first = submit(api.url, astronaut_png, "order-1", blend_mask="box")
    again = submit(api.url, astronaut_png, "order-1", blend_mask="box")
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers.get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first.headers
    assert job_rows(storage, settings) == [first.json()["id"]]
    assert messages(storage) == 1 and uploads(storage, settings) == 1
    # Without a key, or with another one, the same photo is a new job.
    assert submit(api.url, astronaut_png, None, blend_mask="box").json()["id"] != first.json()["id"]
    assert submit(api.url, astronaut_png, "order-2", blend_mask="box").json()["id"] != first.json()["id"]
    assert len(job_rows(storage, settings)) == 3 and messages(storage) == 3


def test_the_same_key_with_another_request_is_refused(api, storage, astronaut_png):
    assert submit(api.url, astronaut_png, "k-1", upscale="2").status_code == 202
    changed = submit(api.url, astronaut_png, "k-1", upscale="3")
    assert changed.status_code == 422
    error = changed.json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["fields"][0]["field"] == "Idempotency-Key"
    other_photo = submit(api.url, astronaut_png[:-12] + b"\0" * 12, "k-1", upscale="2")  # other bytes, same fields
    assert other_photo.status_code == 422 and other_photo.json()["error"]["code"] == "idempotency_key_reused"
    assert messages(storage) == 1


def test_a_refused_request_does_not_use_the_key_up(api, storage, astronaut_png):
    refused = submit(api.url, b"not an image at all", "k-2")
    assert refused.status_code == 415
    assert submit(api.url, astronaut_png, "k-2").status_code == 202  # not idempotency_key_reused


def test_keys_are_per_caller(api, storage, settings, astronaut_png):
    keys = ApiKeys(storage.tables.get_table_client(settings.api_keys_table))
    (_, mine), (_, theirs) = keys.create("mine"), keys.create("theirs")
    a = submit(api.url, astronaut_png, "shared", {"X-API-Key": mine})
    b = submit(api.url, astronaut_png, "shared", {"X-API-Key": theirs})
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]


def test_concurrent_duplicates_make_one_job_and_one_message(api, storage, settings, astronaut_png):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: submit(api.url, astronaut_png, "burst-1", blend_mask="box"), range(8)))
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
    assert job_rows(storage, settings) == list(ids)
    assert messages(storage) == 1 and uploads(storage, settings) == 1


def test_a_key_is_kept_for_24_hours(api, storage, settings, astronaut_png):
    first = submit(api.url, astronaut_png, "old-key").json()["id"]
    table = storage.tables.get_table_client(settings.jobs_table)
    row = table.get_entity(IdempotencyKeys.partition("ip:127.0.0.1", "old-key"), ROW_KEY)
    assert timedelta(hours=23, minutes=59) < row["expires_at"] - row["claimed_at"] <= timedelta(hours=24)
    row["expires_at"] = utcnow() - timedelta(seconds=1)  # as if a day had passed
    table.update_entity(row)
    assert submit(api.url, astronaut_png, "old-key").json()["id"] != first


def test_batches_and_restorations_are_idempotent_too(settings, storage, tmp_path, astronaut_png):
    stack = LiveStack(settings, tmp_path)
    try:
        stack.start_api()
        stack.start_worker()
        files = [("files", ("a.png", astronaut_png)), ("files", ("b.png", astronaut_png))]
        batch = [httpx.post(f"{stack.url}/api/batches", files=files, headers={"Idempotency-Key": "b-1"}, timeout=60)
                 for _ in range(2)]
        assert batch[0].status_code == batch[1].status_code == 202
        assert batch[0].json()["id"] == batch[1].json()["id"] and batch[1].headers["Idempotent-Replayed"] == "true"
        assert len(job_rows(storage, settings)) == 2

        detection = submit(stack.url, astronaut_png, None, detect_only="true").json()["id"]
        assert wait_for_status(stack.url, detection)["status"] == "succeeded", stack.logs()
        restore = [httpx.post(f"{stack.url}/api/jobs/{detection}/restore", data={"blend_mask": "box"},
                              headers={"Idempotency-Key": "r-1"}, timeout=60) for _ in range(2)]
        assert restore[0].status_code == restore[1].status_code == 202, restore[1].text
        assert restore[0].json()["id"] == restore[1].json()["id"]
        other = httpx.post(f"{stack.url}/api/jobs/{detection}/restore", data={"blend_mask": "parse"},
                           headers={"Idempotency-Key": "r-1"}, timeout=60)
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
        assert len(job_rows(storage, settings)) == 4
    finally:
        stack.stop()
