"""Which addresses a webhook may reach, the secret's shape, and the signature against the
Standard Webhooks reference implementation: no network (address literals resolve without it)."""

from __future__ import annotations

import pytest
from standardwebhooks import Webhook

from processing.config import Settings, SettingsError, new_secret
from processing.jobs.webhooks import address_problem, signed_headers


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.2", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("::ffff:10.1.2.3", "private"), ("169.254.10.10", "link-local"), ("fe80::1", "link-local"),
    ("169.254.169.254", "metadata"), ("168.63.129.16", "metadata"), ("fd00:ec2::254", "metadata"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("100.64.0.1", "reserved"),  # shared address space (carrier-grade NAT): not public
])
def test_non_public_addresses_are_refused(address, problem):
    assert problem in address_problem(address, allow_private=False)


@pytest.mark.parametrize("address", ["1.1.1.1", "8.8.4.4", "2606:4700:4700::1111", "::ffff:1.1.1.1"])
def test_public_addresses_are_allowed(address):
    assert address_problem(address, allow_private=False) is None


def test_local_development_opens_private_ranges_but_never_metadata():
    assert address_problem("127.0.0.1", allow_private=True) is None
    assert address_problem("10.0.0.1", allow_private=True) is None
    assert "metadata" in address_problem("169.254.169.254", allow_private=True)
    assert "unspecified" in address_problem("0.0.0.0", allow_private=True)


def test_the_service_secret_must_be_a_standard_webhooks_secret():
    Settings(webhook_secret=new_secret())
    for bad in ("not-a-secret", "whsec_!!!", "whsec_c2hvcnQ="):  # not base64; too short (5 bytes)
        with pytest.raises(SettingsError, match="WEBHOOK_SECRET"):
            Settings(webhook_secret=bad)
    with pytest.raises(SettingsError, match="WEBHOOK_RETRY_SECONDS"):
        Settings.from_env({"WEBHOOK_RETRY_SECONDS": "30,soon"})
    assert Settings.from_env({"WEBHOOK_RETRY_SECONDS": "1, 2,3"}).webhook_retry_delays == (1, 2, 3)


def test_signed_headers_verify_with_the_reference_implementation():
    import time

    secret, body = new_secret(), b'{"id": "abc", "status": "succeeded"}'
    headers = signed_headers(secret, "msg_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {"id": "abc", "status": "succeeded"}
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(Exception, match="(?i)signature"):
        Webhook(secret).verify(body + b" ", headers)
