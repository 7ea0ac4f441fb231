"""Redis killed and restarted during ingestion, at a small size (a private
redis-server on a free port; the shared one is never touched): 503 with
Retry-After while it is down, 202 after, and every 202'd interaction stored
exactly once, none of the refused ones."""

from __future__ import annotations

import shutil

import pytest

from bench import faults


@pytest.mark.slow
def test_redis_killed_and_restarted_during_ingestion() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    report = faults.run(faults.parse_args(["--batches", "4", "--batch", "50",
                                           "--retry-timeout", "30", "--drain-timeout", "60"]))
    failed = [f for f in report.figures if f.ok is False]
    assert not failed, report.markdown()
