"""The challengers benchmark at a tiny size: it runs both workers over the same
periods and reports the swap delay, the boundary ratio and a score for every
strategy on every evaluated period (its timings are the benchmark's to judge)."""

from __future__ import annotations

from bench import challengers


def test_challengers_benchmark_scores_every_strategy_on_every_period() -> None:
    report = challengers.run(challengers.parse_args([
        "--dataset", "synthetic", "--period-size", "300", "--periods", "3",
        "--challengers", "fine_tune"]))
    names = [f.name for f in report.figures]
    assert "swap delayed by challengers" in names[0]
    assert names[2] == "strategies scored on each of the 2 evaluated periods"
    assert report.figures[2].ok and "fine_tune 2" in report.figures[2].measured
    assert "sml 2" in report.figures[2].measured
    assert len(report.notes[0].split(": ")[1].split(", ")) == 3  # a pair per boundary
