"""The storage plumbing without a network: the queue message codec, the configuration it needs,
and the clients production builds (identity-based, no connection string)."""

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


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: building clients must not reach out."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _identity_of(credential) -> str | None:
    # ManagedIdentityCredential keeps the identity it asks for in its inner credential's
    # settings (azure-identity as pinned); there is no public accessor.
    return credential._credential._settings.get("client_id")


def _clients(settings: Settings) -> dict:
    storage = Storage(settings)
    return {"blob": storage.blobs, "queue": storage.jobs_queue, "poison": storage.poison_queue,
            "table": storage.tables, "jobs table": storage.tables.get_table_client(settings.jobs_table)}


def test_production_storage_from_the_account_name_and_a_user_assigned_identity(no_network):
    """Azure's settings (infra/main.bicep): no connection string, the account name and the
    identity's client id. Every client reaches the account's public endpoints with that
    managed identity, one credential shared, no account key anywhere."""
    from azure.identity import ManagedIdentityCredential

    settings = Settings.from_env({"AzureWebJobsStorage__accountName": "photosdata",
                                  "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555"})
    clients = _clients(settings)
    assert clients["blob"].url == "https://photosdata.blob.core.windows.net/"
    assert clients["queue"].url == "https://photosdata.queue.core.windows.net/restore-jobs"
    assert clients["poison"].url == "https://photosdata.queue.core.windows.net/restore-jobs-poison"
    assert clients["table"].url == "https://photosdata.table.core.windows.net"
    credentials = {id(client.credential) for client in clients.values()}
    assert len(credentials) == 1, "one credential for every client"
    credential = clients["blob"].credential
    assert type(credential) is ManagedIdentityCredential
    assert _identity_of(credential) == "11111111-2222-3333-4444-555555555555"
    # The queue codec the Functions trigger expects, on identity-based clients too.
    assert type(clients["queue"]._message_encode_policy).__name__ == "BinaryBase64EncodePolicy"


def test_production_storage_from_service_uris(no_network):
    """Service URIs (another cloud, a private endpoint's name) win over the account name."""
    from azure.identity import ManagedIdentityCredential

    settings = Settings.from_env({
        "AzureWebJobsStorage__blobServiceUri": "https://data.blob.core.chinacloudapi.cn",
        "AzureWebJobsStorage__queueServiceUri": "https://data.queue.core.chinacloudapi.cn",
        "AzureWebJobsStorage__tableServiceUri": "https://data.table.core.chinacloudapi.cn",
        "AzureWebJobsStorage__clientId": "cid", "JOBS_QUEUE": "jobs-q",
    })
    clients = _clients(settings)
    assert clients["blob"].url == "https://data.blob.core.chinacloudapi.cn/"
    assert clients["queue"].url == "https://data.queue.core.chinacloudapi.cn/jobs-q"
    assert clients["table"].url == "https://data.table.core.chinacloudapi.cn"
    assert type(clients["table"].credential) is ManagedIdentityCredential
    assert _identity_of(clients["queue"].credential) == "cid"


def test_production_storage_without_a_client_id_uses_the_default_chain(no_network):
    """No user-assigned identity named: a system-assigned one, or a developer's sign-in."""
    from azure.identity import DefaultAzureCredential

    clients = _clients(Settings.from_env({"AzureWebJobsStorage__accountName": "photosdata"}))
    assert {type(client.credential) for client in clients.values()} == {DefaultAzureCredential}


def test_one_service_uri_alone_is_refused_naming_the_others():
    with pytest.raises(SettingsError, match="queueServiceUri, AzureWebJobsStorage__tableServiceUri"):
        Storage(Settings.from_env({"AzureWebJobsStorage__blobServiceUri": "https://data.blob.core.windows.net"}))
