"""The storage plumbing without a network: the queue message codec and the configuration it needs."""

from __future__ import annotations

import pytest

from processing.config import Settings, SettingsError
from processing.storage import Storage, decode_job_message, encode_job_message


def test_queue_message_codec():
    assert decode_job_message(encode_job_message("abc")) == "abc"
    for bad in (b"", b"[]", b'{"job": 1}', b'{"job_id": ""}', b"\xff\xfe"):
        with pytest.raises(ValueError):
            decode_job_message(bad)


def test_storage_requires_a_connection():
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        Storage(Settings())
