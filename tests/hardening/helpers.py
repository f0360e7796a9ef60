"""Helpers for the hardening suite: hostile files, app instances with changed settings."""

from __future__ import annotations

import io
import struct
import zlib
from contextlib import contextmanager

import numpy as np
from PIL import Image


def png_bytes(width: int = 64, height: int = 48, colour=(180, 120, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48, exif: Image.Exif | None = None, quality: int = 90) -> bytes:
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=quality, **kwargs)
    return out.getvalue()


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size (CRC fixed, so it parses)."""
    raw = bytearray(data)
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    return bytes(raw)


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose SOF0 frame header claims another size."""
    raw = bytearray(data)
    sof = raw.find(b"\xff\xc0")
    assert sof > 0
    raw[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def submit(client, data: bytes, name: str = "photo.png", headers: dict | None = None, **options):
    form = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in options.items()}
    return client.post("/api/jobs", files={"file": (name, data, "application/octet-stream")}, data=form,
                       headers=headers or {})


@contextmanager
def app_client(settings, storage, raise_server_exceptions: bool = True, **changes):
    """A TestClient for an API instance with some settings changed."""
    from fastapi.testclient import TestClient

    from processing.api.app import create_app

    with TestClient(create_app(settings.with_changes(**changes), storage),
                    raise_server_exceptions=raise_server_exceptions) as client:
        yield client


def blob_names(storage, container: str, prefix: str = "") -> list[str]:
    return sorted(b.name for b in storage.container(container).list_blobs(name_starts_with=prefix or None))
