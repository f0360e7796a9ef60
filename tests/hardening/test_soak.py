"""The soak (benchmarks/soak.py), smaller: real photos with faces through the networks, two
competing workers, one SIGKILLed mid-job, Azurite restarted; nothing lost or done twice,
every webhook delivered and correctly signed. `python -m benchmarks.soak` runs 60 jobs and
reports throughput and latency (BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from benchmarks.soak import SOAK_ENV, SOAK_SETTINGS, Receiver, Soak
from tests.conftest import LiveStack

JOBS = 6


@pytest.mark.slow
def test_soak_with_a_worker_killed_and_storage_restarted_loses_nothing(azurite, settings, storage, tmp_path):
    stack = LiveStack(settings.with_changes(**SOAK_SETTINGS), tmp_path, **SOAK_ENV)
    stack.start_api()
    for _ in range(2):
        stack.start_worker()
    try:
        with Receiver() as receiver:
            soak = Soak(azurite, stack, storage, jobs=JOBS, clients=3)
            report = soak.run(receiver)
    finally:
        stack.stop()
    print("\nsoak:", {k: v for k, v in report.items() if k != "problems"})
    assert any("SIGKILLed" in fault for fault in report["faults"]), report["faults"]
    assert "Azurite stopped and started again" in report["faults"]
    assert report["problems"] == [], (report["problems"], stack.logs())
    assert report["succeeded"] == JOBS
    assert report["webhook_calls"] >= 2 * JOBS
