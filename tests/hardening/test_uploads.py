"""Hostile uploads: every file in the corpus is refused with a 4xx JSON error that names
the problem, or accepted safely (stored re-encoded, metadata gone). Size limits hold
while the body streams in, with or without Content-Length."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import LiveStack
from tests.hardening.helpers import (
    app_client, blob_names, jpeg_bytes, png_bytes, submit, with_jpeg_size, with_png_size,
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _before_idat(png: bytes, chunk: bytes) -> bytes:
    at = png.find(b"IDAT") - 4
    return png[:at] + chunk + png[at:]


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "GIF")
    return out.getvalue()


def _giant_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam-9000"  # Make
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0" + b"A" * 60_000  # UserComment, near the 64 KB APP1 limit
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (51.0, 30.0, 12.5), "W", (0.0, 7.0, 39.9)
    return exif


def _exif_with_ifd_loop() -> bytes:
    """A JPEG whose EXIF IFD points back at itself (parsers that follow it never stop)."""
    ifd = (struct.pack("<H", 2) + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<HHII", 0x8769, 4, 1, 8)
           + struct.pack("<I", 8))
    payload = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd
    base = jpeg_bytes(40, 30)
    return base[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + base[2:]


def _webp_declaring(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 10)).save(out, "WEBP", exif=b"Exif\0\0II*\0\x08\0\0\0\0\0\0\0\0\0")  # forces VP8X
    raw = bytearray(out.getvalue())
    assert raw[12:16] == b"VP8X"
    raw[24:27] = (width - 1).to_bytes(3, "little")
    raw[27:30] = (height - 1).to_bytes(3, "little")
    return bytes(raw)


_JPEG = jpeg_bytes(256, 192)
_PNG = png_bytes(64, 48)
_BOMB = zlib.compress(b"\0" * 50_000_000, 9)  # 48 KB that inflate to 50 MB

# name -> (bytes, file name sent, expected status, expected error code)
REFUSED = {
    "zero bytes": (b"", "empty.jpg", 422, "empty_file"),
    "truncated JPEG": (_JPEG[: len(_JPEG) // 2], "cut.jpg", 422, "corrupt_image"),
    "JPEG cut inside its header": (_JPEG[:200], "cut.jpg", 415, "not_an_image"),
    "tiny PNG declaring 30000x30000": (with_png_size(_PNG, 30000, 30000), "bomb.png", 413, "too_many_pixels"),
    "tiny JPEG declaring 30000x30000": (with_jpeg_size(_JPEG, 30000, 30000), "bomb.jpg", 413, "too_many_pixels"),
    # libwebp checks the canvas against the frame before anything is allocated.
    "WebP canvas 16384x16384 over a 20x10 frame": (_webp_declaring(16384, 16384), "bomb.webp", 415, "not_an_image"),
    "PNG declaring more rows than it has": (with_png_size(_PNG, 4000, 3000), "short.png", 422, "corrupt_image"),
    "PNG with a zTXt decompression bomb": (_before_idat(_PNG, _chunk(b"zTXt", b"Comment\0\0" + _BOMB)), "z.png", 415,
                                           "not_an_image"),
    "SVG": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>',
            "face.svg", 415, "unsupported_format"),
    "SVG with an XML prolog named .png": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
                                          "face.png", 415, "unsupported_format"),
    "GIF": (_gif(), "anim.gif", 415, "unsupported_format"),
    "GIF named .jpg": (_gif(), "photo.jpg", 415, "unsupported_format"),
    "text named .jpg": (b"Dear service, please restore my face.\n" * 20, "photo.jpg", 415, "not_an_image"),
    "HTML named .png": (b"<html><body onload=alert(1)>hi</body></html>", "photo.png", 415, "not_an_image"),
    "HEIC": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "IMG_0001.HEIC", 415,
             "unsupported_format"),
    "JPEG magic then garbage": (b"\xff\xd8\xff\xe0" + b"\x00" * 4096, "x.jpg", 415, "not_an_image"),
    "PNG signature only": (b"\x89PNG\r\n\x1a\n", "x.png", 415, "not_an_image"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_malformed_uploads_are_refused_with_json_naming_the_problem(client, storage, settings, name):
    data, filename, status, code = REFUSED[name]
    response = client.post("/api/jobs", files={"file": (filename, data, "image/jpeg")})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 10 and "Traceback" not in error["message"]
    assert blob_names(storage, settings.uploads_container) == []  # nothing stored
    assert storage.jobs_queue.get_queue_properties().approximate_message_count == 0


def _accepted(client, storage, settings, data: bytes, name: str) -> tuple[dict, Image.Image]:
    response = client.post("/api/jobs", files={"file": (name, data, "image/png")})
    assert response.status_code == 202, response.text
    job = response.json()
    stored = storage.get_blob(settings.uploads_container, f"{job['id']}/input.png")
    return job, Image.open(io.BytesIO(stored))


def test_png_with_trailing_data_is_accepted_and_the_payload_dropped(client, storage, settings):
    """Many tools leave bytes after IEND; a polyglot hides a zip there. The image is
    accepted, and what we store is our own re-encode: the appended payload is gone."""
    payload = b"PK\x03\x04" + b"secret.exe" + b"\x00" * 2000
    job, stored = _accepted(client, storage, settings, _PNG + payload, "poly.png")
    raw = storage.get_blob(settings.uploads_container, f"{job['id']}/input.png")
    assert b"PK\x03\x04" not in raw and b"secret.exe" not in raw
    assert stored.size == (64, 48) and raw.endswith(b"IEND\xaeB`\x82")


def test_giant_exif_is_accepted_and_stripped(client, storage, settings):
    data = jpeg_bytes(120, 80, exif=_giant_exif())
    assert len(data) > 60_000
    job, stored = _accepted(client, storage, settings, data, "big-exif.jpg")
    raw = storage.get_blob(settings.uploads_container, f"{job['id']}/input.png")
    assert len(raw) < 40_000 and b"AAAAAAAA" not in raw and b"SpyCam" not in raw
    assert not stored.getexif() and "exif" not in stored.info
    assert stored.size == (80, 120)  # orientation 6 applied


def test_exif_loop_does_not_hang(client, storage, settings):
    job, stored = _accepted(client, storage, settings, _exif_with_ifd_loop(), "loop.jpg")
    assert stored.size == (30, 40) and not stored.getexif()


def test_other_odd_but_valid_images_are_accepted(client, storage, settings):
    cases = []
    out = io.BytesIO()
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(out, "JPEG")
    cases.append(("cmyk.jpg", out.getvalue(), (20, 10)))
    out = io.BytesIO()
    Image.new("I;16", (12, 9)).save(out, "PNG")
    cases.append(("16bit.png", out.getvalue(), (12, 9)))
    out = io.BytesIO()
    Image.new("RGB", (20, 10), "red").save(out, "PNG", save_all=True, append_images=[Image.new("RGB", (20, 10))])
    cases.append(("animated.png", out.getvalue(), (20, 10)))
    out = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(out, "MPO", save_all=True, append_images=[Image.new("RGB", (32, 32))])
    cases.append(("phone-depth.jpg", out.getvalue(), (32, 32)))  # Pillow calls this MPO: it is a JPEG
    for name, data, size in cases:
        job, stored = _accepted(client, storage, settings, data, name)
        assert stored.size == size and stored.mode == "RGB", name
        assert job["input"]["format"] in ("JPEG", "PNG"), name


def test_exif_gps_and_orientation_end_to_end(client, storage, settings, handler):
    """A phone photo with GPS and orientation 6: what we store, restore and serve is
    upright and carries no EXIF at all, in every output format."""
    data = jpeg_bytes(120, 80, exif=_giant_exif())
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the upload does carry GPS
    ids = {}
    for fmt in ("png", "jpeg", "webp"):
        response = submit(client, data, "phone.jpg", output_format=fmt, upscale=1, blend_mask="box")
        assert response.status_code == 202, response.text
        assert response.json()["input"]["width"] == 80 and response.json()["input"]["height"] == 120
        ids[fmt] = response.json()["id"]
    for message in storage.jobs_queue.receive_messages(max_messages=32, visibility_timeout=60):
        assert handler.handle_message(message.content, message.dequeue_count).status == "succeeded"
        storage.jobs_queue.delete_message(message)

    for fmt, job_id in ids.items():
        served = [client.get(f"/api/jobs/{job_id}/input").content, client.get(f"/api/jobs/{job_id}/result").content]
        stored = [storage.get_blob(settings.uploads_container, name) for name in blob_names(storage, settings.uploads_container, job_id)]
        stored += [storage.get_blob(settings.results_container, name) for name in blob_names(storage, settings.results_container, job_id)]
        for raw in served + stored:
            image = Image.open(io.BytesIO(raw))
            assert image.size == (80, 120), fmt
            assert not image.getexif(), fmt
            assert "exif" not in image.info and "xmp" not in image.info, fmt
            assert b"Exif\x00\x00" not in raw and b"SpyCam" not in raw and b"AAAAAAAA" not in raw, fmt


HOSTILE_NAMES = [
    "../../../etc/passwd.jpg",
    "..\\..\\windows\\system32\\photo.png",
    "/absolute/path/photo.png",
    "photo.png\x00.exe",
    'quote".png',
    "line\r\nSet-Cookie: x=1.png",
    "%2e%2e%2fescape.png",
    "😀" * 80 + ".png",
    ".png",
]


@pytest.mark.parametrize("filename", HOSTILE_NAMES)
def test_file_names_are_never_paths(client, storage, settings, filename):
    response = client.post("/api/jobs", files={"file": (filename, png_bytes(), "image/png")})
    assert response.status_code == 202, response.text
    job = response.json()
    assert blob_names(storage, settings.uploads_container) == [f"{job['id']}/input.png"]
    shown = job["filename"]
    assert shown and len(shown) <= 60
    assert all(c.isalnum() or c in "._-" for c in shown) and ".." not in shown and not shown.startswith(".")
    disposition = client.get(f"/api/jobs/{job['id']}/input").headers["content-disposition"]
    assert disposition.count('"') == 2 and "\r" not in disposition and "\n" not in disposition
    assert "/" not in disposition and "\\" not in disposition


def test_a_part_without_a_file_name_is_a_field_error(client):
    """multipart with filename="" is a text field, not a file: a field-level 422."""
    response = client.post("/api/jobs", files={"file": ("", png_bytes(), "image/png")})
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["file"]


# -- size limits -----------------------------------------------------------------------------


def test_upload_over_the_limit_is_413_json(settings, storage):
    with app_client(settings, storage, max_upload_bytes=100_000) as client:
        big = b"\xff\xd8" + b"\x00" * 150_000
        response = client.post("/api/jobs", files={"file": ("big.jpg", big, "image/jpeg")})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "file_too_large"
        # A declared length over the limit is refused before a byte of body is read.
        declared = client.post("/api/jobs", content=b"", headers={"Content-Length": "999999999",
                                                                  "Content-Type": "multipart/form-data; boundary=x"})
        assert declared.status_code == 413
    assert blob_names(storage, settings.uploads_container) == []


def _multipart_stream(file_bytes: int, boundary: str = "hardening-boundary", chunk: int = 256 * 1024):
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="stream.png"\r\n'
           "Content-Type: image/png\r\n\r\n").encode()
    sent = 0
    while sent < file_bytes:
        size = min(chunk, file_bytes - sent)
        yield b"\x89PNG" + b"\x00" * (size - 4) if sent == 0 else b"\x00" * size
        sent += size
    yield f"\r\n--{boundary}--\r\n".encode()


def test_chunked_upload_without_content_length_is_cut_off_at_the_limit(settings, storage, tmp_path):
    """Against the real server (uvicorn): a body sent with Transfer-Encoding: chunked has
    no length to check up front; the limit is enforced as it arrives."""
    stack = LiveStack(settings, tmp_path, MAX_UPLOAD_BYTES="1000000")
    stack.start_api()
    try:
        headers = {"Content-Type": "multipart/form-data; boundary=hardening-boundary"}
        response = httpx.post(f"{stack.url}/api/jobs", content=_multipart_stream(8_000_000), headers=headers, timeout=30)
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.request.headers
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "file_too_large"
        assert response.headers["x-content-type-options"] == "nosniff"

        # A chunked upload under the limit goes through the same path and is judged on content.
        png = png_bytes(40, 30)

        def small():
            yield (b'--hardening-boundary\r\nContent-Disposition: form-data; name="file"; filename="ok.png"\r\n'
                   b"Content-Type: image/png\r\n\r\n")
            for start in range(0, len(png), 50):
                yield png[start:start + 50]
            yield b"\r\n--hardening-boundary--\r\n"

        accepted = httpx.post(f"{stack.url}/api/jobs", content=small(), headers=headers, timeout=30)
        assert accepted.status_code == 202, accepted.text
        assert blob_names(storage, settings.uploads_container) == [f"{accepted.json()['id']}/input.png"]
    finally:
        stack.stop()


# -- batch limits ----------------------------------------------------------------------------


def _noise_png(side: int, seed: int) -> bytes:
    """A PNG that does not compress: about 3 bytes a pixel."""
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG")
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _submit_batch(client, files: list[tuple[str, bytes]]):
    return client.post("/api/batches", files=[("files", (name, data, "application/octet-stream")) for name, data in files])


def _nothing_stored(storage, settings) -> bool:
    rows = list(storage.tables.get_table_client(settings.jobs_table).list_entities())
    return blob_names(storage, settings.uploads_container) == [] and rows == []


def test_a_batch_over_the_byte_limit_is_refused_while_it_streams(settings, storage):
    photos = [(f"{i}.png", _noise_png(150, i)) for i in range(3)]  # ~67 KB each, 200 KB in all
    with app_client(settings, storage, max_batch_bytes=100_000) as client:
        response = _submit_batch(client, photos)
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "file_too_large"
        assert _submit_batch(client, photos[:1]).status_code == 202  # one of them alone fits
    assert len(blob_names(storage, settings.uploads_container)) == 1


def test_zips_share_the_batch_byte_limit(settings, storage):
    """Each zip inflating to 60 % of MAX_BATCH_BYTES: the first fits, the second would take
    the batch past the limit and is listed as refused; the batch goes on with the first."""
    photo = _noise_png(150, 1)  # ~67 KB, compresses to about as much
    with app_client(settings, storage, max_batch_bytes=int(len(photo) / 0.6)) as client:
        response = _submit_batch(client, [("one.zip", _zip({"a.png": photo})), ("two.zip", _zip({"b.png": photo}))])
        assert response.status_code == 202, response.text
        batch = response.json()
    assert [job["filename"] for job in batch["jobs"]] == ["a"]
    assert [(r["filename"], r["code"]) for r in batch["rejected"]] == [("two", "bad_zip")]
    assert "the zip inflates to" in batch["rejected"][0]["message"]


def test_more_files_than_the_batch_limit_is_413_zip_members_counted(settings, storage):
    photo = png_bytes(20, 20)
    with app_client(settings, storage, max_batch_files=3) as client:
        for files in ([(f"{i}.png", photo) for i in range(4)],
                      [("two.zip", _zip({"a.png": photo, "b.png": photo})), ("c.png", photo), ("d.png", photo)],
                      [(f"{i}.zip", _zip({"a.png": photo, "b.png": photo, "c.png": photo})) for i in range(60)]):
            response = _submit_batch(client, files)
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert error["code"] == "too_many_files" and "at most 3 per batch" in error["message"]
        assert _nothing_stored(storage, settings)
        # One zip holding more than the limit is itself refused, and listed.
        response = _submit_batch(client, [("big.zip", _zip({f"{i}.png": photo for i in range(4)})), ("ok.png", photo)])
        assert response.status_code == 202, response.text
        assert [(r["filename"], r["code"]) for r in response.json()["rejected"]] == [("big", "bad_zip")]


def _lying_zip(declared: int, inflated: bytes, good: bytes, checksum_fits_the_lie: bool = False) -> bytes:
    """A zip whose first member, good.png, is honest, and whose second, big.png, declares
    ``declared`` bytes (local header and central directory) but inflates to ``inflated``."""
    raw = bytearray(_zip({"good.png": good, "big.png": inflated}))
    local = raw.find(b"PK\x03\x04", 1)  # the second member's local header
    central = raw.rfind(b"PK\x01\x02")
    assert raw[local + 30:local + 37] == b"big.png" and raw[central + 46:central + 53] == b"big.png"
    raw[local + 22:local + 26] = raw[central + 24:central + 28] = struct.pack("<I", declared)
    if checksum_fits_the_lie:  # the CRC of what the declared size cuts it to
        raw[local + 14:local + 18] = raw[central + 16:central + 20] = struct.pack("<I", zlib.crc32(inflated[:declared]))
    return bytes(raw)


def test_a_zip_member_inflating_past_its_declared_size_is_never_inflated_past_it(client, storage, settings):
    """big.png declares 1000 bytes and inflates to 100 MB. Its checksum then fails and the
    whole zip is refused, naming it (its honest neighbour is not kept either); with a checksum
    forged to match, it is read as the 1000 bytes it declares, and memory stays far below
    what it would inflate to."""
    good, inflated = png_bytes(30, 30), b"\0" * 100_000_000
    response = _submit_batch(client, [("lying.zip", _lying_zip(1000, inflated, good)), ("note.txt", b"not an image")])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "no_images"
    assert "big.png: its data does not match its declared size and checksum" in error["message"]
    assert _nothing_stored(storage, settings)

    forged = _lying_zip(1000, inflated, good, checksum_fits_the_lie=True)
    tracemalloc.start()
    try:
        response = _submit_batch(client, [("forged.zip", forged)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 202, response.text
    batch = response.json()
    assert [job["filename"] for job in batch["jobs"]] == ["good"]
    assert [(r["filename"], r["code"]) for r in batch["rejected"]] == [("big", "not_an_image")]
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB at the peak"
