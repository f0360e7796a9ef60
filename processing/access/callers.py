"""Who is calling: an API key, the App Service principal, or an address.

Behind App Service authentication ("Easy Auth") the platform signs people in, strips
any ``X-MS-CLIENT-PRINCIPAL*`` headers a client sent and sets its own. Those headers
are believed only when ``APP_SERVICE_AUTH`` says the app runs behind it; otherwise
anyone could claim to be anyone.

A job records its owner (``key:<id>`` or ``user:<idp>:<id>``); reading an owned job
needs the same identity. Anonymous jobs are read by anyone holding the 128-bit id.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Mapping

from .keys import ApiKeys
# Claim types App Service puts in X-MS-CLIENT-PRINCIPAL that identify a person, best first.
_ID_CLAIMS = (
    "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "oid",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
    "sub",
)


class AuthError(Exception):
    """The request names an identity that does not hold: 401. ``code`` is machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Caller:
    kind: str  # "key" | "user" | "anonymous"
    id: str  # key id, principal, or (anonymous) the client's address
    name: str = ""

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    @property
    def owner(self) -> str:
        """What a job records as its owner; "" for anonymous jobs."""
        return f"{self.kind}:{self.id}" if self.authenticated else ""

    @property
    def rate_key(self) -> str:
        return self.owner or f"ip:{self.id}"

    def may_read(self, owner: str) -> bool:
        return not owner or hmac.compare_digest(owner.encode(), self.owner.encode())


ANONYMOUS = Caller("anonymous", "unknown")



def principal(headers: Mapping[str, str]) -> str | None:
    """The signed-in principal App Service authentication vouches for, as ``idp:id``."""
    principal_id = (headers.get("x-ms-client-principal-id") or "").strip()
    provider = (headers.get("x-ms-client-principal-idp") or "").strip()
    encoded = headers.get("x-ms-client-principal")
    if encoded and not principal_id:
        try:
            payload = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
            claims = {c.get("typ"): c.get("val") for c in payload.get("claims", []) if isinstance(c, dict)}
            principal_id = next((str(claims[t]) for t in _ID_CLAIMS if claims.get(t)), "")
            provider = provider or str(payload.get("auth_typ") or "")
        except (ValueError, TypeError, AttributeError):
            return None
    if not principal_id:
        return None
    clean = re.sub(r"[^A-Za-z0-9@._:-]", "", f"{provider}:{principal_id}" if provider else principal_id)
    return clean[:200] or None


def client_address(peer: str | None, forwarded_for: str | None, trust_forwarded_for: bool) -> str:
    """The address a client is rate-limited by. Behind a trusted proxy, the last entry of
    X-Forwarded-For (the one that proxy added; earlier entries are the client's own word).
    IPv6 clients are grouped by /64, which is what one subscriber usually holds."""
    raw = peer
    if trust_forwarded_for and forwarded_for:
        entries = [part.strip() for part in forwarded_for.split(",") if part.strip()]
        if entries:
            raw = entries[-1]
    return _normalise_address(raw)


def _normalise_address(raw: str | None) -> str:
    if not raw:
        return "unknown"
    text = raw.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port (App Service's X-Forwarded-For carries the port)
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return re.sub(r"[^A-Za-z0-9.:_-]", "", text)[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def identify(
    headers: Mapping[str, str],
    peer: str | None,
    keys: ApiKeys | None,
    *,
    trust_forwarded_for: bool = False,
    app_service_auth: bool = False,
) -> Caller:
    """The caller of a request (``headers`` with lower-case names). A key that is present
    but not valid is an error, never a quiet fall-back to anonymous."""
    presented = headers.get("x-api-key")
    if presented is not None:
        record = keys.verify(presented) if keys is not None else None
        if record is None:
            raise AuthError("invalid_api_key", "the API key is not valid (unknown, malformed or revoked)")
        return Caller("key", record.id, record.name)
    if app_service_auth:
        who = principal(headers)
        if who:
            return Caller("user", who)
    return Caller("anonymous", client_address(peer, headers.get("x-forwarded-for"), trust_forwarded_for))
