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
        "--retrain-connections", "2", "--retrain-timeout", "60", "--retrains", "2",
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
