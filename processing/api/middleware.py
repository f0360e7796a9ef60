"""ASGI middleware every response passes: HEAD answered as GET, security headers, and the body
limit that refuses an oversized upload while it arrives."""

from __future__ import annotations

from .errors import error_response


class HeadAsGet:
    """HEAD is GET without the body (RFC 9110, 9.3.2): same status and headers, Content-Length
    included. FastAPI's routes answer only the methods they name, so HEAD on every GET route was
    a 405; answering it here covers every route (and the page) in one place, and keeps HEAD out of
    /openapi.json, where it would be a second operation with the same id."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def without_body(message):
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


class SecurityHeaders:
    """Headers for every response; the page gets a strict CSP (it has no inline script)."""

    CSP = (
        "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' {api}; script-src 'self'; "
        "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )

    def __init__(self, app, api_origins: tuple[str, ...] = ()):
        self.app = app
        self.csp = self.CSP.format(api=" ".join(api_origins)).replace("  ", " ")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", self.csp.encode()),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuse bodies over the limit while they arrive, before anything is buffered in full.
    ``limits`` maps a path prefix to its limit; the first match wins."""

    def __init__(self, app, limits: list[tuple[str, int]]):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        max_bytes = next(limit for prefix, limit in self.limits if scope["path"].startswith(prefix))
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return await self._refuse(send, max_bytes)
        seen = 0
        exceeded = started = False

        async def counting_receive():
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                exceeded = True
                raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            # A chunked body (no Content-Length) goes over the limit while the form is
            # parsed; FastAPI turns the error into a 400 of its own. Drop that answer and
            # give the 413 that names the problem.
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send, max_bytes)

    @staticmethod
    async def _refuse(send, max_bytes: int):
        response = error_response(413, "file_too_large", f"the upload is larger than {max_bytes / 1e6:.0f} MB")
        await response({"type": "http"}, None, send)


class _BodyTooLarge(Exception):
    pass
