"""The serving benchmark end to end at a tiny size (no wrk needed), so it keeps
working: every phase runs and reports its figures."""

from __future__ import annotations

import json
from pathlib import Path

from bench import serving


def test_serving_benchmark_runs_at_a_tiny_size() -> None:
    args = serving.parse_args([
        "--users", "300", "--items", "500", "--dim", "8", "--seconds", "1",
        "--connections", "4", "--batch-users", "50", "--swaps", "3",
        "--retrain-connections", "2", "--retrain-timeout", "600", "--retrains", "2",
        "--retrain-window", "1", "--tool", "python",
    ])
    report = serving.run(args)
    names = [f.name for f in report.figures]
    assert any(n.startswith("recommendations / healthz") for n in names)
    assert any(n.startswith("batch endpoint") for n in names)
    swaps = next(f for f in report.figures if "hot swaps" in f.name)
    assert swaps.ok, swaps  # no failed request while swapping, even here
    assert "recommendations p99" in names
    markdown = report.markdown()
    assert "| figure | target | measured | met |" in markdown and "Machine:" in markdown
    [retrain] = [f for f in report.figures if "during a retrain" in f.name]
    assert retrain.measured.count("job succeeded") == 2, retrain  # a period logged between


def test_serving_benchmark_command_line(tmp_path: Path) -> None:
    out = tmp_path / "serving.json"
    assert serving.main(["--users", "50", "--items", "50", "--dim", "4", "--seconds", "1",
                         "--connections", "2", "--batch-users", "10", "--swaps", "0",
                         "--phases", "arithmetic,throughput,batch,swaps", "--tool", "python",
                         "--json", str(out)]) == 0
    assert {f["name"] for f in json.loads(out.read_text())} >= {"recommendations p99"}


def test_pooled_percentile_pools_requests_not_percentiles() -> None:
    from bench.harness import LoadResult, pooled_percentile

    def result(histogram: dict[int, int]) -> LoadResult:
        return LoadResult(requests=sum(histogram.values()), seconds=1.0, errors=0, p50_ms=0.0,
                          p99_ms=0.0, tool="test", histogram=histogram)

    quiet = result({1000: 990, 2000: 10})  # 1,000 requests, p99 1 ms
    stall = result({50_000: 10})  # 10 slow requests in another window
    assert pooled_percentile([quiet], 99) == 1.0
    assert pooled_percentile([quiet, stall], 99) == 2.0  # 1,010 requests: the 1,000th
    assert pooled_percentile([quiet, stall], 100) == 50.0
    assert pooled_percentile([], 99) != pooled_percentile([], 99)  # nan: nothing measured
