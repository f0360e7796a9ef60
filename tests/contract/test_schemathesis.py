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
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from processing.config import new_secret
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
    # A service secret, so GET /api/webhooks/secret has one to answer with.
    live = LiveStack(settings, tmp_path, WEBHOOK_SECRET=new_secret())
    try:
        live.start_api()
        live.start_worker()
        yield live
    finally:
        live.stop()


def stateful_answers(events: Path) -> dict[tuple[str, bool], set[int]]:
    """The statuses of the stateful phase's calls, by operation and by whether an OpenAPI link
    supplied its parameters, from the run's event stream (the NDJSON report)."""
    answers: dict[tuple[str, bool], set[int]] = defaultdict(set)
    for line in events.read_text().splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if scenario is None or scenario["phase"] != "stateful":
            continue
        recorder = scenario["recorder"]
        for case_id, case in recorder.get("cases", {}).items():  # a scenario may end before its first call
            response = recorder["interactions"].get(case_id, {}).get("response")
            if response:
                label = f"{case['value']['method']} {case['value']['path']}"
                answers[label, case["is_transition_applied"]].add(response["status_code"])
    return answers


def test_schemathesis_finds_nothing_in_any_phase(stack, tmp_path):
    report, events = tmp_path / "report.json", tmp_path / "events.ndjson"
    run = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run", f"{stack.url}/openapi.json",
         "--report", "json,ndjson", "--report-json-path", str(report), "--report-ndjson-path", str(events)],
        cwd=ROOT, capture_output=True, text=True, timeout=420,
    )
    output = run.stdout[-25000:] + run.stderr[-5000:]
    assert run.returncode == 0, output + stack.logs()
    result = json.loads(report.read_text())
    assert result["complete"] and result["failures"] == [] and result["errors"] == [], output
    assert result["operations"]["tested"] == result["operations"]["total"] == 15, output
    phases = {name: phase["status"] for name, phase in result["phases"].items()}
    assert phases.pop("examples") in ("skip", "success"), output  # skipped while the spec gives no examples
    assert phases == {"coverage": "success", "fuzzing": "success", "stateful": "success"}, output

    # The stateful phase's submissions were accepted, and the spec's links (the only ones:
    # inference is off) carried their ids to every operation on a job or batch, each of which
    # then gave an answer only a real id gets (a 404 is what a drawn id gets; a 422 comes first).
    answers = stateful_answers(events)
    assert 202 in answers["POST /api/jobs", False] and 202 in answers["POST /api/batches", False], dict(answers)
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    on_ids = [f"{method.upper()} {path}" for path, methods in spec["paths"].items() if "_id}" in path for method in methods]
    unreached = [label for label in on_ids if not answers[label, True] - {404, 422}]
    assert len(on_ids) == 10 and unreached == [], (unreached, dict(answers))
