"""The job record: its state machine, ids, its Table Storage entity, leases, display names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from processing.jobs.records import (CANCELLED, CORRUPT_JOB, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, TRANSITIONS,
                                    UNREADABLE_OWNER, Job, from_entity, is_job_id, new_job_id, salvage, to_entity,
                                    utcnow)
from processing.jobs.service import safe_stem


def test_transitions_end_in_terminal_states():
    assert TERMINAL == {SUCCEEDED, FAILED, CANCELLED}
    assert all(not TRANSITIONS[state] for state in TERMINAL)
    assert TRANSITIONS[QUEUED] == {RUNNING, FAILED, CANCELLED}
    assert SUCCEEDED not in TRANSITIONS[QUEUED]  # a job cannot succeed without running


def test_job_ids_are_128_bit_random():
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(is_job_id(i) and len(i) == 32 for i in ids)
    assert not is_job_id("../etc/passwd") and not is_job_id("A" * 32)


def test_entity_roundtrip():
    job = Job(id=new_job_id(), options={"upscale": 2}, faces=[{"box": [1, 2, 3, 4], "score": 0.9}],
              timings={"restore": 1.5}, preprocessing=["denoised"], lease_until=utcnow() + timedelta(seconds=5))
    entity = to_entity(job)
    assert entity["PartitionKey"] == job.id and entity["RowKey"] == "job"
    assert "etag" not in entity and "finished_at" not in entity  # None values are not stored
    back = from_entity(entity)
    assert back.options == job.options and back.faces == job.faces and back.preprocessing == ["denoised"]
    assert back.lease_until == job.lease_until and back.status == QUEUED


def test_lease_expiry():
    now = utcnow()
    assert Job(id="x").lease_expired(now)
    assert not Job(id="x", lease_until=now + timedelta(seconds=1)).lease_expired(now)


@pytest.mark.parametrize("name, stem", [("../../etc/passwd", "passwd"), ("C:\\Users\\me\\photo 1.JPG", "photo-1"),
                                        ("", "photo"), ("....png", "photo"), ("a" * 200 + ".png", "a" * 60),
                                        ("<script>.png", "script")])
def test_file_names_are_never_paths(name, stem):
    assert safe_stem(name) == stem


@pytest.mark.parametrize("name, stored", [
    ("faces", "[[["), ("options", "{not json"), ("options", "[1, 2]"), ("timings", 5), ("status", "banana"),
    ("progress", 7.5), ("progress", "half"), ("created_at", "yesterday"), ("attempts", "two"), ("enqueued", "yes"),
    ("owner", 42), ("faces", '[{"box": [1, 2, 3], "score": 0.9}]'), ("preprocessing", '[["nested"]]'),
    ("face_count", True),
])
def test_a_damaged_property_makes_the_record_unreadable(name, stored):
    entity = to_entity(Job(id=new_job_id(), faces=[{"box": [1, 2, 3, 4], "score": 0.9}]))
    entity[name] = stored
    with pytest.raises((ValueError, TypeError)):
        from_entity(entity)


def test_a_damaged_record_is_salvaged_as_a_failed_job_keeping_what_still_reads():
    job = Job(id=new_job_id(), status=RUNNING, options={"upscale": 2}, filename="me", owner="key:abc",
              lease_owner="w", lease_until=utcnow(), expires_at=utcnow() + timedelta(hours=1))
    entity = to_entity(job)
    entity["faces"] = "[[["
    saved = salvage(entity, "damaged")
    assert (saved.status, saved.error_code, saved.error, saved.stage) == (FAILED, CORRUPT_JOB, "damaged", "failed")
    assert saved.options == {"upscale": 2} and saved.filename == "me" and saved.owner == "key:abc"
    assert saved.faces == [] and saved.lease_owner == "" and saved.lease_until is None
    assert saved.expires_at == job.expires_at
    assert from_entity(to_entity(saved)).status == FAILED  # what is written back reads


def test_a_record_whose_owner_is_damaged_becomes_nobodys():
    entity = to_entity(Job(id=new_job_id(), owner="key:abc"))
    entity["owner"], entity["expires_at"] = 42, "never"
    saved = salvage(entity, "damaged")
    assert saved.owner == UNREADABLE_OWNER and saved.owner  # "" would be everybody's
    assert saved.expires_at <= utcnow()  # purged at the timer's next round
