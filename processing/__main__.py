"""Command line: ``python -m processing serve | worker | restore FILES... | submit --url URL
FILES... | models verify | keys create NAME|revoke ID|list``. The build-time steps (fetch checkpoints, stand-ins,
export) are ``python -m processing.checkpoints``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .config import SettingsError, get_settings


def cmd_models(args) -> int:
    from .engine.store import ModelStore

    store = ModelStore(Path(args.dir) if args.dir else get_settings().models_dir)
    problems = store.problems(full_hash=True)
    for problem in problems:
        print(f"BROKEN  {problem}")
    if problems:
        print(f"{store.directory}: the models are missing or damaged; export them with "
              "`python -m processing.checkpoints export`", file=sys.stderr)
        return 1
    kind = "stand-in" if store.standin else "official"
    if args.official and store.standin:
        print(f"{store.directory}: these are stand-in models (random parameters)", file=sys.stderr)
        return 1
    print(f"{store.directory}: {kind} models verified (sha256): {', '.join(sorted(store.networks))}")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from . import wiring

    wiring.storage().ensure_resources()
    # log_config=None: uvicorn's lines go through the root logger (LOG_FORMAT), not its own handlers.
    uvicorn.run(wiring.http_app(), host=args.host, port=args.port, log_level="info", access_log=False, log_config=None)
    return 0


def cmd_worker(args) -> int:
    from . import wiring
    from .engine.store import ModelsError
    from .worker import PollingWorker

    settings = get_settings()
    wiring.storage().ensure_resources()
    handler = wiring.job_handler()
    try:
        handler.load_engine()  # now, before polling: refuse to start without intact models
    except (ModelsError, ValueError) as error:
        print(f"worker not started: {error}", file=sys.stderr)
        return 2
    worker = PollingWorker(settings, wiring.storage(), handler)
    # SIGTERM (container stop, Ctrl-C): finish the job in hand, then exit.
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    logging.info("worker %s polling queue %s", handler.worker_id, settings.jobs_queue)
    worker.run(max_messages=1 if args.once else None)
    return 0


def cmd_keys(args) -> int:
    from .access.keys import ApiKeys, keys_command
    from .storage import Storage

    settings = get_settings()
    keys = ApiKeys(Storage(settings).tables.get_table_client(settings.api_keys_table))
    return keys_command(keys, args.action, args.value)


def cmd_restore(args) -> int:
    from .cli import restore_files

    return restore_files(args)


def cmd_submit(args) -> int:
    from .client import main as submit

    return submit(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API and the page")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=cmd_serve)

    worker = commands.add_parser("worker", help="process queued jobs (without the Functions host)")
    worker.add_argument("--once", action="store_true", help="handle one message and exit")
    worker.set_defaults(run=cmd_worker)

    restore = commands.add_parser("restore", help="restore image files locally, no server needed")
    from .cli import add_restore_arguments

    add_restore_arguments(restore)
    restore.set_defaults(run=cmd_restore)

    submit = commands.add_parser("submit", help="restore files on a running service (its HTTP API only); resumable")
    submit.add_argument("paths", nargs="+", type=Path, metavar="FILE-or-DIR",
                        help="JPEG, PNG or WebP images, or directories (searched recursively)")
    submit.add_argument("--url", required=True, help="the service, e.g. https://restore.example.org")
    submit.add_argument("--api-key", help="an API key (X-API-Key), where the service wants one")
    submit.add_argument("--out", type=Path, required=True,
                        help="where the results go; it also keeps the state a second run resumes from")
    submit.add_argument("-o", "--option", action="append", metavar="NAME=VALUE",
                        help="a job option (repeatable), e.g. -o upscale=1; GET /api/info lists them")
    submit.add_argument("--no-progress", action="store_true", help="no progress bar")
    submit.set_defaults(run=cmd_submit)

    models = commands.add_parser("models", help="verify the exported models the service runs (SHA-256 of every file)")
    models.add_argument("action", choices=["verify"])
    models.add_argument("--dir", help="models directory (default: MODELS_DIR, or WEIGHTS_DIR/onnx)")
    models.add_argument("--official", action="store_true", help="also fail when the models are stand-ins")
    models.set_defaults(run=cmd_models)

    keys = commands.add_parser("keys", help="API keys: create NAME | revoke ID | list (stored hashed)")
    keys.add_argument("action", choices=["create", "revoke", "list"])
    keys.add_argument("value", nargs="?", help="the new key's name (create) or the key's id (revoke)")
    keys.set_defaults(run=cmd_keys)

    args = parser.parse_args(argv)
    if args.run is cmd_submit:  # a client of a service somewhere else: none of this machine's settings apply
        return args.run(args)
    try:
        from . import wiring

        wiring.observe()
        return args.run(args)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
