"""Every setting of the service, read once from the environment.

This is the only module that reads ``os.environ``: everything else receives a
``Settings`` value, so tests can build one explicitly and nothing changes behind
a running process's back.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Mapping

# Azurite's well-known development account (published in Azure's docs, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(host: str = "127.0.0.1", blob: int = 10000, queue: int = 10001, table: int = 10002) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{AZURITE_ACCOUNT};"
    )


def secret_bytes(secret: str) -> bytes | None:
    """A Standard Webhooks secret's key: the base64 after ``whsec_``; None unless it is one
    of at least 24 bytes (192 bits)."""
    if not secret.startswith("whsec_"):
        return None
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except ValueError:
        return None
    return key if len(key) >= 24 else None


def new_secret() -> str:
    """A fresh Standard Webhooks secret: whsec_ and 256 random bits in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    # Storage. The same variable names the Functions host uses for its own trigger
    # connection, so one setting serves both: either a connection string, or (in Azure)
    # identity-based ``AzureWebJobsStorage__accountName`` / ``__*ServiceUri`` settings.
    storage_connection_string: str = field(default="", metadata={"env": "AzureWebJobsStorage"})
    storage_account_name: str = field(default="", metadata={"env": "AzureWebJobsStorage__accountName"})
    blob_service_uri: str = field(default="", metadata={"env": "AzureWebJobsStorage__blobServiceUri"})
    queue_service_uri: str = field(default="", metadata={"env": "AzureWebJobsStorage__queueServiceUri"})
    table_service_uri: str = field(default="", metadata={"env": "AzureWebJobsStorage__tableServiceUri"})
    managed_identity_client_id: str = field(default="", metadata={"env": "AzureWebJobsStorage__clientId"})

    jobs_queue: str = field(default="restore-jobs", metadata={"env": "JOBS_QUEUE"})
    jobs_table: str = field(default="jobs", metadata={"env": "JOBS_TABLE"})
    uploads_container: str = field(default="uploads", metadata={"env": "UPLOADS_CONTAINER"})
    results_container: str = field(default="results", metadata={"env": "RESULTS_CONTAINER"})

    # The exported networks the service runs (processing/engine/store.py), made at build time
    # from verified checkpoints by `python -m processing.checkpoints export`; never written at
    # run time. Empty: <WEIGHTS_DIR>/onnx, where that command puts them by default.
    models_dir_setting: str = field(default="", metadata={"env": "MODELS_DIR", "aliases": ("ONNX_CACHE_DIR",)})
    # Checkpoints (.pth): only the build commands read them (`python -m processing.checkpoints`).
    weights_dir: Path = field(default=Path("weights"), metadata={"env": "WEIGHTS_DIR"})
    # Stand-in weights (random parameters) are refused unless this says they are wanted.
    standin_weights: bool = field(default=False, metadata={"env": "STANDIN_WEIGHTS"})
    # Threads for the networks and OpenCV; 0: one per core.
    engine_threads: int = field(default=0, metadata={"env": "ENGINE_THREADS", "aliases": ("TORCH_THREADS",)})
    max_faces: int = field(default=10, metadata={"env": "MAX_FACES"})
    # Where the networks run: openvino (fastest here) or onnxruntime (about 450 MB leaner
    # at peak); the engine's runtimes.RUNTIMES is the list, and refuses anything else.
    engine_backend: str = field(default="openvino", metadata={"env": "ENGINE_BACKEND"})
    # What the networks compute in (processing/engine/runtimes.py, plan): auto (bf16 where
    # OpenVINO runs it natively on AMX, f32 elsewhere), f32, or bf16. ONNX Runtime: f32 always.
    engine_precision: str = field(default="auto", metadata={"env": "ENGINE_PRECISION"})
    # Faces are found on a copy whose longer side is at most this; landmarks are scaled back
    # to full resolution (0 disables the downscale). 840 is the scale RetinaFace-ResNet50 was
    # trained at (facexlib's cfg_re50 image_size); its smallest anchor is 16 px on that copy.
    detect_max_side: int = field(default=840, metadata={"env": "DETECT_MAX_SIDE"})
    # A second pass for small faces in large photos (processing/engine/detectors.py,
    # SecondPass): when the faces found on that copy are near the smallest it shows (or none
    # were found), detect again on overlapping tiles of a copy at most this large; 0: never.
    detect_second_pass_max_side: int = field(default=2520, metadata={"env": "DETECT_SECOND_PASS_MAX_SIDE"})

    # Uploads.
    max_upload_bytes: int = field(default=20 * 1024 * 1024, metadata={"env": "MAX_UPLOAD_BYTES"})
    max_pixels: int = field(default=40_000_000, metadata={"env": "MAX_PIXELS"})

    # Jobs.
    retention_hours: float = field(default=24.0, metadata={"env": "JOB_RETENTION_HOURS"})
    max_dequeue_count: int = field(default=3, metadata={"env": "MAX_DEQUEUE_COUNT"})
    # How long a worker owns a running job without renewing; a job whose lease ran out
    # is taken over by the next delivery of its message.
    lease_seconds: int = field(default=120, metadata={"env": "JOB_LEASE_SECONDS"})
    # The Functions host's own switch for the job queue's trigger (function_app.restore_job;
    # learn.microsoft.com azure-functions/disable-function): an instance with it set runs no
    # jobs, so it does not load the networks as it starts.
    jobs_trigger_disabled: bool = field(default=False, metadata={"env": "AzureWebJobs.restore_job.Disabled"})
    # An idle polling worker asks the queue this often: the wait a new job can see before it
    # starts (five cheap requests a second per idle worker).
    worker_poll_seconds: float = field(default=0.2, metadata={"env": "WORKER_POLL_SECONDS"})

    # HTTP.
    cors_origins: tuple[str, ...] = field(default=(), metadata={"env": "CORS_ORIGINS"})
    static_site_dir: Path = field(
        default=Path(__file__).resolve().parent.parent / "static_site", metadata={"env": "STATIC_SITE_DIR"}
    )
    max_queue_depth: int = field(default=500, metadata={"env": "MAX_QUEUE_DEPTH"})

    # Abuse limits (processing/ratelimit.py): a token bucket per client. Submissions (any
    # POST under /api/) in Table Storage, exact across instances; reads of jobs and
    # batches in each instance's memory. A rate of 0 turns that bucket off.
    rate_limit_per_minute: float = field(default=10.0, metadata={"env": "RATE_LIMIT_PER_MINUTE"})
    rate_limit_burst: int = field(default=20, metadata={"env": "RATE_LIMIT_BURST"})
    rate_limit_reads_per_minute: float = field(default=600.0, metadata={"env": "RATE_LIMIT_READS_PER_MINUTE"})
    rate_limit_reads_burst: int = field(default=120, metadata={"env": "RATE_LIMIT_READS_BURST"})
    rate_limit_table: str = field(default="ratelimits", metadata={"env": "RATE_LIMIT_TABLE"})
    # Only behind a proxy that sets X-Forwarded-For (App Service, Front Door): otherwise
    # anyone could name any address and get a fresh bucket.
    trust_forwarded_for: bool = field(default=False, metadata={"env": "TRUST_FORWARDED_FOR"})

    # Authentication (processing/auth.py): optional API keys (X-API-Key), and the
    # principal App Service authentication puts in X-MS-CLIENT-PRINCIPAL* headers, which
    # are trusted only when APP_SERVICE_AUTH says the app runs behind it.
    require_auth: bool = field(default=False, metadata={"env": "REQUIRE_AUTH"})
    app_service_auth: bool = field(default=False, metadata={"env": "APP_SERVICE_AUTH"})
    api_keys_table: str = field(default="apikeys", metadata={"env": "API_KEYS_TABLE"})
    # How long an instance trusts its memory of a key; a revoked key stops working within this.
    api_key_cache_seconds: float = field(default=30.0, metadata={"env": "API_KEY_CACHE_SECONDS"})

    # Telemetry (processing/telemetry.py): Azure Monitor when the connection string is set,
    # OTLP when the endpoint is, nothing otherwise. The authentication string is the
    # Functions convention "Authorization=AAD;ClientId=<managed identity>" for Entra ID
    # ingestion.
    appinsights_connection_string: str = field(default="", metadata={"env": "APPLICATIONINSIGHTS_CONNECTION_STRING"})
    appinsights_authentication: str = field(default="", metadata={"env": "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"})
    # OpenTelemetry's standard variable: the base URL of any OTLP/HTTP collector (traces,
    # metrics and logs go to its /v1/traces, /v1/metrics, /v1/logs). Unset: no OTLP export
    # (not the specification's localhost default: an app that exports nowhere by default
    # should not knock on a port nobody listens on). Both may be set: each gets everything.
    otlp_endpoint: str = field(default="", metadata={"env": "OTEL_EXPORTER_OTLP_ENDPOINT"})
    # text (readable, the local default) or json (one object per line, for log shippers).
    log_format: str = field(default="text", metadata={"env": "LOG_FORMAT"})

    # Storage retries: a short budget, so an outage becomes a 503 + Retry-After in seconds
    # rather than a request that hangs for a minute.
    storage_retry_total: int = field(default=3, metadata={"env": "STORAGE_RETRY_TOTAL"})
    storage_retry_backoff: float = field(default=0.5, metadata={"env": "STORAGE_RETRY_BACKOFF_SECONDS"})

    # Webhooks (processing/jobs/webhooks.py): delivered from a queue of their own, signed per
    # Standard Webhooks. WEBHOOK_SECRET (whsec_ + base64) signs calls for callers without an API
    # key (a key's calls are signed with that key's own secret); without it, only key holders
    # may ask for webhooks. WEBHOOK_ALLOW_PRIVATE lets local development post to http:// and to
    # loopback and private addresses, which are refused otherwise (server-side request forgery).
    webhooks_queue: str = field(default="restore-webhooks", metadata={"env": "WEBHOOKS_QUEUE"})
    webhook_secret: str = field(default="", metadata={"env": "WEBHOOK_SECRET"})
    webhook_allow_private: bool = field(default=False, metadata={"env": "WEBHOOK_ALLOW_PRIVATE"})
    # Seconds before each retry of a failed delivery: five tries over about an hour.
    webhook_retry_seconds: tuple[str, ...] = field(default=("30", "120", "600", "2700"),
                                                   metadata={"env": "WEBHOOK_RETRY_SECONDS"})
    webhook_timeout_seconds: float = field(default=5.0, metadata={"env": "WEBHOOK_TIMEOUT_SECONDS"})
    # Prefer: wait=N holds a submission open (without a thread) until its job ends; at most this
    # many at once per instance, beyond which such a request gets 503 + Retry-After.
    max_waiting_requests: int = field(default=100, metadata={"env": "MAX_WAITING_REQUESTS"})

    # Batches.
    max_batch_files: int = field(default=50, metadata={"env": "MAX_BATCH_FILES"})
    max_batch_bytes: int = field(default=200 * 1024 * 1024, metadata={"env": "MAX_BATCH_BYTES"})
    # How many of one batch's jobs may be on the queue at once (fairness to single jobs).
    batch_window: int = field(default=2, metadata={"env": "BATCH_WINDOW"})

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_dequeue_count", "lease_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_name(name)} must be positive")
        if self.log_format not in ("text", "json"):
            raise SettingsError("LOG_FORMAT must be text or json")
        if self.engine_precision not in ("auto", "f32", "bf16"):
            raise SettingsError("ENGINE_PRECISION must be auto, f32 or bf16")
        if self.max_faces < 0 or self.engine_threads < 0 or self.retention_hours <= 0:
            raise SettingsError("MAX_FACES and ENGINE_THREADS must be >= 0, JOB_RETENTION_HOURS > 0")
        for name in ("rate_limit_per_minute", "rate_limit_reads_per_minute", "api_key_cache_seconds",
                     "storage_retry_total", "storage_retry_backoff", "detect_second_pass_max_side"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{_env_name(name)} must be >= 0")
        for name in ("rate_limit_burst", "rate_limit_reads_burst"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{_env_name(name)} must be at least 1")
        if self.max_waiting_requests < 0 or self.webhook_timeout_seconds <= 0:
            raise SettingsError("MAX_WAITING_REQUESTS must be >= 0, WEBHOOK_TIMEOUT_SECONDS > 0")
        try:
            if any(seconds < 0 for seconds in self.webhook_retry_delays):
                raise ValueError
        except ValueError:
            raise SettingsError("WEBHOOK_RETRY_SECONDS must be whole seconds >= 0, separated by commas") from None
        if self.webhook_secret and self.webhook_secret_bytes is None:
            raise SettingsError("WEBHOOK_SECRET must be whsec_ followed by base64 (at least 24 bytes)")

    @property
    def webhook_retry_delays(self) -> tuple[int, ...]:
        return tuple(int(seconds) for seconds in self.webhook_retry_seconds)

    @property
    def webhook_secret_bytes(self) -> bytes | None:
        """The service secret's key bytes (the base64 after ``whsec_``), None when unset or malformed."""
        return secret_bytes(self.webhook_secret)

    @property
    def models_dir(self) -> Path:
        return Path(self.models_dir_setting) if self.models_dir_setting else self.weights_dir / "onnx"

    @property
    def poison_queue(self) -> str:
        # The Functions host's own naming rule for messages it gave up on.
        return f"{self.jobs_queue}-poison"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            # The first of the variable and its older names that is set wins.
            name = next((n for n in (f.metadata["env"], *f.metadata.get("aliases", ())) if n in env), None)
            if name is None:
                continue
            raw = env[name]
            try:
                values[f.name] = _parse(f.type, raw)
            except ValueError as error:
                raise SettingsError(f"{name}: {error}") from None
        return cls(**values)

    def with_changes(self, **changes) -> "Settings":
        return replace(self, **changes)


def _parse(type_name: str, raw: str):
    if type_name == "bool":
        return _bool(raw)
    if type_name == "int":
        return int(raw)
    if type_name == "float":
        return float(raw)
    if type_name == "Path":
        return Path(raw)
    if type_name.startswith("tuple"):
        return _csv(raw)
    return raw


def _env_name(field_name: str) -> str:
    return next(f.metadata["env"] for f in fields(Settings) if f.name == field_name)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
