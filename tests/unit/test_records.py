"""The job record: its state machine, ids, its Table Storage entity, leases, display names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from processing.jobs.records import (CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, TRANSITIONS, Job,
                                    from_entity, is_job_id, new_job_id, to_entity, utcnow)
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
