"""Schemathesis, a tool that did not write the API, checks /openapi.json against the live stack:
the real `python -m processing serve` and `python -m processing worker` on the test Azurite.

Every phase Schemathesis has: explicit examples (the spec has none, so it reports it skipped),
coverage (boundary values, missing and wrong-typed fields, methods a path does not have),
fuzzing, and stateful sequences along the OpenAPI links from each submission to the job or
batch it made. Every check: no server error, only documented statuses, content types, headers
and bodies as documented, schema-valid requests accepted and invalid ones refused, 405 with an
Allow that matches the spec, deleted resources gone, ... Seed, examples and steps are in
schemathesis.toml; uploads.py makes positive cases' files real images.

Run through the command line, as a developer would run it against ./scripts/run-local.sh:
its pytest plugin's fixture loader (schemathesis.pytest.from_fixture) fails under pytest 9,
which no longer has the node attribute it rewrites (`Function._nodeid`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from processing.storage import Storage
from tests.conftest import ROOT, LiveStack, isolated_settings, unique_name

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
def stack(azurite, standin_weights, tmp_path):
    # As the default `settings` fixture: rate limits off (the fuzzer is one client sending
    # hundreds of requests a minute; tests/hardening covers the 429s), tables of its own.
    settings = isolated_settings(azurite, standin_weights, rate_limit_per_minute=0, rate_limit_reads_per_minute=0,
                                 rate_limit_table=unique_name("limits"), api_keys_table=unique_name("keys"))
    Storage(settings).ensure_resources()
    live = LiveStack(settings, tmp_path)
    try:
        live.start_api()
        live.start_worker()
        yield live
    finally:
        live.stop()


def answers_by_operation(spec: dict, har: Path) -> dict[str, set[int]]:
    """Every status each documented operation answered during the run, from the HAR record."""
    templates = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path, methods)
                 for path, methods in spec["paths"].items()]
    answers: dict[str, set[int]] = defaultdict(set)
    for entry in json.loads(har.read_text())["log"]["entries"]:
        method, path = entry["request"]["method"], urlsplit(entry["request"]["url"]).path
        for pattern, template, methods in templates:
            if pattern.match(path) and method.lower() in methods:
                answers[f"{method} {template}"].add(entry["response"]["status"])
    return answers


def test_schemathesis_finds_nothing_in_any_phase(stack, tmp_path):
    report, har = tmp_path / "report.json", tmp_path / "requests.har"
    run = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run", f"{stack.url}/openapi.json",
         "--report", "json,har", "--report-json-path", str(report), "--report-har-path", str(har)],
        cwd=ROOT, capture_output=True, text=True, timeout=420,
    )
    output = run.stdout[-25000:] + run.stderr[-5000:]
    assert run.returncode == 0, output + stack.logs()
    result = json.loads(report.read_text())
    assert result["complete"] and result["failures"] == [] and result["errors"] == [], output
    assert result["operations"]["tested"] == result["operations"]["total"] == 13, output
    phases = {name: phase["status"] for name, phase in result["phases"].items()}
    assert phases == {"examples": "skip", "coverage": "success", "fuzzing": "success", "stateful": "success"}, output

    # Positive cases were accepted, and the links carried real ids from the submissions to every
    # operation that reads or deletes a job or batch: each answered something besides 404.
    answers = answers_by_operation(httpx.get(f"{stack.url}/openapi.json").json(), har)
    assert 202 in answers["POST /api/jobs"] and 202 in answers["POST /api/batches"], dict(answers)
    linked = [label for label in answers if "{job_id}" in label or "{batch_id}" in label]
    assert len(linked) == 9 and [label for label in linked if not answers[label] - {404}] == [], dict(answers)
