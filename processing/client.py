"""`python -m processing submit --url URL FILES-or-DIRS --out DIR`: restore local photos on a
running service, through its public HTTP API only (nothing here touches storage or the engine).

Uploads go in batches within the limits GET /api/info states, each with an Idempotency-Key, so
that a POST sent again after its answer was lost (a dropped connection, a timeout) gets the batch
the first one made instead of a second one; progress is followed one request per batch; each
result is downloaded into DIR (a download cut short is fetched again). DIR holds a small state
file (each file's hash, batch and job id, what became of it), written after every accepted
upload, so running the same command again after an interruption uploads nothing that was
accepted: it only follows and downloads, and skips results already downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import requests

STATE_FILE = ".restore-state.json"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# What a multipart body adds to the files themselves, kept clear of the batch byte limit.
FRAMING = 64 * 1024
ZIP_MAGIC = b"PK\x03\x04"
RETRIES = 8  # for 429/503 (each after its Retry-After), dropped connections and answers cut short
# Failures after which a request is sent again: safe for GETs, and for the POSTs because each carries
# an Idempotency-Key (a read timeout may mean the service did the work and the answer was lost).
LOST = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout)


class ClientError(RuntimeError):
    """Nothing more can be done this run (unreachable service, refused key): said, exit 2."""


@dataclass
class Entry:
    """One local file and what became of it, as the state file keeps it."""

    name: str  # where it came from, relative to the argument that named it; also the output's name
    path: str
    sha256: str
    size: int
    batch_id: str = ""
    job_id: str = ""
    status: str = ""  # "" not uploaded | queued | running | succeeded | failed | rejected | downloaded
    error: str = ""
    output: str = ""


class Api:
    def __init__(self, url: str, api_key: str | None, timeout: float = 60.0):
        self.base = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "face-restore-client/1"
        if api_key:
            self.session.headers["X-API-Key"] = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """The answer to one request, after waiting out 429/503 (their Retry-After), a 409 for an
        Idempotency-Key whose first request is still being answered, and lost answers (each
        sent again as it was: a POST with its key); any other answer is the caller's to read.
        A 401 ends the run."""
        for attempt in range(RETRIES + 1):
            try:
                response = self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
            except LOST as error:
                if attempt == RETRIES:
                    raise ClientError(f"no answer from {self.base}: {error}") from None
                time.sleep(min(30, 2 ** attempt))
                continue
            if response.status_code == 401:
                raise ClientError(f"{self.base} refused the request: {message(response)}")
            in_use = response.status_code == 409 and "idempotency_key_in_use" in response.text
            if (response.status_code in (429, 503) or in_use) and attempt < RETRIES:
                time.sleep(retry_after(response, default=min(30, 2 ** attempt)))
                continue
            return response
        raise AssertionError("unreachable")

    def json(self, path: str) -> dict[str, Any]:
        response = self.request("GET", path)
        if response.status_code != 200:
            raise ClientError(f"GET {path}: {response.status_code} {message(response)}")
        return response.json()


def retry_after(response: requests.Response, default: float) -> float:
    try:
        return max(0.5, min(60.0, float(response.headers.get("Retry-After", default))))
    except ValueError:
        return default


def message(response: requests.Response) -> str:
    """The API's own words for a refusal: {"error": {"code", "message"}}."""
    try:
        error = response.json()["error"]
        return f"{error['message']} ({error['code']})"
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason


# -- the files and the state --------------------------------------------------------------


def collect(paths: list[Path]) -> list[tuple[str, Path]]:
    """(name, path) of every image named or found (recursively) in a directory named; a name is
    unique: the path below the directory given, or the file's name."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                               and p.name != STATE_FILE):
                found.append((file.relative_to(path).as_posix(), file))
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise ClientError(f"{path}: no such file or directory")
    names: set[str] = set()
    unique = []
    for name, file in found:
        stem, dot, suffix = name.rpartition(".")
        candidate, n = name, 1
        while candidate in names:
            n += 1
            candidate = f"{stem}-{n}{dot}{suffix}"
        names.add(candidate)
        unique.append((candidate, file))
    return unique


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as file:
        return file.read(len(magic)) == magic


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class State:
    """DIR/.restore-state.json: name -> Entry, rewritten whole (atomically) after each change
    that a rerun must know about."""

    def __init__(self, out: Path, url: str):
        self.file = out / STATE_FILE
        self.url = url
        self.entries: dict[str, Entry] = {}
        if self.file.exists():
            stored = json.loads(self.file.read_text())
            if stored.get("url") == url:  # jobs on another service cannot be followed here
                self.entries = {name: Entry(**entry) for name, entry in stored.get("files", {}).items()}

    def save(self) -> None:
        temporary = self.file.with_suffix(".tmp")
        temporary.write_text(json.dumps({"url": self.url, "files": {n: asdict(e) for n, e in self.entries.items()}},
                                        indent=1))
        os.replace(temporary, self.file)

    def track(self, name: str, path: Path) -> Entry:
        """The entry for a file; a new one if the file is new or changed since it was sent."""
        digest, size = sha256(path), path.stat().st_size
        entry = self.entries.get(name)
        if entry is None or entry.sha256 != digest:
            entry = self.entries[name] = Entry(name=name, path=str(path), sha256=digest, size=size)
        entry.path = str(path)
        return entry


# -- the run ----------------------------------------------------------------------------


def chunks(entries: list[Entry], max_files: int, max_bytes: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for entry in entries:
        if chunk and (len(chunk) >= max_files or sum(e.size for e in chunk) + entry.size > max_bytes):
            yield chunk
            chunk = []
        chunk.append(entry)
    if chunk:
        yield chunk


def new_key() -> dict[str, str]:
    """A key for one upload, kept across its retries within this run. A new run makes new ones: the
    service may have deleted what an old key made."""
    return {"Idempotency-Key": str(uuid.uuid4())}


def upload(api: Api, chunk: list[Entry], options: dict[str, str]) -> None:
    """One batch. Each file is sent as "<index>-<name>": the service lists refused files by a
    cleaned-up name, and the index in front is what maps each refusal back to its file. A batch
    refused as a whole (every file bad, or a bad option) is sent again file by file, so that each
    file gets its own answer."""
    files = [("files", (f"{i:04d}-{Path(e.name).name}", Path(e.path).read_bytes(), "application/octet-stream"))
             for i, e in enumerate(chunk)]
    response = api.request("POST", "/api/batches", files=files, data=options, headers=new_key())
    if response.status_code != 202:
        if 400 <= response.status_code < 500:
            for entry in chunk:
                upload_one(api, entry, options)
            return
        raise ClientError(f"POST /api/batches: {response.status_code} {message(response)}")
    batch = response.json()
    refused = {int(r["filename"].split("-", 1)[0]): r for r in batch["rejected"] if r["filename"][:4].isdigit()}
    accepted = iter(batch["jobs"])
    for i, entry in enumerate(chunk):
        if i in refused:
            entry.status, entry.error = "rejected", f"upload refused: {refused[i]['message']} ({refused[i]['code']})"
        else:
            job = next(accepted)
            entry.batch_id, entry.job_id, entry.status, entry.error = batch["id"], job["id"], job["status"], ""


def upload_one(api: Api, entry: Entry, options: dict[str, str]) -> None:
    files = {"file": (Path(entry.name).name, Path(entry.path).read_bytes(), "application/octet-stream")}
    response = api.request("POST", "/api/jobs", files=files, data=options, headers=new_key())
    if response.status_code == 202:
        entry.job_id, entry.status, entry.error = response.json()["id"], "queued", ""
    elif 400 <= response.status_code < 500:
        entry.status, entry.error = "rejected", f"upload refused: {response.status_code} {message(response)}"
    else:
        raise ClientError(f"POST /api/jobs: {response.status_code} {message(response)}")


def download(api: Api, entry: Entry, out: Path) -> None:
    response = api.request("GET", f"/api/jobs/{entry.job_id}/result")
    if response.status_code != 200:
        entry.status, entry.error = "failed", f"result not downloaded: {response.status_code} {message(response)}"
        return
    ext = EXTENSIONS.get(response.headers.get("Content-Type", "").split(";")[0], "bin")
    target = out / f"{entry.name.rsplit('.', 1)[0]}-restored.{ext}"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")  # a download cut short is never taken for a result
    partial.write_bytes(response.content)
    os.replace(partial, target)
    entry.status, entry.output = "downloaded", str(target.relative_to(out))


def _following(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.job_id and e.status not in ("downloaded", "failed")]


def follow(api: Api, state: State, entries: list[Entry], out: Path, bar) -> None:
    """Poll each batch that still has work until every job has ended, downloading results as
    they come. Jobs (or batches) the service no longer has are sent again next time round."""
    while pending := _following(entries):
        wait = 1.0
        # One request per batch; a job sent on its own is asked after by itself.
        for path in sorted({f"/api/batches/{e.batch_id}" if e.batch_id else f"/api/jobs/{e.job_id}" for e in pending}):
            response = api.request("GET", path)
            members = [e for e in pending if path in (f"/api/batches/{e.batch_id}", f"/api/jobs/{e.job_id}")]
            if response.status_code == 404:
                for entry in members:
                    entry.batch_id = entry.job_id = entry.status = ""
                    entry.error = "the service no longer has its job (expired or deleted); sent again"
                state.save()
                continue
            if response.status_code != 200:
                raise ClientError(f"GET {path}: {response.status_code} {message(response)}")
            wait = max(wait, retry_after(response, default=1.0))
            view = response.json()
            jobs = {job["id"]: job for job in view.get("jobs", [view])}
            for entry in members:
                job = jobs.get(entry.job_id)
                if job is None:  # deleted on its own
                    entry.status, entry.error = "failed", "its job was deleted on the service"
                elif job["status"] == "succeeded":
                    download(api, entry, out)
                elif job["status"] in ("failed", "cancelled"):
                    error = job.get("error") or {}
                    entry.status = "failed"
                    entry.error = f"job {job['status']}: {error.get('message', 'no reason given')} ({error.get('code', '?')})"
                else:
                    entry.status = job["status"]
                    continue
                bar.update(1)
                state.save()
        if _following(entries):
            time.sleep(min(wait, 5.0))


def submit(url: str, api_key: str | None, paths: list[Path], out: Path, options: dict[str, str],
           progress: bool = True) -> int:
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    api = Api(url, api_key)
    info = api.json("/api/info")
    state = State(out, api.base)
    entries = [state.track(name, path) for name, path in collect(paths)]
    if not entries:
        raise ClientError("no JPEG, PNG or WebP files found in " + ", ".join(map(str, paths)))
    for entry in entries:
        if entry.status == "downloaded" and not (out / entry.output).is_file():
            entry.status = "succeeded"  # the result was removed since: fetch it again
        if entry.status == "rejected":  # never accepted: worth another try (an option fixed, a limit raised)
            entry.status = entry.error = ""
        if not entry.job_id and entry.size > info["max_upload_bytes"]:
            entry.status = "rejected"
            entry.error = f"too large: {entry.size / 1e6:.1f} MB; the service takes at most {info['max_upload_bytes'] / 1e6:.0f} MB"
        elif not entry.job_id and _starts_with(Path(entry.path), ZIP_MAGIC):
            # The service would unpack it into several jobs, which one file's state cannot follow.
            entry.status, entry.error = "rejected", "a zip archive: unpack it and name the folder instead"
    state.save()

    unsent = lambda: [e for e in entries if not e.job_id and e.status != "rejected"]
    done = sum(1 for e in entries if e.status in ("downloaded", "rejected", "failed"))
    with tqdm(total=len(entries), initial=done, unit="photo", disable=not progress, file=sys.stderr) as bar:
        for _ in range(3):  # the upload, and the resending of any job the service lost meanwhile
            for chunk in chunks(unsent(), info["max_batch_files"], info["max_batch_bytes"] - FRAMING):
                bar.set_description("uploading")
                upload(api, chunk, options)
                bar.update(sum(1 for e in chunk if e.status == "rejected"))
                state.save()
            bar.set_description("restoring")
            follow(api, state, entries, out, bar)
            if not unsent():
                break

    failed = [e for e in entries if e.status != "downloaded"]
    for entry in failed:
        print(f"FAILED  {entry.path}: {entry.error or entry.status}", file=sys.stderr)
    print(f"{len(entries) - len(failed)} of {len(entries)} restored into {out}"
          + (f"; {len(failed)} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def main(args) -> int:
    options: dict[str, str] = {}
    for pair in args.option or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            print(f"--option {pair!r}: expected NAME=VALUE (the names: GET {args.url}/api/info)", file=sys.stderr)
            return 2
        options[name] = value
    try:
        return submit(args.url, args.api_key, args.paths, args.out, options, progress=not args.no_progress)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command again to resume (state in {args.out / STATE_FILE})", file=sys.stderr)
        return 130
