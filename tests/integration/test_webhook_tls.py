"""HTTPS webhook calls go to the address that was checked, yet TLS still sends the host name (SNI)
and verifies the certificate against it: a real TLS server on 127.0.0.1 with a certificate made
here for "localhost", trusted by the test's TLS context only."""

from __future__ import annotations

import datetime
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from processing.jobs.webhooks import Target, check_target, post


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for the name "localhost" only (no IP address in it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture
def tls_receiver(certificate):
    calls: list[tuple[str | None, str]] = []
    server_names: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            calls.append((self.headers.get("host"), self.path))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], calls, server_names
    server.shutdown()
    server.server_close()


def trusting(certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    return context


def test_the_checked_address_is_called_with_the_host_name_verified(certificate, tls_receiver):
    port, calls, server_names = tls_receiver
    target = check_target(f"https://localhost:{port}/hook?x=1", allow_private=True)
    assert target.address in ("127.0.0.1", "::1")
    target = Target(target.scheme, target.host, target.port, target.path, "127.0.0.1")
    assert post(target, b"{}", {"content-type": "application/json"}, 5, trusting(certificate)) == 204
    assert calls == [(f"localhost:{port}", "/hook?x=1")] and server_names == ["localhost"]


def test_a_certificate_for_another_name_is_refused(certificate, tls_receiver):
    """The same server at the same address, asked for as another host: the certificate does not
    name it, so nothing is sent (were the address used as the name, or verification off, it would)."""
    port, calls, server_names = tls_receiver
    for host in ("other.test", "127.0.0.1"):
        with pytest.raises(ssl.SSLCertVerificationError):
            post(Target("https", host, port, "/hook", "127.0.0.1"), b"{}", {}, 5, trusting(certificate))
    with pytest.raises(ssl.SSLCertVerificationError):  # and without the test's trust, the system's refuses it
        post(Target("https", "localhost", port, "/hook", "127.0.0.1"), b"{}", {}, 5)
    assert calls == []
