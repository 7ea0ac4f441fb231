"""The fold-in benchmark at a tiny size: it replays a log, scores first-seen users'
interactions by fold-in, popularity and the item biases, chooses the L2 weight on
the first periods and reports the later ones and the cost (its figures are the
benchmark's to judge)."""

from __future__ import annotations

from bench import fold_in


def test_fold_in_benchmark_reports_the_choice_the_comparison_and_the_cost() -> None:
    report = fold_in.run(fold_in.parse_args([
        "--dataset", "synthetic", "--period-size", "600", "--periods", "4",
        "--validation", "1", "--warmup", "1", "--l2", "0.1,1", "--items", "500",
        "--requests", "5"]))
    names = [f.name for f in report.figures]
    assert names[0].startswith("L2 weight chosen") and "-> " in report.figures[0].measured
    assert "after their first 1, periods 2-3 (" in names[1] and "(0 interactions" not in names[1]
    measured = report.figures[1].measured
    assert "fold-in " in measured and "popularity " in measured and "item biases" in measured
    assert "500 x 64" in names[2] and "5 requests" in names[2]
