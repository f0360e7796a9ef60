"""The storage plumbing without a network: the queue message codec and the configuration it needs."""

from __future__ import annotations

import pytest

from processing.config import Settings, SettingsError
from processing.storage import Storage, decode_job_message, encode_job_message


def test_queue_message_codec():
    assert decode_job_message(encode_job_message("abc")).job_id == "abc"
    carried = decode_job_message(encode_job_message("abc", {"traceparent": "00-ab-cd-01", "enqueued_at": "2026-01-02T03:04:05+00:00"}))
    assert carried.context["traceparent"] == "00-ab-cd-01" and carried.enqueued_at.year == 2026
    assert decode_job_message(b'{"job_id": "abc"}').enqueued_at is None  # a message from before telemetry
    for bad in (b"", b"[]", b'{"job": 1}', b'{"job_id": ""}', b"\xff\xfe"):
        with pytest.raises(ValueError):
            decode_job_message(bad)


def test_storage_requires_a_connection():
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        Storage(Settings())
