"""The similar-items benchmark at a tiny size: it runs and reports both figures
(its timings are the benchmark's to judge, not this test's)."""

from __future__ import annotations

from bench import similar


def test_similar_benchmark_reports_the_first_call_and_the_request_latency() -> None:
    report = similar.run(similar.parse_args(["--items", "300", "--dim", "8",
                                             "--requests", "5", "--k", "4"]))
    names = [f.name for f in report.figures]
    assert len(names) == 2 and "first call" in names[0] and "per request" in names[1]
    assert "300 items x 8, k=4" in names[1] and "(5 requests)" in report.figures[1].measured
