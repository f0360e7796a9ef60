"""Command line: ``python -m processing serve | worker | restore FILES... | weights fetch|verify|standin
| keys create NAME|revoke ID|list``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from .config import SettingsError, get_settings


def _weights_dir(args) -> Path:
    return Path(args.dir) if args.dir else get_settings().weights_dir


def cmd_weights(args) -> int:
    from . import weights

    target = _weights_dir(args)
    if args.action == "fetch":
        try:
            weights.fetch(target, source_dir=Path(args.source) if args.source else None, include_optional=args.all)
        except (weights.WeightsError, OSError) as error:
            print(f"weights fetch failed: {error}", file=sys.stderr)
            return 1
        return cmd_weights(argparse.Namespace(action="verify", dir=str(target)))
    if args.action == "standin":
        print("Building STAND-IN weights: real architectures, random parameters, meaningless output.")
        weights.build_standin(target, seed=args.seed)
        return 0
    statuses = weights.check(target, full_hash=True)
    kind = "stand-in" if weights.is_standin_dir(target) else "official"
    for status in statuses:
        print(f"{'ok     ' if status.ok else 'BROKEN '} {status.name} {status.problem}")
    problems = [s for s in statuses if not s.ok]
    required = {n for n, (_, _, req) in weights.expected_files(target).items() if req}
    if problems or not required <= {s.name for s in statuses}:
        print(f"{target}: weights are missing or corrupt; run `python -m processing weights fetch`", file=sys.stderr)
        return 1
    print(f"{target}: {kind} weights verified (sha256)")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from . import runtime

    runtime.storage().ensure_resources()
    uvicorn.run(runtime.http_app(), host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


def cmd_worker(args) -> int:
    from . import runtime
    from .weights import WeightsError
    from .worker import PollingWorker

    settings = get_settings()
    runtime.storage().ensure_resources()
    handler = runtime.job_handler()
    try:
        started = time.perf_counter()
        handler.engine  # noqa: B018  (load the models now: refuse to start without intact weights)
    except WeightsError as error:
        print(f"worker not started: {error}", file=sys.stderr)
        return 2
    logging.info("models loaded in %.1fs from %s", time.perf_counter() - started, settings.weights_dir)
    worker = PollingWorker(settings, runtime.storage(), handler)
    # SIGTERM (container stop, Ctrl-C): finish the job in hand, then exit.
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    print(f"worker {handler.worker_id} polling queue {settings.jobs_queue}", flush=True)
    worker.run(max_messages=1 if args.once else None)
    return 0


def cmd_keys(args) -> int:
    from .auth import ApiKeys, keys_command
    from .storage import Storage

    settings = get_settings()
    keys = ApiKeys(Storage(settings).tables.get_table_client(settings.api_keys_table))
    return keys_command(keys, args.action, args.value)


def cmd_restore(args) -> int:
    from .cli import restore_files

    return restore_files(args)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
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

    weights = commands.add_parser("weights", help="fetch or verify model weights")
    weights.add_argument("action", choices=["fetch", "verify", "standin"])
    weights.add_argument("--dir", help="weights directory (default: WEIGHTS_DIR)")
    weights.add_argument("--from", dest="source", help="copy from this directory instead of downloading")
    weights.add_argument("--all", action="store_true", help="also the optional Real-ESRGAN background model")
    weights.add_argument("--seed", type=int, default=0, help="seed for stand-in weights")
    weights.set_defaults(run=cmd_weights)

    keys = commands.add_parser("keys", help="API keys: create NAME | revoke ID | list (stored hashed)")
    keys.add_argument("action", choices=["create", "revoke", "list"])
    keys.add_argument("value", nargs="?", help="the new key's name (create) or the key's id (revoke)")
    keys.set_defaults(run=cmd_keys)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
